//! Section "scale": how corrald's costs grow with the number of processes
//! it supervises (issue 14 item 5's curve). One agent (1 s sampling, the
//! most expensive setting) is filled step by step to each count; at each
//! step it is left to settle, then measured: its RSS and CPU over a
//! window, `List` of everything back-to-back (reply undecoded), and the
//! reply time of single `Start` calls (those processes stay and count
//! towards the next step) beside the floor at that size — systemd's own
//! scope start for a live PID, in the same slice — so that the growth of
//! a Start is split into systemd's and corrald's. A note gives the cost
//! per added process between steps, which is what "linear or better" is
//! read from.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use corral::daemon::systemd::{slice_name, ScopeProps, Systemd};

use super::agent::Agent;
use super::{
    error_name, floor_sample, list_raw_reply, measure_window, ms, remove_all, spec, start_many,
    tail, Bench, Client,
};

/// What one step measured (medians).
struct Step {
    n: usize,
    rss_mb: f64,
    cpu_s_per_min: f64,
    list_ms: f64,
    start_ms: f64,
    floor_ms: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n => v[n / 2],
    }
}

impl Bench {
    pub(super) async fn scale(&mut self) -> Result<()> {
        let counts = self.plan.scale_counts.clone();
        let big = counts.last().copied().unwrap_or(0);
        let mut config = self.agent_config.clone();
        if !config.contains("max_processes_per_owner") {
            // The default (1,000 per owner) would stop the curve there.
            config.push_str(&format!(
                "\nmax_processes_per_owner = {}\n",
                big + 2 * self.plan.scale_samples + 100
            ));
        }
        let agent = Agent::start(&self.bins, &self.ctl.conn, 1, &config).await?;
        let r = self.scale_steps(&agent, &counts).await;
        let cleaned = remove_all(&self.ctl).await;
        if r.is_err() {
            eprintln!("corrald log tail:\n{}", tail(&agent.log(), 30));
        }
        agent.stop(&self.ctl.conn).await?;
        self.sigs.take();
        let steps = r?;
        // The curve was measured whole; a failed clean-up is told beside it.
        self.scale_note(&steps);
        match cleaned {
            Ok((n, took)) => self.rep.notes.push(format!(
                "scale: RemoveMatching of {n} processes took {:.1} s",
                took.as_secs_f64()
            )),
            Err(e) => self
                .rep
                .notes
                .push(format!("scale: removing the processes failed: {e:#}")),
        }
        Ok(())
    }

    async fn scale_steps(&mut self, agent: &Agent, counts: &[usize]) -> Result<Vec<Step>> {
        let sec = "9 scale";
        let mut clients = vec![];
        for _ in 0..self.plan.storm_clients {
            clients.push(Client::new().await?);
        }
        let samples = self.plan.scale_samples;
        // A connection of its own: one subscribes to the manager's
        // signals once, and section `start` has subscribed `ctl`'s.
        let own = Client::new().await?;
        let (gone, _gone_rx) = tokio::sync::mpsc::unbounded_channel();
        let sd = Systemd::connect(&own.conn, gone)
            .await
            .context("connecting to the user manager")?;
        let mut have = 0;
        let mut steps = vec![];
        for &n in counts {
            if n > have {
                eprintln!("9 scale: starting {} processes (to {n})", n - have);
                let (ok, errs, _) =
                    start_many(&clients, n - have, self.plan.fill_concurrency, None).await;
                have += ok;
                if !errs.is_empty() {
                    self.rep.notes.push(format!(
                        "scale: filling to {n}: {} Start calls failed: {:?}",
                        errs.len(),
                        &errs[..errs.len().min(3)]
                    ));
                }
            }
            tokio::time::sleep(Duration::from_secs(self.plan.settle_s)).await;
            eprintln!("9 scale: {have} processes: measuring");
            let w = measure_window(agent.pid, Duration::from_secs(self.plan.scale_window_s)).await;
            let list = self.list_times(samples).await?;
            let start = self.start_times(samples).await?;
            have += start.len();
            let floor = self.floor_times(&sd, samples, n).await?;
            let step = Step {
                n,
                rss_mb: median(&w.rss_mb),
                cpu_s_per_min: w.cpu_s_per_min,
                list_ms: median(&list),
                start_ms: median(&start),
                floor_ms: median(&floor),
            };
            let r = &mut self.rep;
            r.add(
                sec,
                &format!("scale.rss.n{n}"),
                &format!("corrald RSS at {n} processes (1 s sampling)"),
                "MB",
                w.rss_mb,
            );
            r.add(
                sec,
                &format!("scale.cpu.n{n}"),
                &format!("corrald CPU at {n} processes (1 s sampling)"),
                "s/min",
                vec![w.cpu_s_per_min],
            );
            r.note_on(
                &format!("scale.cpu.n{n}"),
                &format!(
                    "{:.0} s window, machine {:.0}% busy",
                    w.secs, w.machine_busy
                ),
            );
            r.add(
                sec,
                &format!("scale.list.n{n}"),
                &format!("List of {n}, back-to-back, reply undecoded"),
                "ms",
                list,
            );
            r.add(
                sec,
                &format!("scale.start.n{n}"),
                &format!("Start call → reply with {n} running"),
                "ms",
                start,
            );
            r.add(
                sec,
                &format!("scale.floor.n{n}"),
                &format!("floor (StartTransientUnit of a live PID → job done) with {n} running"),
                "ms",
                floor,
            );
            steps.push(step);
        }
        Ok(steps)
    }

    /// systemd's part of a Start at this size: a scope around a live PID
    /// in the processes' own slice (a new unit's cost grows with its
    /// siblings), until its job is done; each is stopped before the next.
    async fn floor_times(&mut self, sd: &Systemd, samples: usize, n: usize) -> Result<Vec<f64>> {
        let props = ScopeProps {
            description: "corral-bench floor".into(),
            slice: slice_name(super::WORKSPACE),
            stop_timeout: Duration::from_secs(3),
            ..Default::default()
        };
        let mut out = Vec::with_capacity(samples);
        for i in 0..samples {
            let unit = format!("corral-bench-floor-{n}-{i}.scope");
            match floor_sample(sd, &unit, &props).await? {
                Ok(dt) => out.push(dt),
                Err(e) => self
                    .rep
                    .notes
                    .push(format!("scale: a floor start failed: {e}")),
            }
        }
        Ok(out)
    }

    async fn list_times(&mut self, samples: usize) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            list_raw_reply(&self.ctl.conn).await?;
            out.push(ms(t.elapsed()));
        }
        Ok(out)
    }

    /// One Start at a time, each of a process that keeps running.
    async fn start_times(&mut self, samples: usize) -> Result<Vec<f64>> {
        let d = spec(vec!["sleep".into(), "3600".into()]).to_dict();
        let mut out = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = Instant::now();
            match self.ctl.mgr.start(d.clone()).await {
                Ok(_) => out.push(ms(t.elapsed())),
                Err(e) => {
                    self.rep
                        .notes
                        .push(format!("scale: a timed Start failed: {}", error_name(&e)));
                }
            }
        }
        Ok(out)
    }

    /// The curve in one note: each step's medians and, between steps, the
    /// cost of each added process.
    fn scale_note(&mut self, steps: &[Step]) {
        let mut lines =
            vec!["scale curve (medians; Δ = per added process since the step before):".to_string()];
        let mut prev: Option<&Step> = None;
        for s in steps {
            let mut line = format!(
                "  {:>5} processes: RSS {:.1} MB, CPU {:.3} s/min, List {:.1} ms, Start {:.1} ms (floor {:.1} ms)",
                s.n, s.rss_mb, s.cpu_s_per_min, s.list_ms, s.start_ms, s.floor_ms
            );
            if let Some(p) = prev.filter(|p| s.n > p.n) {
                let k = (s.n - p.n) as f64;
                line.push_str(&format!(
                    " — Δ RSS {:.2} KB, Δ CPU {:.2} ms/min, Δ List {:.1} µs",
                    (s.rss_mb - p.rss_mb) * 1e3 / k,
                    (s.cpu_s_per_min - p.cpu_s_per_min) * 1e3 / k,
                    (s.list_ms - p.list_ms) * 1e3 / k,
                ));
            }
            lines.push(line);
            prev = Some(s);
        }
        self.rep.notes.push(lines.join("\n"));
    }
}
