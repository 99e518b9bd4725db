//! corrald: args -> Config -> daemon::run().

use anyhow::Context;
use clap::Parser;
use corral::config::{Args, Config, Mode};
use tokio_util::sync::CancellationToken;

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd, stderr is the journal: log there with fields. Where no
    // journal runs (test harness, a terminal), fall back to stderr.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(layer) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .init();
            return;
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging();
    let mode = if args.system {
        Mode::System
    } else {
        Mode::User
    };
    let (path, required) = match args.config {
        Some(p) => (p, true),
        None => (Config::default_path(mode)?, false),
    };
    let mut config = Config::load(mode, &path, required)?;
    if let Some(d) = args.state_dir {
        anyhow::ensure!(d.is_absolute(), "--state-dir must be an absolute path");
        config.state_dir = d;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("cannot watch SIGTERM: {e}");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            c.cancel();
        });
        corral::daemon::run(config, cancel).await
    })
    .map_err(|e| anyhow::anyhow!(e))
}
