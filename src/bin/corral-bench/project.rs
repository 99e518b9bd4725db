//! Section "project": `up` of a project file whose 20 processes all run
//! unchanged (issue 12 item 8) — the answer a developer waits for when
//! they run `corralctl up` out of habit. Two figures: the `Up` call alone
//! (reply built by the agent: the file read and checked, every instance
//! looked up and found unchanged) and `corralctl up -f FILE` as a user
//! runs it (process start, the file checked client-side too, the call,
//! the output). Each sample must change nothing; one that does is noted.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use zbus::zvariant::Value;

use super::{error_name, errors_note, ms, Bench};

/// Processes in the project.
const PROCESSES: usize = 20;

impl Bench {
    pub(super) async fn project_up(&mut self) -> Result<()> {
        let n = self.plan.latency_n;
        let warm = self.plan.warmup;
        eprintln!("6 project: {n} samples of `up` of an unchanged {PROCESSES}-process project");
        let dir = self.work.join("project");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("corral.toml");
        let mut text = String::from("workspace = \"bench-project\"\n");
        for i in 0..PROCESSES {
            // A chain of dependencies, so the order is worked out too.
            let dep = match i {
                0 => String::new(),
                _ => format!("depends_on = [\"p{}\"]\n", i - 1),
            };
            text.push_str(&format!(
                "[processes.p{i}]\ncommand = [\"sleep\", \"3600\"]\n{dep}"
            ));
        }
        std::fs::write(&file, text)?;
        let path = file.display().to_string();
        let env = || {
            let path = std::env::var("PATH").unwrap_or_default();
            HashMap::from([(
                "Environment".to_string(),
                Value::from(vec![format!("PATH={path}")]),
            )])
        };
        let first = self.ctl.mgr.up(&path, &[], env()).await?;
        if first.iter().any(|(_, action, _)| action != "started") {
            bail!("the first up did not start everything: {first:?}");
        }
        let mut dbus = vec![];
        let mut cli = vec![];
        let mut errors = vec![];
        for i in 0..warm + n {
            let t = Instant::now();
            let r = self.ctl.mgr.up(&path, &[], env()).await;
            let took = t.elapsed();
            match r {
                Ok(steps) if steps.iter().all(|(_, a, _)| a == "unchanged") => {
                    if i >= warm {
                        dbus.push(ms(took));
                    }
                }
                Ok(steps) => errors.push(format!("changed something: {steps:?}")),
                Err(e) => errors.push(error_name(&e)),
            }
            let t = Instant::now();
            let out = tokio::process::Command::new(&self.bins.corralctl)
                .args(["up", "-f", &path])
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .context("running corralctl up")?;
            let took = t.elapsed();
            let unchanged = String::from_utf8_lossy(&out.stdout)
                .lines()
                .all(|l| l.split_whitespace().nth(1) == Some("unchanged"));
            if out.status.success() && unchanged {
                if i >= warm {
                    cli.push(ms(took));
                }
            } else {
                errors.push(format!(
                    "corralctl up: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        self.rep.add_latency(
            "6 project",
            "project.up_noop",
            "Up of an unchanged 20-process project → reply",
            dbus,
        );
        self.rep.add_latency(
            "6 project",
            "project.up_noop_cli",
            "`corralctl up` of an unchanged 20-process project (wall)",
            cli,
        );
        if !errors.is_empty() {
            self.rep.note_on("project.up_noop", &errors_note(&errors));
        }
        self.end_section().await?;
        Ok(())
    }
}
