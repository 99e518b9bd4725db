//! The ports contract: `ListenPorts` (`a(ssq)`: protocol `tcp` or `udp`,
//! local address as text, port) and `PortHolders` (`a(qus)`: port, PID —
//! 0 when not to be told —, who holds it) of a process, their JSON
//! objects (`{proto, address, port}`, `{port, pid, description}`) and
//! their short text. How they are found is the agent's business.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

use super::WireValue;

/// A socket a process listens on: a TCP listener or a bound UDP socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ListenPort {
    /// `tcp` or `udp`.
    pub proto: String,
    /// `0.0.0.0`, `::`, `127.0.0.1`, …
    pub address: String,
    pub port: u16,
}

/// By port first: what a reader looks for.
impl Ord for ListenPort {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.port, &self.proto, &self.address).cmp(&(other.port, &other.proto, &other.address))
    }
}

impl PartialOrd for ListenPort {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl ListenPort {
    /// `:3000` for TCP, `:5353/udp`: the list's compact cell.
    pub fn short(&self) -> String {
        match self.proto.as_str() {
            "tcp" => format!(":{}", self.port),
            p => format!(":{}/{p}", self.port),
        }
    }
}

/// `tcp 127.0.0.1:3000`, `udp [::]:5353`.
impl fmt::Display for ListenPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.address.contains(':') {
            write!(f, "{} [{}]:{}", self.proto, self.address, self.port)
        } else {
            write!(f, "{} {}:{}", self.proto, self.address, self.port)
        }
    }
}

/// Who holds a port a process that is not running expects to use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PortHolder {
    pub port: u16,
    /// 0 when not known or not to be told (another user's process).
    pub pid: u32,
    /// `web (id 4, workspace shop)`, `PID 812 (python3), not supervised`,
    /// `another user's process`.
    pub description: String,
}

impl WireValue for Vec<ListenPort> {
    type Wire = Vec<(String, String, u16)>;

    fn to_wire(&self) -> Self::Wire {
        self.iter()
            .map(|p| (p.proto.clone(), p.address.clone(), p.port))
            .collect()
    }

    fn from_wire(wire: Self::Wire) -> Option<Self> {
        Some(
            wire.into_iter()
                .map(|(proto, address, port)| ListenPort {
                    proto,
                    address,
                    port,
                })
                .collect(),
        )
    }
}

impl WireValue for Vec<PortHolder> {
    type Wire = Vec<(u16, u32, String)>;

    fn to_wire(&self) -> Self::Wire {
        self.iter()
            .map(|h| (h.port, h.pid, h.description.clone()))
            .collect()
    }

    fn from_wire(wire: Self::Wire) -> Option<Self> {
        Some(
            wire.into_iter()
                .map(|(port, pid, description)| PortHolder {
                    port,
                    pid,
                    description,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(proto: &str, address: &str, port: u16) -> ListenPort {
        ListenPort {
            proto: proto.into(),
            address: address.into(),
            port,
        }
    }

    #[test]
    fn ports_sort_by_number_and_print_short_and_long() {
        let mut v = [
            p("udp", "::", 5353),
            p("tcp", "0.0.0.0", 8080),
            p("tcp", "127.0.0.1", 3000),
        ];
        v.sort();
        let short: Vec<String> = v.iter().map(ListenPort::short).collect();
        assert_eq!(short, [":3000", ":5353/udp", ":8080"]);
        assert_eq!(v[1].to_string(), "udp [::]:5353");
        assert_eq!(v[0].to_string(), "tcp 127.0.0.1:3000");
        assert_eq!(
            serde_json::to_string(&v[0]).unwrap(),
            r#"{"proto":"tcp","address":"127.0.0.1","port":3000}"#
        );
    }
}
