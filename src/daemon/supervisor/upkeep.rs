//! Upkeep: rewriting the store from memory after writes failed (disk
//! full), and retention of ended processes and old events.

use std::collections::HashSet;

use super::Supervisor;

impl Supervisor {
    /// Rewrites every process's state after writes failed; when that
    /// succeeds the store is healthy again and exit records whose runs are
    /// settled can go.
    pub(super) async fn resync(&mut self) {
        let snapshot: Vec<_> = self
            .procs
            .values()
            .map(|p| (p.state(), p.restarts, p.run.clone()))
            .collect();
        let now = self.now_us();
        if self
            .store
            .call(move |db| db.resync(&snapshot, now))
            .await
            .is_ok()
        {
            tracing::info!("storage writes resumed");
            self.store.mark_healthy();
            let settled: HashSet<_> = self
                .procs
                .values()
                .filter(|p| !p.state().is_active())
                .map(|p| p.run.id)
                .collect();
            for run in self.host.launcher.pending_exits().await {
                if settled.contains(&run) {
                    self.host.launcher.remove_exit(run).await;
                }
            }
        }
    }

    pub(super) async fn prune(&mut self) {
        let now = self.now_us();
        let keep = u64::try_from(self.cfg.retention.as_micros()).unwrap_or(u64::MAX);
        let cutoff = now.saturating_sub(keep);
        let max = self.cfg.max_events;
        match self.store.call(move |db| db.prune(cutoff, max, now)).await {
            Ok(ids) => {
                for id in ids {
                    self.forget(id);
                }
            }
            Err(e) => tracing::error!("retention: {e}"),
        }
        self.prune_history().await;
    }
}
