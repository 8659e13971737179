//! The `bouncewatch` command line: parses arguments and wires the parts together, nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use bouncewatch::alerts::run::{AlertLoop, Parts};
use bouncewatch::config::Config;
use bouncewatch::http::{self, AppState};
use bouncewatch::journal::Journal;
use bouncewatch::metrics::Metrics;
use bouncewatch::notify::email::EmailSender;
use bouncewatch::notify::outbox::Outbox;
use bouncewatch::notify::slack::SlackSender;
use bouncewatch::notify::{Channels, Notifier};
use bouncewatch::pipeline::Pipeline;

#[derive(Parser)]
#[command(
    name = "bouncewatch",
    version,
    about = "Mailjet event webhook receiver, journal and alerting"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the receiver (the default when no command is given).
    Serve(ServeArgs),
    /// Validate a config file and print the effective settings, secrets masked.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Replay recorded events through the alert rules in event time; prints one JSON line per
    /// incident to stdout and a summary to stderr.
    Backtest(BacktestArgs),
    /// Mailjet's side: register the event callbacks, or report them.
    Mailjet {
        #[command(subcommand)]
        command: MailjetCommand,
    },
    /// Send a test notification through one channel and report exactly what failed.
    NotifyTest {
        #[arg(long)]
        config: Option<PathBuf>,
        /// `slack`, `email` or `log`.
        #[arg(long)]
        channel: String,
    },
}

#[derive(Subcommand)]
enum MailjetCommand {
    /// Register one callback per event type (idempotent): creates what is missing, updates
    /// what differs, never duplicates. Credentials: MAILJET_API_KEY, MAILJET_API_SECRET.
    Setup {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The webhook URL Mailjet should call; the webhook credentials are added to it.
        #[arg(long)]
        url: String,
        /// Event types, comma-separated (default: `mailjet.events`, all seven unless set).
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        /// A backup URL (Mailjet's IsBackup rows).
        #[arg(long)]
        backup_url: Option<String>,
        /// 1: one event per request; 2: grouped arrays.
        #[arg(long, default_value_t = 2)]
        version: i64,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Then post a test event to the URL and check that the receiver stored it.
        #[arg(long)]
        check: bool,
    },
    /// Print every callback (password masked) and exit non-zero if one is dead or missing.
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["journal", "events"])))]
struct BacktestArgs {
    /// TOML config file (its [alerts], [windows] and [providers]); without it the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A journal directory (server.data_dir) to read every event from.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// A file of Mailjet events, one JSON object per line.
    #[arg(long)]
    events: Option<PathBuf>,
    /// How long the clock runs on after the last event, so firing alerts can resolve.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    tail: std::time::Duration,
}

#[derive(Args, Default)]
struct ServeArgs {
    /// TOML config file; without it the embedded defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Directory of the journal (overrides server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    // Every TLS client and server in the process uses this one provider (see ARCHITECTURE.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { config } => check_config(config),
        Command::Backtest(args) => backtest(args),
        Command::Mailjet { command } => mailjet(command),
        Command::NotifyTest { config, channel } => notify_test(config, &channel),
    }
}

fn environment() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<()> {
    let loaded = Config::load(path.as_deref(), &environment())?;
    loaded.config.validate()?;
    let listen = loaded.config.server.listen_addr()?;
    loaded.config.webhook.check_exposure(listen)?;
    for var in &loaded.unknown_env {
        eprintln!("warning: environment variable {var} matches no config key and is ignored");
    }
    print!("{}", loaded.config.to_masked_toml());
    Ok(())
}

fn backtest(args: BacktestArgs) -> anyhow::Result<()> {
    use bouncewatch::alerts::backtest;
    use std::io::Write;
    let config = Config::load(args.config.as_deref(), &environment())?.config;
    let events = match (&args.journal, &args.events) {
        (Some(dir), _) => backtest::events_from_journal(dir)?,
        (None, Some(file)) => backtest::events_from_jsonl(file)?,
        (None, None) => anyhow::bail!("give --journal DIR or --events FILE.jsonl"),
    };
    let opts = backtest::Options { tail: args.tail };
    let replay = backtest::replay(&config, events, &opts).with_context(|| match &args.config {
        Some(path) => format!("backtest with config {}", path.display()),
        None => "backtest with the default config".to_string(),
    })?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for incident in &replay.incidents {
        serde_json::to_writer(&mut out, incident)?;
        out.write_all(b"\n")?;
    }
    out.flush().context("cannot write the timeline to stdout")?;
    eprintln!("{}", replay.summary);
    Ok(())
}

/// A config for the one-shot commands: the file or the defaults, validated.
fn command_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let config = Config::load(path, &environment())?.config;
    config.validate()?;
    Ok(config)
}

fn one_shot_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn mailjet(command: MailjetCommand) -> anyhow::Result<()> {
    use bouncewatch::mailjet::commands;
    let mut out = std::io::stdout().lock();
    let code = match command {
        MailjetCommand::Setup {
            config,
            url,
            events,
            backup_url,
            version,
            dry_run,
            check,
        } => {
            let config = command_config(config.as_deref())?;
            let opts = commands::SetupOptions {
                url,
                events: events.unwrap_or_else(|| config.mailjet.events.clone()),
                backup_url,
                version,
                dry_run,
                check,
            };
            one_shot_runtime()?.block_on(commands::setup(&config, opts, &mut out))?
        }
        MailjetCommand::Status { config } => {
            let config = command_config(config.as_deref())?;
            one_shot_runtime()?.block_on(commands::status(&config, &mut out))?
        }
    };
    use std::io::Write;
    out.flush()?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

fn notify_test(path: Option<PathBuf>, channel: &str) -> anyhow::Result<()> {
    let config = command_config(path.as_deref())?;
    bouncewatch::logging::init(&config.log);
    let channels = channels(&config)?;
    let code = one_shot_runtime()?.block_on(bouncewatch::notify::test_message(&channels, channel));
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// The notification channels the config sets up.
fn channels(config: &Config) -> anyhow::Result<Channels> {
    Ok(Channels {
        email: if config.email.enabled() {
            Some(EmailSender::new(&config.email, &config.alerts.grafana_url)?)
        } else {
            None
        },
        slack: if config.slack.enabled() {
            Some(SlackSender::new(&config.slack, &config.alerts.grafana_url)?)
        } else {
            None
        },
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let loaded = Config::load(args.config.as_deref(), &environment())?;
    let mut config = loaded.config;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.server.data_dir = dir;
    }
    config.validate()?;
    let listen = config.server.listen_addr()?;
    config.webhook.check_exposure(listen)?;

    bouncewatch::logging::init(&config.log);
    for var in &loaded.unknown_env {
        tracing::warn!(%var, "environment variable matches no config key and is ignored");
    }
    if !config.webhook.has_credentials() && !listen.ip().to_canonical().is_loopback() {
        tracing::warn!(%listen, "the webhook accepts unauthenticated requests on a non-loopback address (webhook.allow_unauthenticated = true)");
    }
    tracing::debug!(config = %config.to_masked_toml(), "effective configuration");
    http::ensure_open_files(config.server.max_connections);

    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create server.data_dir {}", data_dir.display()))?;
    // Held until `serve` returns, after the last commit and the pipeline's last step.
    let _lock = bouncewatch::journal::DirLock::acquire(data_dir)?;
    // Before the runtime: the OTLP exporter's blocking HTTP client must not live inside it.
    let metrics = Arc::new(Metrics::new(&config.metrics, data_dir)?);
    tracing::info!(
        otlp = metrics.pushing(),
        instance = %metrics.instance_id(),
        "metrics ready"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run(config, listen, metrics.clone()));
    drop(runtime);
    // A last push, so the final counts reach the store.
    metrics.shutdown();
    result
}

async fn run(
    config: Config,
    listen: std::net::SocketAddr,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let data_dir = &config.server.data_dir;
    let journal = Journal::open(data_dir, &config.journal, metrics.clone())?;
    let pipeline = Pipeline::start(
        data_dir,
        &config.windows,
        &config.providers,
        metrics.clone(),
        Some(&journal),
    )?;

    // Alerts: the evaluation thread writes the outbox, the notifier task delivers it.
    let wake = Arc::new(tokio::sync::Notify::new());
    let channels = Arc::new(channels(&config)?);
    let open_outbox = || {
        Outbox::open(data_dir)
            .with_context(|| format!("cannot open {}", data_dir.join("alerts.sqlite3").display()))
    };
    // The Mailjet watch, when API credentials are configured.
    let (stop_watch, watch_stopped) = tokio::sync::oneshot::channel::<()>();
    let mailjet = match config.mailjet.client() {
        Some(client) => {
            let client = client.context("cannot set up the Mailjet API client")?;
            let shared = bouncewatch::mailjet::watch::Shared::default();
            metrics.attach_mailjet(shared.clone());
            tokio::spawn(bouncewatch::mailjet::watch::run(
                client,
                config.mailjet.clone(),
                shared.clone(),
                async {
                    let _ = watch_stopped.await;
                },
            ));
            tracing::info!(every = %config.mailjet.poll_interval, "watching Mailjet's callbacks");
            Some(shared)
        }
        None => None,
    };
    let alert_loop = AlertLoop::start(Parts {
        engine: config.alerts.engine()?,
        outbox: open_outbox()?,
        channels: channels.clone(),
        windows: pipeline.shared(),
        metrics: metrics.clone(),
        wake: wake.clone(),
        interval: config.alerts.interval.0,
        mailjet,
    })
    .context("cannot start the alerts thread")?;
    tracing::info!(channels = ?channels.names(), "alerting");
    let (stop_notifier, notifier_stopped) = tokio::sync::oneshot::channel::<()>();
    let notifier = tokio::spawn(
        Notifier::new(open_outbox()?, channels, wake, metrics.clone()).run(async {
            let _ = notifier_stopped.await;
        }),
    );

    let state = Arc::new(AppState {
        journal: journal.clone(),
        metrics: metrics.clone(),
        server: config.server.clone(),
        webhook: http::WebhookAuth::new(&config.webhook),
        api: http::ApiAuth::new(&config.api),
        quarantine_max_body: config.journal.quarantine_max_body.0 as usize,
        pipeline: http::PipelineView {
            shared: pipeline.shared(),
            waker: pipeline
                .waker()
                .context("the pipeline thread is not running")?,
        },
        default_window_minutes: config
            .windows
            .windows
            .first()
            .map(|w| (w.0.as_secs() / 60) as u32)
            .unwrap_or(5),
        longest_window_minutes: config.windows.longest_minutes(),
        alert_rules: config
            .alerts
            .compile()?
            .iter()
            .map(|r| r.name().to_string())
            .collect(),
    });
    let app = http::router(state);

    let tls = if config.tls.enabled() {
        Some(http::load_tls(&config.tls).await?)
    } else {
        None
    };
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on server.listen {listen}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, tls = tls.is_some(), data_dir = %data_dir.display(), "listening");

    let served = http::serve(
        listener,
        app,
        tls,
        bouncewatch::shutdown::signal(),
        &config.server.limits(),
        metrics.clone(),
    )
    .await;
    // The journal first (it answers the last requests), then the pipeline, which counts what
    // the journal holds and saves its snapshot.
    let _ = stop_watch.send(());
    let _ = stop_notifier.send(());
    let _ = notifier.await;
    tokio::task::spawn_blocking(move || {
        alert_loop.stop();
        journal.close();
        pipeline.stop();
    })
    .await?;
    served.context("the HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}
