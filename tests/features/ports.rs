//! Ports: a supervised Python process listening on a loopback TCP port and
//! bound to a UDP one shows both in `ListenPorts`, `list --json`, the list
//! table and `corralctl ports`; a second process whose `PORT` is the
//! first's fails to bind, and `status` names the first as the holder.

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(20);

fn free_ports() -> (u16, u16) {
    let t = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let u = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr());
    (
        t.expect("a free TCP port").port(),
        u.expect("a free UDP port").port(),
    )
}

#[test]
fn ports_are_listed_and_a_clashing_process_names_the_holder() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let (tcp, udp) = free_ports();
    let server = format!(
        "import socket, time\n\
         t = socket.socket(); t.bind(('127.0.0.1', {tcp})); t.listen()\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', {udp}))\n\
         time.sleep(1000)\n"
    );
    let web = agent.start_cmd(&[
        "--name", "web", "-w", "shop", "--", "python3", "-c", &server,
    ]);
    let want = serde_json::json!([
        {"proto": "tcp", "address": "127.0.0.1", "port": tcp},
        {"proto": "udp", "address": "127.0.0.1", "port": udp},
    ]);
    let mut want_sorted = want.as_array().cloned().unwrap_or_default();
    want_sorted.sort_by_key(|p| p["port"].as_u64());
    wait_for(LIMIT, "the ports in list --json", || {
        (agent.get(&web)["ports"] == serde_json::Value::Array(want_sorted.clone())).then_some(())
    });
    let prop = process_property(&web, "ListenPorts");
    assert!(prop.starts_with("a(ssq) 2 "), "{prop}");
    assert!(
        prop.contains(&format!("\"tcp\" \"127.0.0.1\" {tcp}")),
        "{prop}"
    );
    assert!(
        prop.contains(&format!("\"udp\" \"127.0.0.1\" {udp}")),
        "{prop}"
    );
    let table = agent.ctl_ok(&["ports"]);
    assert!(
        table.lines().any(|l| l.starts_with(&web)
            && l.contains("web")
            && l.contains("tcp")
            && l.trim_end().ends_with(&tcp.to_string())),
        "{table}"
    );
    let list = agent.ctl_ok(&["list"]);
    let cell = if tcp < udp {
        format!(":{tcp},:{udp}/udp")
    } else {
        format!(":{udp}/udp,:{tcp}")
    };
    assert!(list.contains(&cell), "{list}");

    let clash = "import os, socket\n\
                 s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n";
    let port_env = format!("PORT={tcp}");
    let second = agent.start_cmd(&[
        "--name", "clash", "-e", &port_env, "--", "python3", "-c", clash,
    ]);
    agent.wait_state(&second, "failed", LIMIT);
    let holders = wait_for(LIMIT, "the holder in status --json", || {
        let out = agent.ctl_ok(&["--json", "status", &second]);
        let status: serde_json::Value = serde_json::from_str(&out).ok()?;
        let h = status["port_holders"].as_array()?.clone();
        (!h.is_empty()).then_some(h)
    });
    let description = format!("web (id {web}, workspace shop)");
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0]["port"], tcp);
    assert_eq!(holders[0]["description"], description.as_str());
    assert!(holders[0]["pid"].as_u64().unwrap_or(0) > 0, "{holders:?}");
    let page = agent.ctl_ok(&["status", &second]);
    assert!(
        page.contains(&format!("port {tcp} held by {description}")),
        "{page}"
    );
    assert!(process_property(&second, "PortHolders").starts_with("a(qus) 1 "));

    // The holder gone, the port is free: nobody is named any more.
    agent.ctl_ok(&["stop", &web]);
    wait_for(LIMIT, "the holder to be forgotten", || {
        agent.get(&second)["port_holders"]
            .as_array()
            .is_some_and(|h| h.is_empty())
            .then_some(())
    });
    assert_eq!(agent.get(&web)["ports"], serde_json::json!([]));
}
