//! The kernel's table of listening TCP sockets, read with one
//! `NETLINK_SOCK_DIAG` dump per address family (what `ss -ltn` reads),
//! and the question a TCP health check asks of it: would a connection to
//! this local address be accepted?
//!
//! The same dump, asked also for bound UDP sockets, gives each socket's
//! inode and owner ([`Bound`]): what [`crate::daemon::ports`] maps to
//! processes.
//!
//! A check on a loopback address is answered from the table, so a
//! thousand checks a second cost one dump, not a thousand connections
//! (each a socket, a handshake, an `accept` in the checked program and a
//! `TIME_WAIT`). The answer is the kernel's own: a connect to a local
//! port is accepted when a listener is bound to that address (or to the
//! wildcard address) and its accept queue has room — which is also true
//! of a listener whose program is stopped, exactly as for a connect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NlasIterator, Parseable, NLMSG_DONE, NLMSG_ERROR,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, INET_DIAG_SKV6ONLY, IPPROTO_TCP, IPPROTO_UDP, SOCK_DIAG_BY_FAMILY,
};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseBuffer, InetResponseHeader, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: IpAddr,
    /// An IPv6 socket that takes no IPv4 connections (`IPV6_V6ONLY`).
    pub v6only: bool,
    /// Connections waiting to be accepted, and the most the queue holds.
    pub queued: u32,
    pub backlog: u32,
}

impl Listener {
    /// The kernel drops a SYN once the queue holds more than the backlog
    /// (`sk_acceptq_is_full`).
    fn has_room(&self) -> bool {
        self.queued <= self.backlog
    }

    /// Whether a connection to `target` reaches this socket, and whether
    /// by its exact address (which the kernel prefers to a wildcard).
    fn reaches(&self, target: IpAddr) -> Option<Exactness> {
        let wildcard = self.address.is_unspecified();
        match (self.address, target) {
            (a, t) if a == t => Some(Exactness::Exact),
            (IpAddr::V4(_), IpAddr::V4(_)) if wildcard => Some(Exactness::Wildcard),
            (IpAddr::V6(_), IpAddr::V6(_)) if wildcard => Some(Exactness::Wildcard),
            (IpAddr::V6(a), IpAddr::V4(t)) if !self.v6only => {
                if a.to_ipv4_mapped() == Some(t) {
                    Some(Exactness::Exact)
                } else if wildcard {
                    Some(Exactness::Wildcard)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Exactness {
    Wildcard,
    Exact,
}

/// The listening TCP sockets of this network namespace, sorted by port
/// (one flat vector: a thousand small ones cost a thousand allocations a
/// read).
#[derive(Debug, Default)]
pub struct Listening {
    by_port: Vec<(u16, Listener)>,
}

impl Listening {
    pub fn new(mut by_port: Vec<(u16, Listener)>) -> Listening {
        by_port.sort_unstable_by_key(|(p, _)| *p);
        Listening { by_port }
    }

    fn on(&self, port: u16) -> &[(u16, Listener)] {
        let from = self.by_port.partition_point(|(p, _)| *p < port);
        let to = self.by_port.partition_point(|(p, _)| *p <= port);
        &self.by_port[from..to]
    }

    /// Whether a connection to one of `targets` (the addresses a name
    /// resolves to, tried in turn as a connect would) would be accepted;
    /// if not, why not.
    pub fn accepts(&self, targets: &[SocketAddr]) -> Result<(), String> {
        let mut why = String::new();
        for t in targets {
            match self.accepts_one(*t) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if !why.is_empty() {
                        why.push_str("; ");
                    }
                    why.push_str(&e);
                }
            }
        }
        Err(why)
    }

    fn accepts_one(&self, target: SocketAddr) -> Result<(), String> {
        let candidates = self.on(target.port()).iter().map(|(_, l)| l);
        // The kernel hands the connection to the most specific listener
        // (a socket group under SO_REUSEPORT shares the load among its
        // members): only when none is bound to the exact address does a
        // wildcard one take it.
        let best = candidates
            .clone()
            .filter_map(|l| l.reaches(target.ip()))
            .max();
        let Some(best) = best else {
            return Err(format!("nothing listens on {target}"));
        };
        let chosen = || {
            candidates
                .clone()
                .filter(move |l| l.reaches(target.ip()) == Some(best))
        };
        if chosen().any(Listener::has_room) {
            return Ok(());
        }
        let l = chosen().next().map(|l| (l.queued, l.backlog));
        let (queued, backlog) = l.unwrap_or_default();
        Err(format!(
            "{target} is not accepting: its accept queue is full ({queued} waiting, backlog {backlog})"
        ))
    }
}

/// The addresses a TCP check's `host:port` names, when every one of them
/// is on this machine's loopback (or the wildcard address, which a
/// connect also reaches locally); `None` sends the check over the
/// network. `localhost` is the loopback by RFC 6761, IPv4 first as
/// glibc resolves it.
pub fn local_target(address: &str) -> Option<Vec<SocketAddr>> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        // A connect to the wildcard address goes to the loopback one.
        let ip = match a.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        return ip
            .is_loopback()
            .then(|| vec![SocketAddr::new(ip, a.port())]);
    }
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    host.eq_ignore_ascii_case("localhost").then(|| {
        vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ]
    })
}

/// A `NETLINK_SOCK_DIAG` socket, kept open with its receive buffer.
pub struct SockDiag {
    socket: Socket,
    buf: Vec<u8>,
    /// How many sockets the last read found, to size the next.
    last_count: usize,
}

/// How much one `recv` of a dump takes: the kernel fills at most this
/// much per datagram, and a thousand listeners fit in a few.
const RECV_BUF: usize = 64 * 1024;

impl SockDiag {
    pub fn open() -> std::io::Result<SockDiag> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&NlAddr::new(0, 0))?;
        Ok(SockDiag {
            socket,
            buf: vec![0; RECV_BUF],
            last_count: 0,
        })
    }

    /// Every listening TCP socket, IPv4 and IPv6.
    pub fn listening_tcp(&mut self) -> std::io::Result<Listening> {
        let mut all = Vec::with_capacity(self.last_count);
        for family in [AF_INET, AF_INET6] {
            self.dump(family, IPPROTO_TCP, StateFlags::LISTEN, |header, nlas| {
                let v6only = NlasIterator::new(nlas)
                    .flatten()
                    .any(|nla| nla.kind() == INET_DIAG_SKV6ONLY && nla.value().first() == Some(&1));
                let id = &header.socket_id;
                all.push((
                    id.source_port,
                    Listener {
                        address: id.source_address,
                        v6only,
                        queued: header.recv_queue,
                        backlog: header.send_queue,
                    },
                ));
            })?;
        }
        self.last_count = all.len();
        Ok(Listening::new(all))
    }

    /// Every listening TCP socket and every bound, unconnected UDP socket
    /// (what `ss -lntu` lists), IPv4 and IPv6, with inode and owner.
    pub fn bound(&mut self) -> std::io::Result<Vec<Bound>> {
        let mut all = Vec::new();
        for (proto, states) in [
            (Proto::Tcp, StateFlags::LISTEN),
            // An unconnected UDP socket is in TCP_CLOSE (`ss`'s UNCONN).
            (Proto::Udp, StateFlags::CLOSE),
        ] {
            let ipproto = match proto {
                Proto::Tcp => IPPROTO_TCP,
                Proto::Udp => IPPROTO_UDP,
            };
            for family in [AF_INET, AF_INET6] {
                let dumped = self.dump(family, ipproto, states.clone(), |header, _| {
                    let id = &header.socket_id;
                    // A UDP socket in CLOSE without a port is not bound.
                    if id.source_port != 0 && header.inode != 0 {
                        all.push(Bound {
                            proto,
                            address: id.source_address,
                            port: id.source_port,
                            inode: header.inode,
                            uid: header.uid,
                        });
                    }
                });
                match dumped {
                    // UDP needs the `udp_diag` module, TCP only
                    // `inet_diag`: a kernel without it still shows TCP.
                    Err(e) if proto == Proto::Udp => {
                        tracing::debug!("no UDP sockets from sock_diag: {e}");
                    }
                    r => r?,
                }
            }
        }
        Ok(all)
    }

    /// One dump of `protocol` sockets of `family` in `states`, each
    /// reply's header and attributes handed to `each`.
    fn dump(
        &mut self,
        family: u8,
        protocol: u8,
        states: StateFlags,
        mut each: impl FnMut(&InetResponseHeader, &[u8]),
    ) -> std::io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol,
                extensions: ExtensionFlags::empty(),
                states,
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut out = vec![0; request.buffer_len()];
        request.serialize(&mut out);
        self.socket.send(&out, 0)?;
        // Walked in place, not deserialised: a message per socket, and
        // the crate's parse allocates a few times per message.
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let message = NetlinkBuffer::new_checked(&self.buf[at..n])
                    .map_err(|e| bad(format!("a sock_diag reply: {e}")))?;
                let payload = message.payload();
                match message.message_type() {
                    NLMSG_DONE | NLMSG_ERROR => {
                        // Both carry an errno, negated; 0 in a DONE.
                        let code = payload
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, i32::from_ne_bytes);
                        return match code {
                            0 => Ok(()),
                            c => Err(std::io::Error::from_raw_os_error(c.saturating_neg())),
                        };
                    }
                    SOCK_DIAG_BY_FAMILY => {
                        let (head, nlas) = payload
                            .split_at_checked(size_of::<InetResponseBuffer>())
                            .ok_or_else(|| bad("a short sock_diag message".into()))?;
                        let header = InetResponseHeader::parse(head)
                            .map_err(|e| bad(format!("a sock_diag message: {e}")))?;
                        each(&header, nlas);
                    }
                    _ => {}
                }
                // Messages are 4-byte aligned; a zero length would loop.
                let len = (message.length() as usize).next_multiple_of(4);
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
    }
}

/// The protocol of a [`Bound`] socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A TCP listener or a bound UDP socket, as `ss -lntue` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub proto: Proto,
    pub address: IpAddr,
    pub port: u16,
    /// The socket's inode: `/proc/PID/fd/N` links to `socket:[inode]`.
    pub inode: u32,
    /// The uid that created it.
    pub uid: u32,
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(address: &str, v6only: bool, queued: u32) -> Listener {
        Listener {
            address: address.parse().unwrap(),
            v6only,
            queued,
            backlog: 4,
        }
    }

    fn at(s: &str) -> Vec<SocketAddr> {
        vec![s.parse().unwrap()]
    }

    #[test]
    fn a_connect_reaches_the_exact_or_a_wildcard_listener() {
        let t = Listening::new(vec![
            (83, l("127.0.0.2", false, 0)),
            (80, l("0.0.0.0", false, 0)),
            (81, l("::", false, 0)),
            (82, l("::", true, 0)),
        ]);
        assert!(t.accepts(&at("127.0.0.1:80")).is_ok());
        assert!(t.accepts(&at("[::1]:80")).is_err(), "an IPv4 socket");
        assert!(t.accepts(&at("127.0.0.1:81")).is_ok(), "dual-stack");
        assert!(t.accepts(&at("[::1]:81")).is_ok());
        assert!(t.accepts(&at("127.0.0.1:82")).is_err(), "IPv6 only");
        assert!(t.accepts(&at("127.0.0.1:83")).is_err(), "another address");
        assert_eq!(
            t.accepts(&at("127.0.0.1:84")),
            Err("nothing listens on 127.0.0.1:84".into())
        );
        // localhost: the IPv6 address answers when the IPv4 one does not.
        let both = local_target("localhost:82").unwrap();
        assert_eq!(t.accepts(&both), Ok(()));
        assert!(t.accepts(&both[..1]).is_err());
    }

    #[test]
    fn a_full_queue_refuses_unless_another_socket_of_the_group_has_room() {
        let mut group = vec![
            (80, l("127.0.0.1", false, 5)),
            (80, l("0.0.0.0", false, 0)),
            (79, l("127.0.0.1", false, 0)),
        ];
        // The exact socket takes the connection, full or not.
        let e = Listening::new(group.clone())
            .accepts(&at("127.0.0.1:80"))
            .unwrap_err();
        assert!(
            e.contains("accept queue is full (5 waiting, backlog 4)"),
            "{e}"
        );
        group.push((80, l("127.0.0.1", false, 1)));
        assert!(Listening::new(group).accepts(&at("127.0.0.1:80")).is_ok());
    }

    #[test]
    fn only_loopback_and_wildcard_addresses_are_local() {
        assert_eq!(local_target("127.0.0.1:5"), Some(at("127.0.0.1:5")));
        assert_eq!(local_target("[::1]:5"), Some(at("[::1]:5")));
        assert_eq!(local_target("0.0.0.0:5"), Some(at("127.0.0.1:5")));
        assert_eq!(local_target("[::]:5"), Some(at("[::1]:5")));
        assert_eq!(local_target("LOCALHOST:5").map(|v| v.len()), Some(2));
        assert_eq!(local_target("192.0.2.1:5"), None);
        assert_eq!(local_target("example.com:5"), None);
        assert_eq!(local_target("localhost:x"), None);
    }

    /// The real kernel table: a socket listens, then is closed.
    #[test]
    fn the_kernel_table_shows_a_listener_and_its_going() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut diag = SockDiag::open().unwrap();
        let table = diag.listening_tcp().unwrap();
        assert_eq!(table.accepts(&[addr]), Ok(()));
        drop(listener);
        let table = diag.listening_tcp().unwrap();
        assert!(table.accepts(&[addr]).is_err());
    }

    /// The real kernel table again, with inodes: a TCP listener and a
    /// bound UDP socket of this process, each under its own inode, and a
    /// connected UDP socket left out (it is not listening).
    #[test]
    fn bound_sockets_come_with_their_protocol_inode_and_owner() {
        use std::os::unix::fs::MetadataExt;
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(udp.local_addr().unwrap()).unwrap();
        let inode_of = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .ino() as u32
        };
        use std::os::fd::AsRawFd;
        let all = SockDiag::open().unwrap().bound().unwrap();
        let find = |port: u16, proto: Proto| {
            all.iter()
                .find(|b| b.port == port && b.proto == proto)
                .cloned()
        };
        let t = find(tcp.local_addr().unwrap().port(), Proto::Tcp).expect("the TCP listener");
        assert_eq!(t.inode, inode_of(tcp.as_raw_fd()));
        assert_eq!(t.address, IpAddr::from(Ipv4Addr::LOCALHOST));
        assert_eq!(t.uid, unsafe { libc::geteuid() });
        let u = find(udp.local_addr().unwrap().port(), Proto::Udp).expect("the UDP socket");
        assert_eq!(u.inode, inode_of(udp.as_raw_fd()));
        assert_eq!(u.address, IpAddr::from(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(find(client.local_addr().unwrap().port(), Proto::Udp), None);
    }
}
