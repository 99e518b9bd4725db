//! Ports: at each tick, the sockets running processes listen on, and for
//! processes not running who holds the ports they expect to use — read
//! off the actor by the host ([`crate::daemon::ports`]), applied here as
//! `ListenPorts` and `PortHolders`, announced when they change.

use std::time::Duration;

use tokio::time::Instant;

use super::{Fact, Msg, Supervisor};
use crate::api::{ListenPort, ProbeKind};
use crate::daemon::listeners::Proto;
use crate::daemon::ports::{Found, Scope, Wanted};
use crate::daemon::store::ProcessConfig;

/// How often the ports are refreshed at most, besides right after a
/// process started or ended: a socket dump with every listener of the
/// machine and a thousand records built each second would cost more than
/// the rest of a 1 s tick, for a table that seldom changes.
const PORTS_EVERY: Duration = Duration::from_secs(5);

impl Supervisor {
    /// At a tick: refreshes the ports when due.
    pub(super) fn ports_tick(&mut self) {
        let stale = self
            .ports_refreshed
            .is_none_or(|t| t.elapsed() >= PORTS_EVERY);
        if self.ports_due || stale {
            self.ports_due = false;
            self.ports_refreshed = Some(Instant::now());
            self.sample_ports();
        }
    }

    /// Starts a refresh; its findings come back as `Fact::PortsFound`.
    pub(super) fn sample_ports(&self) {
        let scopes: Vec<(Scope, String)> = self
            .procs
            .values()
            .filter(|p| p.state().is_active() && !p.run.control_group.is_empty())
            .map(|p| {
                let scope = Scope {
                    id: p.id,
                    run: p.run.id,
                    owner: p.owner,
                    name: p.name.clone(),
                    workspace: p.workspace.clone(),
                    pids: Vec::new(),
                };
                (scope, p.run.control_group.clone())
            })
            .collect();
        let wanted: Vec<Wanted> = self
            .procs
            .values()
            .filter(|p| !p.state().is_active())
            .map(|p| Wanted {
                id: p.id,
                owner: p.owner,
                ports: expected_ports(&p.config, &p.last_ports),
            })
            .filter(|w| !w.ports.is_empty())
            .collect();
        if scopes.is_empty() && wanted.is_empty() {
            return;
        }
        let refresh = self.host.ports.refresh(scopes, wanted);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Some(found) = refresh.await {
                let _ = tx.send(Msg::Fact(Fact::PortsFound(found))).await;
            }
        });
    }

    /// Applies a refresh, announcing the processes whose ports changed.
    pub(super) fn ports_found(&mut self, found: Found) {
        let mut changed = Vec::new();
        for (id, run, ports) in found.listening {
            let Some(p) = self.procs.get_mut(&id).filter(|p| p.run.id == run) else {
                continue;
            };
            if !ports.is_empty() {
                p.last_ports.clone_from(&ports);
            }
            let now = Some((run, ports));
            if p.listening != now {
                p.listening = now;
                changed.push(id);
            }
        }
        for (id, holders) in found.holders {
            let Some(p) = self.procs.get_mut(&id).filter(|p| !p.state().is_active()) else {
                continue;
            };
            if p.port_holders != holders {
                p.port_holders = holders;
                changed.push(id);
            }
        }
        for id in changed {
            if let Some(state) = self.procs.get(&id).map(|p| p.state()) {
                self.changed(id, state);
            }
        }
    }
}

/// The ports a process expects to use: those it last listened on, its
/// TCP or HTTP health check's, and its `PORT` variable's; sorted.
fn expected_ports(config: &ProcessConfig, last: &[ListenPort]) -> Vec<(Proto, u16)> {
    let mut ports: Vec<(Proto, u16)> = last
        .iter()
        .map(|p| {
            let proto = if p.proto == "udp" {
                Proto::Udp
            } else {
                Proto::Tcp
            };
            (proto, p.port)
        })
        .collect();
    let check = config.health.as_ref().and_then(|h| match h.kind {
        ProbeKind::Tcp => port_of(&h.address),
        ProbeKind::Http => {
            let rest = h.address.split_once("://").map_or(&*h.address, |(_, r)| r);
            let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            port_of(authority).or(Some(80))
        }
        _ => None,
    });
    // The last `PORT=` wins, as in the environment it builds.
    let env = config
        .env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PORT="))
        .and_then(|v| v.trim().parse::<u16>().ok());
    ports.extend([check, env].into_iter().flatten().map(|p| (Proto::Tcp, p)));
    ports.retain(|(_, p)| *p != 0);
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The port of `host:port` (`[::1]:80` too).
fn port_of(address: &str) -> Option<u16> {
    address.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_ports_come_from_the_last_run_the_check_and_port() {
        let mut config: ProcessConfig = serde_json::from_str(
            r#"{"command":["x"],"cwd":"/","env":["PORT=3000","A=1","PORT=3001"],
                "memory_max":null,"cpu_quota":null,"tasks_max":null,
                "restart":{"policy":"no","delay_ms":0,"delay_max_ms":0,"reset_sec":0,
                "limit":0,"limit_interval_sec":0}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let last = [ListenPort {
            proto: "udp".into(),
            address: "::".into(),
            port: 5353,
        }];
        assert_eq!(
            expected_ports(&config, &last),
            vec![(Proto::Tcp, 3001), (Proto::Udp, 5353)]
        );
        config.env = vec!["PORT=x".into()];
        let check = |kind, address: &str| crate::api::HealthCheck {
            kind,
            command: vec![],
            address: address.into(),
            interval_ms: 1,
            timeout_ms: 1,
            start_period_ms: 0,
            retries: 1,
            on_unhealthy: crate::api::OnUnhealthy::None,
            expect_status: None,
            expect_body: None,
        };
        config.health = Some(check(ProbeKind::Http, "http://[::1]:8080/up?x=1"));
        assert_eq!(expected_ports(&config, &[]), vec![(Proto::Tcp, 8080)]);
        config.health = Some(check(ProbeKind::Http, "http://localhost/up"));
        assert_eq!(expected_ports(&config, &[]), vec![(Proto::Tcp, 80)]);
        config.health = Some(check(ProbeKind::Tcp, "127.0.0.1:5432"));
        assert_eq!(expected_ports(&config, &[]), vec![(Proto::Tcp, 5432)]);
    }
}
