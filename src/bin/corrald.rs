//! corrald: args -> Config -> daemon::run().

use anyhow::Context;
use clap::Parser;
use corral::config::{Args, Config, Mode};
use tokio_util::sync::CancellationToken;

/// Whether stderr is the journal stream systemd connected, by the
/// `JOURNAL_STREAM` check of systemd.exec(5): the variable is inherited,
/// so only a device:inode match says fd 2 is still that stream (and not
/// redirected to a file by whoever started corrald from a service).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let stat = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| std::fs::File::from(fd).metadata());
    match stat {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd, log to the journal with fields: an event's `id`
    // becomes CORRAL_ID, the field the shim's forwarded output lines carry
    // too, so `journalctl CORRAL_ID=7` shows both. Where no journal runs
    // (test harness, a terminal) or its socket is missing, stderr.
    if stderr_is_journal() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer.with_field_prefix(Some("CORRAL".into()));
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
    one_malloc_arena();
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

/// One malloc arena instead of glibc's one per thread (up to 8 per core):
/// the blocking pool's threads read cgroups and run SQLite in turn, never
/// at once enough to contend, and each arena kept its freed pages — 2 MB
/// of RSS at 1,000 processes (`corral-bench` footprint, issue 11 item 9).
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
