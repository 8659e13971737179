//! The live evaluation loop: a thread that, every `alerts.interval`, reads the windows and the
//! receiver's health, runs the engine, and commits the new alert state together with the
//! notifications it produced to the outbox. Then it wakes the notifier.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Engine, Notification};
use crate::metrics::Metrics;
use crate::notify::Channels;
use crate::notify::outbox::Outbox;
use crate::pipeline::Shared;
use crate::windows::Key;

pub struct AlertLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub struct Parts {
    pub engine: Engine,
    pub outbox: Outbox,
    /// Which channels each rule's notifications go to.
    pub channels: Arc<Channels>,
    pub windows: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
    pub interval: Duration,
    /// What the Mailjet watch last found, when it runs.
    pub mailjet: Option<crate::mailjet::watch::Shared>,
}

impl AlertLoop {
    /// Restores the stored alerts and starts evaluating.
    pub fn start(mut parts: Parts) -> std::io::Result<AlertLoop> {
        match parts.outbox.load_alerts() {
            Ok(alerts) => {
                tracing::info!(alerts = alerts.len(), "alert state restored");
                parts.engine.restore(alerts);
            }
            Err(e) => tracing::error!(error = %e, "cannot read the stored alert state"),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("alerts".into())
            .spawn(move || run(parts, flag))?;
        Ok(AlertLoop {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            if t.join().is_err() {
                tracing::error!("the alerts thread panicked");
            }
        }
    }
}

fn run(mut p: Parts, stop: Arc<AtomicBool>) {
    // Notifications whose commit failed (disk trouble): kept and committed with the next
    // evaluation's, so a failing disk delays them but does not lose them.
    let mut unsaved = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let now_ms = crate::journal::now_ms();
        let now = now_ms / 1000;
        let mut sample = p.metrics.health_sample(now);
        if let Some(m) = &p.mailjet {
            sample.callbacks = m.lock().unwrap_or_else(|e| e.into_inner()).callbacks();
        }
        let notifications = {
            let windows = p.windows.windows.lock().unwrap_or_else(|e| e.into_inner());
            sample.events_24h = windows.counts(&Key::Global, 24 * 60, now).total();
            p.engine.evaluate(now, &windows, sample)
        };
        p.metrics.alerts_firing(
            p.engine
                .firing_counts()
                .into_iter()
                .map(|(rule, severity, n)| (rule, severity.as_str(), n))
                .collect(),
        );
        let notifications = apply_silences(&p, notifications, now_ms);
        let mut rows: Vec<_> = std::mem::take(&mut unsaved);
        rows.extend(notifications.into_iter().flat_map(|n| {
            p.channels
                .targets(&n.channels)
                .into_iter()
                .map(move |c| (c, n.clone()))
        }));
        for (channel, n) in &rows {
            tracing::info!(rule = %n.rule, notice = ?n.notice, channel = %channel, alerts = n.alerts.len() + n.more, "alert notification queued");
        }
        match p.outbox.commit(&p.engine.alerts(), &rows, now_ms) {
            Ok(()) if !rows.is_empty() => p.wake.notify_one(),
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot store alert state and notifications; will retry");
                unsaved = rows;
            }
        }
        std::thread::park_timeout(p.interval);
    }
}

/// Drops the alerts a silence covers from each notification, and notifications left empty;
/// counts what was suppressed.
fn apply_silences(p: &Parts, notifications: Vec<Notification>, now_ms: i64) -> Vec<Notification> {
    if notifications.is_empty() {
        return notifications;
    }
    let silences = match p.outbox.silences(now_ms) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the silences; notifying anyway");
            return notifications;
        }
    };
    if silences.is_empty() {
        return notifications;
    }
    let mut out = Vec::new();
    for mut n in notifications {
        let before = n.alerts.len();
        n.alerts.retain(|a| {
            !silences
                .iter()
                .any(|s| s.matches(&n.rule, a.observation.key.as_ref()))
        });
        let suppressed = before - n.alerts.len();
        if suppressed > 0 {
            let channels = p.channels.targets(&n.channels).len().max(1);
            p.metrics.silenced(suppressed * channels);
            tracing::info!(rule = %n.rule, suppressed, "alerts silenced");
        }
        if !n.alerts.is_empty() {
            out.push(n);
        }
    }
    out
}
