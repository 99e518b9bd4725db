//! Section "track": the cost of `Track` (issue 11) — a shell with 19
//! children, started by the bench outside corral, taken over whole; the
//! figure is the time from the call to its reply, which comes once every
//! process of the tree is in the new scope and the record is committed.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use zbus::zvariant::Value;

use super::{error_name, errors_note, ms, Bench, WORKSPACE};

/// Processes in each tracked tree.
pub const TREE: usize = 20;

/// Samples at most: each one is a tree of [`TREE`] processes.
const MAX_SAMPLES: usize = 50;

impl Bench {
    pub(super) async fn track_latency(&mut self) -> Result<()> {
        let n = self.plan.latency_n.min(MAX_SAMPLES);
        let warm = self.plan.warmup;
        eprintln!("track: {n} samples of Track on a {TREE}-process tree");
        let mut times = vec![];
        let mut errors = vec![];
        let script = format!("for i in $(seq {}); do sleep 1000 & done; wait", TREE - 1);
        for i in 0..warm + n {
            let mut child = tokio::process::Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("spawning the tree")?;
            let pid = child.id().context("the tree's pid")?;
            let whole = Instant::now();
            while corral::daemon::track::tree(pid).len() < TREE {
                if whole.elapsed() > Duration::from_secs(10) {
                    anyhow::bail!("the tree of {pid} did not reach {TREE} processes");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let options = HashMap::from([("Workspace".to_string(), Value::from(WORKSPACE))]);
            let t = Instant::now();
            let r = self.ctl.mgr.track(pid, options).await;
            let took = t.elapsed();
            match r {
                Ok(_) if i >= warm => times.push(ms(took)),
                Ok(_) => {}
                Err(e) => errors.push(error_name(&e)),
            }
            // Removing stops the scope, ending the whole tree.
            super::remove_all(&self.ctl).await?;
            let _ = child.kill().await;
        }
        self.rep.add_latency(
            "5 track",
            "track.tree20",
            "Track of a 20-process tree → reply (all moved, recorded)",
            times,
        );
        if !errors.is_empty() {
            self.rep.note_on("track.tree20", &errors_note(&errors));
        }
        self.end_section().await?;
        Ok(())
    }
}
