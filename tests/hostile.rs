//! Hostile-input run: thousands of random and adversarial calls from bus
//! clients at the real `corrald` (tests/testbed, or the caller's own
//! session): wrong D-Bus types, huge arrays and strings, control bytes,
//! path-like names, out-of-range numbers, racing Stop/Restart/Remove/Kill
//! on one id, and a flood of 10,000 calls from one client while a second
//! client measures its slowest reply. Run through `scripts/test`.
//!
//! It asserts what must hold whatever the input: the agent is alive and
//! answering, its log has no panic, its RSS stays bounded (a leak check:
//! after < 2 × before + 20 MiB), and every refused call is answered with
//! an `org.corral.Supervisor1.Error.*` or a standard D-Bus error. It
//! prints the figures README "Hostile input" quotes; the timing figure is
//! reported, never a pass/fail threshold. Bounded in count and in time
//! (each phase has a deadline), about 30 s on two cores.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::stream::{self, StreamExt};
use proptest::prelude::{Rng, RngCore};
use proptest::test_runner::{RngAlgorithm, TestRng};
use zbus::zvariant::{ObjectPath, Signature, StructureBuilder, Value};

const DEST: &str = "org.corral.Supervisor1";
const ROOT: &str = "/org/corral/Supervisor1";
const MANAGER: &str = "org.corral.Supervisor1.Manager";
const PROCESS: &str = "org.corral.Supervisor1.Process";

/// Random calls in the first phase.
const RANDOM_CALLS: usize = 3000;
/// Calls in the flood of one client.
const FLOOD_CALLS: usize = 10_000;
/// Most calls one client has in flight.
const IN_FLIGHT: usize = 32;
/// Longest any phase may take before it stops sending.
const PHASE_LIMIT: Duration = Duration::from_secs(20);

macro_rules! need_testbed {
    () => {
        if !testbed_available() {
            return;
        }
    };
}

/// What the run saw.
#[derive(Default)]
struct Tally {
    calls: usize,
    ok: usize,
    /// Refused by the agent with one of its own errors.
    corral_errors: usize,
    /// Refused with a standard D-Bus error (no such object, method or
    /// property, bad arguments to a standard interface).
    dbus_errors: usize,
    /// Refused by zbus itself as `org.freedesktop.zbus.Error`: a body of
    /// the wrong signature, a malformed interface name.
    library_errors: usize,
    /// Calls the client library or the bus would not carry (a NUL in a
    /// string): they never reach the agent, and the bus drops the sender.
    not_sent: usize,
    /// Anything else: an unknown error name, or no reply.
    bad: Vec<String>,
}

impl Tally {
    fn record(&mut self, what: &str, r: zbus::Result<zbus::Message>) {
        self.calls += 1;
        match r {
            Ok(_) => self.ok += 1,
            Err(zbus::Error::MethodError(name, msg, _)) => {
                let msg = msg.unwrap_or_default();
                if name.starts_with("org.corral.Supervisor1.Error.") {
                    self.corral_errors += 1;
                } else if name.starts_with("org.freedesktop.DBus.Error.") {
                    self.dbus_errors += 1;
                } else if name == "org.freedesktop.zbus.Error"
                    && ["Signature mismatch", "Invalid interface name"]
                        .iter()
                        .any(|m| msg.starts_with(m))
                {
                    // zbus's own answer, before any corral code runs, to a
                    // body that does not match the method's signature, or
                    // a Properties call naming no valid interface.
                    self.library_errors += 1;
                } else {
                    self.bad.push(format!("{what}: {name}: {msg}"));
                }
            }
            // The client library would not encode it (e.g. nested
            // variants zvariant cannot frame): never sent.
            Err(zbus::Error::Variant(_) | zbus::Error::ExcessData) => self.not_sent += 1,
            Err(e) => self.bad.push(format!("{what}: {e}")),
        }
    }

    fn merge(&mut self, o: Tally) {
        self.calls += o.calls;
        self.ok += o.ok;
        self.corral_errors += o.corral_errors;
        self.dbus_errors += o.dbus_errors;
        self.library_errors += o.library_errors;
        self.not_sent += o.not_sent;
        self.bad.extend(o.bad);
    }
}

/// One call: where, what, and a body of any signature.
struct Call {
    path: String,
    interface: &'static str,
    member: &'static str,
    body: Vec<Value<'static>>,
}

impl Call {
    fn describe(&self) -> String {
        let sig: Vec<String> = self
            .body
            .iter()
            .map(|v| v.value_signature().to_string())
            .collect();
        format!(
            "{} {}.{}({})",
            self.path,
            self.interface,
            self.member,
            sig.join(",")
        )
    }

    async fn send(self, conn: &zbus::Connection) -> (String, zbus::Result<zbus::Message>) {
        let what = self.describe();
        let path = match ObjectPath::try_from(self.path.as_str()) {
            Ok(p) => p,
            Err(e) => return (what, Err(e.into())),
        };
        let r = if self.body.is_empty() {
            conn.call_method(Some(DEST), path, Some(self.interface), self.member, &())
                .await
        } else {
            let body = self
                .body
                .into_iter()
                .fold(StructureBuilder::new(), |b, v| b.append_field(v))
                .build();
            match body {
                Ok(body) => {
                    conn.call_method(Some(DEST), path, Some(self.interface), self.member, &body)
                        .await
                }
                Err(e) => Err(e.into()),
            }
        };
        (what, r)
    }
}

/// Strings a careless or hostile client sends: control bytes, path-like
/// names, escapes, very long ones. (A NUL inside a string is not valid
/// D-Bus: the bus drops the sender, so those go on throwaway connections,
/// see `nul_strings`.)
fn nasty_string(rng: &mut TestRng) -> String {
    const SAMPLES: &[&str] = &[
        "",
        "/",
        "..",
        "../../etc/passwd",
        "/proc/self/environ",
        "a/b/c",
        "app-corral-x.scope",
        "-.slice",
        "\\x2d",
        "%00",
        "${HOME}",
        "$(reboot)",
        "\u{1b}[2J\u{1b}[H",
        "\t\n\r\u{7f}\u{85}\u{2028}",
        "é\u{200b}\u{feff}",
        "18446744073709551616",
        "-1",
        "0",
        "1",
        "running",
        "=",
        "K=",
        "=V",
    ];
    match rng.random_range(0..10) {
        0..=4 => SAMPLES[rng.random_range(0..SAMPLES.len())].to_string(),
        5 | 6 => (0..rng.random_range(0..40))
            .map(|_| char::from(rng.random_range(1u8..0x80)))
            .collect(),
        7 => "x".repeat(rng.random_range(100..70_000)),
        8 => (0..rng.random_range(0..20))
            .map(|_| char::from_u32(rng.random_range(0x80..0x3000)).unwrap_or('?'))
            .collect(),
        _ => format!("/tmp/{}", rng.next_u32()),
    }
}

fn strings(rng: &mut TestRng, huge: bool) -> Vec<String> {
    let n = if huge {
        rng.random_range(4000..60_000)
    } else {
        rng.random_range(0..6)
    };
    (0..n)
        .map(|i| {
            if huge {
                format!("A{i}=x")
            } else {
                nasty_string(rng)
            }
        })
        .collect()
}

/// A value of a random D-Bus type, out-of-range numbers included.
fn any_value(rng: &mut TestRng, depth: u32) -> Value<'static> {
    let huge = rng.random_bool(0.02);
    match rng.random_range(0..15) {
        0 => Value::from(rng.random_bool(0.5)),
        1 => Value::from(rng.random::<u8>()),
        2 => Value::from(*pick(rng, &[0u32, 1, 9, 64, 65, u32::MAX, 1 << 31])),
        3 => Value::from(*pick(rng, &[0u64, 1, u64::MAX, 86_400_001, 1 << 63])),
        4 => Value::from(*pick(rng, &[0i32, -1, i32::MIN, i32::MAX, 9, 15, 65])),
        5 => Value::from(*pick(rng, &[0i64, -1, i64::MIN, i64::MAX])),
        6 => Value::from(*pick(
            rng,
            &[f64::NAN, f64::INFINITY, -0.0, -1.0, 1e308, 50.0, 1e-300],
        )),
        7 | 8 => Value::from(nasty_string(rng)),
        9 => Value::from(strings(rng, huge)),
        10 => {
            let n = if huge { 20_000 } else { rng.random_range(0..5) };
            let m: HashMap<String, String> = (0..n)
                .map(|i| (format!("{}{i}", nasty_string(rng)), nasty_string(rng)))
                .collect();
            Value::from(m)
        }
        11 => Value::from(vec![rng.random::<u8>(); rng.random_range(0..4096)]),
        12 => Value::from(ObjectPath::try_from("/org/corral/Supervisor1/process/1").unwrap()),
        13 if depth < 3 => Value::Value(Box::new(any_value(rng, depth + 1))),
        13 => Value::from(Signature::try_from("a{sv}").unwrap()),
        _ if depth < 3 => Value::from(any_dict(rng, depth + 1)),
        _ => Value::from(0u16),
    }
}

fn pick<'a, T>(rng: &mut TestRng, from: &'a [T]) -> &'a T {
    &from[rng.random_range(0..from.len())]
}

/// An `a{sv}` of known spec/filter keys (and some others), values of
/// the right type about half the time.
fn any_dict(rng: &mut TestRng, depth: u32) -> HashMap<String, Value<'static>> {
    let mut d = HashMap::new();
    for _ in 0..rng.random_range(0..6) {
        let key = match rng.random_range(0..6) {
            0 => nasty_string(rng),
            1 => pick(rng, &["Workspace", "Session", "State"]).to_string(),
            _ => pick(rng, corral::api::StartSpec::KEYS).to_string(),
        };
        let value = if rng.random_bool(0.5) {
            well_typed(rng, &key)
        } else {
            any_value(rng, depth)
        };
        d.insert(key, value);
    }
    if rng.random_bool(0.6) {
        d.insert(
            "Command".into(),
            Value::from(match rng.random_range(0..4) {
                0 => {
                    let huge = rng.random_bool(0.05);
                    strings(rng, huge)
                }
                1 => vec!["/bin/true".to_string(), nasty_string(rng)],
                _ => vec![nasty_string(rng)],
            }),
        );
    }
    d
}

/// A value of the type `key` expects, with hostile content.
fn well_typed(rng: &mut TestRng, key: &str) -> Value<'static> {
    match key {
        "Command" | "Environment" => {
            let huge = rng.random_bool(0.05);
            Value::from(strings(rng, huge))
        }
        "Labels" => Value::from(HashMap::<String, String>::from_iter(
            (0..rng.random_range(0..100)).map(|i| (format!("k{i}"), nasty_string(rng))),
        )),
        "MemoryMax" | "TasksMax" | "RestartDelayMs" | "RestartDelayMaxMs" => {
            Value::from(*pick(rng, &[0u64, 1, u64::MAX, 86_400_001]))
        }
        "RestartResetSec" | "RestartLimit" | "RestartLimitIntervalSec" => {
            Value::from(*pick(rng, &[0u32, u32::MAX, 86_401, 10_001, 1]))
        }
        "CPUQuota" => Value::from(*pick(rng, &[f64::NAN, -1.0, 0.0, 1e9, 50.0])),
        "CleanEnvironment" | "Persistent" => Value::from(rng.random_bool(0.5)),
        _ => Value::from(nasty_string(rng)),
    }
}

/// Object paths a client might aim at: real processes, ones that never
/// existed, numbers that do not fit, and things that are not processes.
fn any_path(rng: &mut TestRng, ids: &[String]) -> String {
    let base = format!("{ROOT}/process");
    match rng.random_range(0..8) {
        0..=2 if !ids.is_empty() => format!("{base}/{}", pick(rng, ids)),
        3 => format!("{base}/99999999999999999999999"),
        4 => format!("{base}/0"),
        5 => base,
        6 => format!("{base}/1/x/y"),
        _ => format!("{base}/_{}", rng.next_u32()),
    }
}

/// One random call at the manager, a process, or their properties.
fn any_call(rng: &mut TestRng, ids: &[String]) -> Call {
    let args = |rng: &mut TestRng| -> Vec<Value<'static>> {
        (0..rng.random_range(0..4))
            .map(|_| any_value(rng, 0))
            .collect()
    };
    let id = |rng: &mut TestRng| -> Value<'static> {
        if !ids.is_empty() && rng.random_bool(0.5) {
            Value::from(pick(rng, ids).clone())
        } else {
            Value::from(nasty_string(rng))
        }
    };
    let manager = |member, body| Call {
        path: ROOT.into(),
        interface: MANAGER,
        member,
        body,
    };
    match rng.random_range(0..14) {
        0 | 1 => manager("Start", vec![Value::from(any_dict(rng, 0))]),
        2 => manager("List", vec![Value::from(any_dict(rng, 0))]),
        3 => manager("StopMatching", vec![Value::from(any_dict(rng, 0))]),
        4 => manager("RemoveMatching", vec![Value::from(any_dict(rng, 0))]),
        5 => manager(
            "Events",
            vec![id(rng), Value::from(*pick(rng, &[0u32, 1, u32::MAX]))],
        ),
        6 => manager(
            "Logs",
            vec![
                id(rng),
                Value::from(*pick(rng, &[0u32, 1, u32::MAX])),
                Value::from(*pick(rng, &[0u64, 1, u64::MAX])),
            ],
        ),
        7 => {
            let member = *pick(
                rng,
                &[
                    "Start",
                    "List",
                    "Events",
                    "Logs",
                    "StopMatching",
                    "NoSuchMethod",
                ],
            );
            manager(member, args(rng))
        }
        8..=10 => {
            let member = *pick(rng, &["Stop", "Kill", "Restart", "Remove", "Bogus"]);
            let body = if member == "Kill" && rng.random_bool(0.7) {
                vec![Value::from(*pick(rng, &[0i32, -1, 9, 65, i32::MAX]))]
            } else if rng.random_bool(0.8) {
                vec![]
            } else {
                args(rng)
            };
            Call {
                path: any_path(rng, ids),
                interface: PROCESS,
                member,
                body,
            }
        }
        11 => Call {
            path: any_path(rng, ids),
            interface: "org.freedesktop.DBus.Properties",
            member: "Get",
            body: vec![
                Value::from(*pick(rng, &[PROCESS, MANAGER, "x.y"])),
                Value::from(nasty_string(rng)),
            ],
        },
        12 => {
            let member: &'static str = if rng.random_bool(0.5) {
                "GetAll"
            } else {
                "Set"
            };
            Call {
                path: if rng.random_bool(0.5) {
                    ROOT.into()
                } else {
                    any_path(rng, ids)
                },
                interface: "org.freedesktop.DBus.Properties",
                member,
                body: args(rng),
            }
        }
        _ => Call {
            path: ROOT.into(),
            interface: "org.freedesktop.DBus.ObjectManager",
            member: "GetManagedObjects",
            body: if rng.random_bool(0.8) {
                vec![]
            } else {
                args(rng)
            },
        },
    }
}

/// Sends `calls` with at most `IN_FLIGHT` in flight, until `limit`.
async fn send_all(
    conn: &zbus::Connection,
    calls: impl Iterator<Item = Call>,
    limit: Duration,
) -> Tally {
    let start = Instant::now();
    let mut tally = Tally::default();
    let replies = stream::iter(calls.take_while(|_| start.elapsed() < limit))
        .map(|c| c.send(conn))
        .buffer_unordered(IN_FLIGHT);
    futures_util::pin_mut!(replies);
    while let Some((what, r)) = replies.next().await {
        tally.record(&what, r);
    }
    tally
}

/// Strings with NULs where the agent expects text, each from a new
/// connection: whether the client library refuses to send it or the bus
/// drops the connection, the agent must never see it or be hurt.
async fn nul_strings(rng: &mut TestRng) -> Tally {
    let mut tally = Tally::default();
    for i in 0..20 {
        let conn = zbus::Connection::session().await.unwrap();
        let nul = format!("{}\0{}", nasty_string(rng), nasty_string(rng));
        let call = match i % 4 {
            0 => manager_call(
                "Start",
                vec![Value::from(HashMap::from([(
                    "Command".to_string(),
                    Value::from(vec![nul]),
                )]))],
            ),
            1 => manager_call(
                "Start",
                vec![Value::from(HashMap::from([
                    ("Command".to_string(), Value::from(vec!["true".to_string()])),
                    ("Name".to_string(), Value::from(nul)),
                ]))],
            ),
            2 => manager_call(
                "Logs",
                vec![Value::from(nul), Value::from(0u32), Value::from(0u64)],
            ),
            _ => manager_call(
                "List",
                vec![Value::from(HashMap::from([(
                    "Workspace".to_string(),
                    Value::from(nul),
                )]))],
            ),
        };
        let (what, r) = call.send(&conn).await;
        match r {
            Err(zbus::Error::MethodError(..)) | Ok(_) => tally.record(&what, r),
            Err(_) => {
                tally.calls += 1;
                tally.not_sent += 1;
            }
        }
    }
    tally
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn manager_call(member: &'static str, body: Vec<Value<'static>>) -> Call {
    Call {
        path: ROOT.into(),
        interface: MANAGER,
        member,
        body,
    }
}

/// Starts `sleep 300` processes to race on; returns their ids.
async fn start_sleepers(conn: &zbus::Connection, n: usize, workspace: &str) -> Vec<String> {
    let mgr = corral::api::ManagerProxy::new(conn).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let spec: HashMap<String, Value<'static>> = [
            (
                "Command".to_string(),
                Value::from(vec!["sleep".to_string(), "300".to_string()]),
            ),
            ("Name".to_string(), Value::from(format!("target{i}"))),
            ("Workspace".to_string(), Value::from(workspace.to_string())),
        ]
        .into();
        let (id, _) = mgr.start(spec).await.expect("start a sleeper");
        ids.push(id);
    }
    ids
}

#[test]
fn hostile_input_leaves_the_agent_alive_bounded_and_answering() {
    need_testbed!();
    let mut agent = Agent::start();
    let pid = agent.pid();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut tally = Tally::default();
    let t0 = Instant::now();

    let (rss_before, flood_secs, slowest, probes) = rt.block_on(async {
        let conn = zbus::Connection::session().await.unwrap();
        let ids = start_sleepers(&conn, 4, "hostile").await;
        // Warm up every path once so the baseline includes what the agent
        // allocates for good (caches, prepared statements, pools).
        let warm = (0..200)
            .map(|_| any_call(&mut rng, &ids))
            .collect::<Vec<_>>();
        tally.merge(send_all(&conn, warm.into_iter(), PHASE_LIMIT).await);
        let rss_before = rss_kib(pid);

        // 1. Random and adversarial calls.
        let calls: Vec<Call> = (0..RANDOM_CALLS)
            .map(|_| any_call(&mut rng, &ids))
            .collect();
        let conn_random = zbus::Connection::session().await.unwrap();
        tally.merge(send_all(&conn_random, calls.into_iter(), PHASE_LIMIT).await);

        tally.merge(nul_strings(&mut rng).await);

        // 2. Races: Stop, Restart, Remove and Kill of the same ids at once,
        // from two connections.
        let racers = start_sleepers(&conn, 3, "race").await;
        let race = |rng: &mut TestRng| -> Vec<Call> {
            (0..400)
                .map(|i| {
                    let member = ["Stop", "Restart", "Remove", "Kill", "Restart"][i % 5];
                    Call {
                        path: format!("{ROOT}/process/{}", pick(rng, &racers)),
                        interface: PROCESS,
                        member,
                        body: if member == "Kill" {
                            vec![Value::from(15i32)]
                        } else {
                            vec![]
                        },
                    }
                })
                .collect()
        };
        let (a, b) = (race(&mut rng), race(&mut rng));
        let conn_b = zbus::Connection::session().await.unwrap();
        let (ta, tb) = futures_util::join!(
            send_all(&conn, a.into_iter(), PHASE_LIMIT),
            send_all(&conn_b, b.into_iter(), PHASE_LIMIT)
        );
        tally.merge(ta);
        tally.merge(tb);

        // 3. A flood of 10,000 calls from one client while another, on its
        // own thread and connection, asks for the version and measures.
        let flooding = Arc::new(AtomicBool::new(true));
        let probe = {
            let flooding = flooding.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let conn = zbus::Connection::session().await.unwrap();
                    let mgr = corral::api::ManagerProxy::new(&conn).await.unwrap();
                    let (mut slowest, mut n) = (Duration::ZERO, 0u32);
                    while flooding.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        mgr.list(HashMap::new())
                            .await
                            .expect("the second client is answered");
                        slowest = slowest.max(t.elapsed());
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    (slowest, n)
                })
            })
        };
        let flood = (0..FLOOD_CALLS).map(|i| match i % 4 {
            0 => manager_call("List", vec![Value::from(HashMap::<String, Value>::new())]),
            1 => manager_call("Events", vec![Value::from(""), Value::from(0u32)]),
            2 => manager_call(
                "Start",
                vec![Value::from(HashMap::from([(
                    "Command".to_string(),
                    Value::from(vec![String::new()]),
                )]))],
            ),
            _ => manager_call(
                "Logs",
                vec![Value::from("123456"), Value::from(0u32), Value::from(0u64)],
            ),
        });
        let flood_start = Instant::now();
        tally.merge(send_all(&conn, flood, PHASE_LIMIT).await);
        let flood_secs = flood_start.elapsed().as_secs_f64();
        flooding.store(false, Ordering::Relaxed);
        let (slowest, probes) = probe.join().expect("probe thread");

        // Clean up what the run started, then let the agent settle.
        let mgr = corral::api::ManagerProxy::new(&conn).await.unwrap();
        for ws in ["hostile", "race"] {
            let filter = HashMap::from([("Workspace".to_string(), Value::from(ws))]);
            let _ = mgr.remove_matching(filter).await;
        }
        (rss_before, flood_secs, slowest, probes)
    });

    // Whatever random Starts got through: remove them too (any workspace).
    let leftovers: Vec<String> = agent
        .list(&[])
        .iter()
        .filter_map(|p| p["id"].as_str().map(String::from))
        .collect();
    for id in &leftovers {
        let _ = agent.ctl(&["rm", id]);
    }
    let rss_after = rss_kib(pid);

    let alive = agent.ctl(&["list"]).status.success();
    let log = agent.log();
    let panics = log.matches("panicked").count();
    println!(
        "hostile input: {} calls in {:.1} s ({} ok, {} corral errors, {} D-Bus errors, \
         {} zbus signature/name errors, {} not sendable), {} unexpected",
        tally.calls,
        t0.elapsed().as_secs_f64(),
        tally.ok,
        tally.corral_errors,
        tally.dbus_errors,
        tally.library_errors,
        tally.not_sent,
        tally.bad.len()
    );
    println!(
        "panics: {panics}; agent RSS before {rss_before} KiB, after {rss_after} KiB; \
         flood of {FLOOD_CALLS} calls in {flood_secs:.1} s; second client: {probes} calls, slowest {:.1} ms",
        slowest.as_secs_f64() * 1000.0
    );
    assert!(
        tally.bad.is_empty(),
        "unexpected replies: {:#?}",
        &tally.bad[..tally.bad.len().min(20)]
    );
    assert!(alive, "corrald stopped answering; log:\n{log}");
    let running = agent
        .child
        .as_mut()
        .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
    assert!(running && rss_after > 0, "corrald is gone; log:\n{log}");
    assert_eq!(panics, 0, "corrald panicked:\n{log}");
    assert!(
        rss_after < 2 * rss_before + 20 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(
        tally.calls >= 1000,
        "the run was cut short: {} calls",
        tally.calls
    );
}
