//! The live evaluation loop: a thread that, every `alerts.interval`, reads the windows and the
//! receiver's health, runs the engine, and commits the new alert state together with the
//! notifications it produced to the outbox. Then it wakes the notifier.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::Engine;
use super::health::KEEP_SECS;
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
        match parts.outbox.load_health() {
            Ok(samples) => parts.engine.restore_health(samples),
            Err(e) => tracing::error!(error = %e, "cannot read the stored health samples"),
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
        let silences = match p.outbox.silences(now_ms) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the silences; notifying anyway");
                Vec::new()
            }
        };
        let silenced =
            |rule: &str, key: Option<&Key>| silences.iter().any(|s| s.matches(rule, key));
        let (notifications, held_back) = {
            let windows = p.windows.windows.lock().unwrap_or_else(|e| e.into_inner());
            sample.events_24h = windows.counts(&Key::Global, 24 * 60, now).total();
            p.engine.evaluate_silenced(now, &windows, sample, &silenced)
        };
        if !held_back.is_empty() {
            tracing::info!(alerts = held_back.len(), "alert notices silenced");
            // One per alert and channel, as the metric's help says.
            p.metrics.silenced(
                held_back
                    .iter()
                    .map(|channels| p.channels.targets(channels).len().max(1))
                    .sum(),
            );
        }
        p.metrics.alerts_firing(
            p.engine
                .firing_counts()
                .into_iter()
                .map(|(rule, severity, n)| (rule, severity.as_str(), n))
                .collect(),
        );
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
        let health = p.engine.latest_health().map(|s| (s, KEEP_SECS));
        match p.outbox.commit(&p.engine.alerts(), health, &rows, now_ms) {
            Ok(()) if !rows.is_empty() => p.wake.notify_one(),
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot store alert state and notifications; will retry");
                unsaved = rows;
            }
        }
        std::thread::park_timeout(p.interval);
    }
    // What happened since the last evaluation (a body quarantined a moment before the stop) is
    // judged by the next run, from this sample.
    let last = p.metrics.health_sample(crate::journal::now_ms() / 1000);
    if let Err(e) = p.outbox.save_health(&last, KEEP_SECS) {
        tracing::error!(error = %e, "cannot store the last health sample");
    }
}
