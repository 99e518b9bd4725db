//! corrald as a systemd service (sd_notify(3)): `READY=1` once it serves
//! on the bus, a `STATUS=` line kept current from the supervisor's events,
//! and `WATCHDOG=1` pings when the unit has a watchdog. Each message is a
//! no-op when corrald does not run under systemd (`NOTIFY_SOCKET` unset).
//! It reads events and asks the supervisor one cheap question; it decides
//! nothing about processes.

use std::collections::HashMap;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::State;
use crate::daemon::supervisor::{self, Access, Event, Handle};

/// Tells the manager that start-up is done: the store is reconciled and
/// the bus name is owned, so clients and D-Bus activation can proceed.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("notifying the service manager: {e}");
    }
}

/// The state of every process the agent knows, for the status line.
#[derive(Debug, Default)]
struct Tally {
    states: HashMap<String, State>,
}

impl Tally {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::Added(view) | Event::Changed { view, .. } => {
                self.states.insert(view.id.clone(), view.state);
            }
            Event::Removed(id) => {
                self.states.remove(id);
            }
            Event::HealthChanged { .. } => {}
        }
    }

    /// `supervising 12 processes (3 failed)`: the processes with a live
    /// scope, and those whose last run failed (omitted when none).
    fn status(&self) -> String {
        let active = self.states.values().filter(|s| s.is_active()).count();
        let failed = self
            .states
            .values()
            .filter(|s| **s == State::Failed)
            .count();
        let noun = if active == 1 { "process" } else { "processes" };
        let mut text = format!("supervising {active} {noun}");
        if failed > 0 {
            text.push_str(&format!(" ({failed} failed)"));
        }
        text
    }
}

/// Keeps `STATUS=` current: sends it at start and whenever it changes.
pub async fn report_status(handle: Handle, mut events: UnboundedReceiver<Event>) {
    let mut tally = Tally::default();
    let views = handle
        .ask(|reply| supervisor::Command::List {
            filter: Default::default(),
            access: Access::All,
            reply,
        })
        .await
        .unwrap_or_default();
    for view in views {
        tally.apply(&Event::Added(view));
    }
    // Events queued before the snapshot are older than it; applying them
    // over it still ends right, because each carries a whole state and
    // they come in order, so the last one about a process wins.
    let mut sent = tally.status();
    send(&[NotifyState::Status(&sent)]);
    while let Some(event) = events.recv().await {
        tally.apply(&event);
        let now = tally.status();
        if now != sent {
            send(&[NotifyState::Status(&now)]);
            sent = now;
        }
    }
}

/// Pings the watchdog at half its interval, but only while the supervisor
/// answers: a wedged actor stops the pings, and systemd restarts corrald
/// (the processes keep running in their scopes and are re-adopted). Does
/// nothing when the unit has no `WatchdogSec=`.
pub async fn watchdog(handle: Handle) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let half = interval / 2;
    tracing::info!("watchdog: pinging every {half:?} while the supervisor answers");
    let mut tick = tokio::time::interval(half);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if answers(&handle, half).await {
            send(&[NotifyState::Watchdog]);
        } else {
            tracing::warn!("watchdog: the supervisor did not answer within {half:?}; not pinging");
        }
    }
}

/// Whether the actor answers a lookup within `limit`. A lookup of an id
/// that cannot exist costs one map probe, whatever the number of
/// processes; the answer (not found) is beside the point.
async fn answers(handle: &Handle, limit: Duration) -> bool {
    let ask = handle.ask(|reply| supervisor::Command::Get {
        id: String::new(),
        access: Access::All,
        reply,
    });
    matches!(tokio::time::timeout(limit, ask).await, Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ProcessView;

    fn view(id: &str, state: State) -> ProcessView {
        let mut v = ProcessView::from_dict(Default::default());
        v.id = id.into();
        v.state = state;
        v
    }

    #[test]
    fn status_counts_live_and_failed_processes() {
        let mut t = Tally::default();
        assert_eq!(t.status(), "supervising 0 processes");
        t.apply(&Event::Added(view("1", State::Running)));
        assert_eq!(t.status(), "supervising 1 process");
        t.apply(&Event::Added(view("2", State::Starting)));
        t.apply(&Event::Added(view("3", State::Exited)));
        t.apply(&Event::Changed {
            view: view("2", State::Failed),
            old: State::Starting,
        });
        assert_eq!(t.status(), "supervising 1 process (1 failed)");
        t.apply(&Event::Removed("2".into()));
        assert_eq!(t.status(), "supervising 1 process");
    }
}
