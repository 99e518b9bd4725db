//! Which supervised process listens on which port, and who holds a port a
//! process that is not running expects to use. One socket-table dump
//! ([`SockDiag::bound`]) a refresh gives every listener's inode; the
//! `/proc/PID/fd` links (`socket:[INODE]`) of the processes in the
//! scopes map inodes to processes — all of them re-read only when the
//! set of listening inodes changed since the last refresh, only the new
//! scopes' when just the set of scopes did, so an unchanged machine
//! costs one dump and a start the new process's fds. A holder outside
//! corral is found by a bounded walk of `/proc/*/fd`, once per socket.
//!
//! What is said of a holder is what `ss -l` would tell the owner of the
//! process asking: another user's socket is "another user's process",
//! without its PID or name. A process whose `/proc` entry vanished or is
//! unreadable is skipped, not an error. Reads files; runs on a blocking
//! thread.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::api::{ListenPort, PortHolder};
use crate::daemon::listeners::{Bound, Proto, SockDiag};
use crate::daemon::store::{ProcessId, RunId};

/// Most fds read of one process: a server with more sockets than this is
/// shown with those found among the first.
const MAX_FDS: usize = 64 * 1024;

/// Most processes the walk for an unsupervised holder looks at.
const MAX_PROCS: usize = 32 * 1024;

/// Most sockets `ListenPorts` names per process (the lowest ports): the
/// list travels in every `List` record.
const MAX_PORTS: usize = 1024;

/// One running supervised process: its identity and the PIDs of its scope.
#[derive(Debug, Clone)]
pub struct Scope {
    pub id: ProcessId,
    pub run: RunId,
    pub owner: u32,
    pub name: String,
    pub workspace: String,
    pub pids: Vec<u32>,
}

/// A process that is not running and the ports it expects to use.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub id: ProcessId,
    pub owner: u32,
    pub ports: Vec<(Proto, u16)>,
}

/// What one refresh found.
#[derive(Debug, Default)]
pub struct Found {
    /// Every scope given, with the sockets its processes hold.
    pub listening: Vec<(ProcessId, RunId, Vec<ListenPort>)>,
    /// Every wanted process, with who holds its ports (empty: all free).
    pub holders: Vec<(ProcessId, Vec<PortHolder>)>,
}

/// The state kept between refreshes.
pub struct Scanner {
    proc_root: PathBuf,
    diag: Option<SockDiag>,
    /// The inodes of the last dump (sorted) and the scopes scanned then.
    last_inodes: Vec<u32>,
    last_scopes: Vec<(ProcessId, RunId)>,
    /// Inode to the supervised process (its run, and the PID) holding it.
    owners: HashMap<u32, (ProcessId, RunId, u32)>,
    /// Inode to the unsupervised process found holding it (PID, name).
    outside: HashMap<u32, Option<(u32, String)>>,
}

impl Scanner {
    pub fn new(proc_root: impl Into<PathBuf>) -> Scanner {
        Scanner {
            proc_root: proc_root.into(),
            diag: None,
            last_inodes: Vec::new(),
            last_scopes: Vec::new(),
            owners: HashMap::new(),
            outside: HashMap::new(),
        }
    }

    /// Reads the socket table once and answers for `scopes` and `wanted`.
    /// `pids_of` gives a scope's PIDs (where `pids` is empty); it is
    /// called only when the sockets or the scopes changed since the last
    /// refresh — reading a thousand `cgroup.procs` files every tick would
    /// cost more than everything else the tick does.
    pub fn refresh(
        &mut self,
        scopes: &[Scope],
        wanted: &[Wanted],
        pids_of: &dyn Fn(&Scope) -> Vec<u32>,
    ) -> std::io::Result<Found> {
        let diag = match self.diag.take() {
            Some(d) => d,
            None => SockDiag::open()?,
        };
        let diag = self.diag.insert(diag);
        let bound = diag.bound().inspect_err(|_| self.diag = None)?;
        Ok(self.answer(&bound, scopes, wanted, pids_of))
    }

    /// The mapping of `bound` (one dump) to processes.
    fn answer(
        &mut self,
        bound: &[Bound],
        scopes: &[Scope],
        wanted: &[Wanted],
        pids_of: &dyn Fn(&Scope) -> Vec<u32>,
    ) -> Found {
        let mut inodes: Vec<u32> = bound.iter().map(|b| b.inode).collect();
        inodes.sort_unstable();
        inodes.dedup();
        let mut keys: Vec<(ProcessId, RunId)> = scopes.iter().map(|s| (s.id, s.run)).collect();
        keys.sort_unstable();
        if inodes == self.last_inodes && keys != self.last_scopes {
            // Only processes came or went (a start, an exit): the scopes
            // still there hold the sockets they held, so only the new
            // ones are read — a full pass would read every scope's fds
            // after each start, thousands of files at thousands of
            // processes. A socket whose holder went yet still listens
            // was passed on or shared: who holds it now takes a full pass.
            let passed_on = self
                .owners
                .values()
                .any(|(id, run, _)| keys.binary_search(&(*id, *run)).is_err());
            if passed_on {
                self.owners.clear();
                self.read_scopes(scopes.iter(), &inodes, pids_of);
            } else {
                let last = std::mem::take(&mut self.last_scopes);
                let new = scopes
                    .iter()
                    .filter(|s| last.binary_search(&(s.id, s.run)).is_err());
                self.read_scopes(new, &inodes, pids_of);
            }
            self.last_scopes = keys;
        } else if inodes != self.last_inodes {
            // A socket opened or closed somewhere: any scope may hold it.
            self.owners.clear();
            self.read_scopes(scopes.iter(), &inodes, pids_of);
            self.outside.retain(|i, _| inodes.binary_search(i).is_ok());
            self.last_inodes = inodes;
            self.last_scopes = keys;
        }

        let mut by_process: HashMap<ProcessId, Vec<ListenPort>> = HashMap::new();
        for b in bound {
            if let Some((id, _, _)) = self.owners.get(&b.inode) {
                by_process.entry(*id).or_default().push(ListenPort {
                    proto: b.proto.as_str().to_string(),
                    address: b.address.to_string(),
                    port: b.port,
                });
            }
        }
        let listening = scopes
            .iter()
            .map(|s| {
                let mut ports = by_process.remove(&s.id).unwrap_or_default();
                ports.sort_unstable();
                ports.dedup();
                ports.truncate(MAX_PORTS);
                (s.id, s.run, ports)
            })
            .collect();

        let holders = wanted
            .iter()
            .map(|w| {
                let mut held: Vec<PortHolder> = bound
                    .iter()
                    .filter(|b| w.ports.contains(&(b.proto, b.port)))
                    .map(|b| {
                        let (pid, description) = self.describe(b, w.owner, scopes);
                        PortHolder {
                            port: b.port,
                            pid,
                            description,
                        }
                    })
                    .collect();
                held.sort_unstable();
                held.dedup();
                (w.id, held)
            })
            .collect();
        Found { listening, holders }
    }

    /// Adds the listening sockets (among `inodes`) of the processes of
    /// `scopes` to the owners; a socket already owned keeps its owner.
    fn read_scopes<'a>(
        &mut self,
        scopes: impl Iterator<Item = &'a Scope>,
        inodes: &[u32],
        pids_of: &dyn Fn(&Scope) -> Vec<u32>,
    ) {
        for s in scopes {
            let read;
            let pids = if s.pids.is_empty() {
                read = pids_of(s);
                &read
            } else {
                &s.pids
            };
            for &pid in pids {
                for_each_socket(&self.proc_root, pid, |inode| {
                    if inodes.binary_search(&inode).is_ok() {
                        self.owners.entry(inode).or_insert((s.id, s.run, pid));
                    }
                });
            }
        }
    }

    /// Who holds `b`, as the owner `viewer` may be told.
    fn describe(&mut self, b: &Bound, viewer: u32, scopes: &[Scope]) -> (u32, String) {
        const OTHER: &str = "another user's process";
        if let Some((id, _, pid)) = self.owners.get(&b.inode) {
            return match scopes.iter().find(|s| s.id == *id) {
                Some(s) if s.owner == viewer => (
                    *pid,
                    format!("{} (id {}, workspace {})", s.name, s.id, s.workspace),
                ),
                _ => (0, OTHER.into()),
            };
        }
        if b.uid != viewer {
            return (0, OTHER.into());
        }
        let root = &self.proc_root;
        let found = self
            .outside
            .entry(b.inode)
            .or_insert_with(|| find_holder(root, b.inode, b.uid));
        match found {
            Some((pid, comm)) => (*pid, format!("PID {pid} ({comm}), not supervised")),
            None => (0, "a process corral cannot see".into()),
        }
    }
}

/// The inode of a `/proc/PID/fd` link's target, if it is a socket.
fn socket_inode(link: &OsStr) -> Option<u32> {
    let digits = link
        .as_bytes()
        .strip_prefix(b"socket:[")?
        .strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Calls `f` with the inode of each socket among the first [`MAX_FDS`]
/// fds of `pid`; nothing when its fds cannot be read.
fn for_each_socket(proc_root: &Path, pid: u32, mut f: impl FnMut(u32)) {
    let dir = proc_root.join(pid.to_string()).join("fd");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.take(MAX_FDS).flatten() {
        if let Some(inode) = std::fs::read_link(entry.path())
            .ok()
            .and_then(|l| socket_inode(l.as_os_str()))
        {
            f(inode);
        }
    }
}

/// The process of `uid` holding the socket `inode`, with its name: a walk
/// of at most [`MAX_PROCS`] processes, skipping other users' unread.
fn find_holder(proc_root: &Path, inode: u32, uid: u32) -> Option<(u32, String)> {
    let entries = std::fs::read_dir(proc_root).ok()?;
    let mut seen: HashSet<u32> = HashSet::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if seen.len() >= MAX_PROCS {
            break;
        }
        seen.insert(pid);
        if entry.metadata().ok().map(|m| m.uid()) != Some(uid) {
            continue;
        }
        let mut holds = false;
        for_each_socket(proc_root, pid, |i| holds |= i == inode);
        if holds {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some((pid, comm.trim_end().to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_socket_links_give_an_inode() {
        assert_eq!(socket_inode(OsStr::new("socket:[12345]")), Some(12345));
        assert_eq!(socket_inode(OsStr::new("pipe:[12345]")), None);
        assert_eq!(socket_inode(OsStr::new("/dev/null")), None);
        assert_eq!(socket_inode(OsStr::new("socket:[x]")), None);
        assert_eq!(socket_inode(OsStr::new("socket:[1")), None);
    }

    fn me() -> u32 {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() }
    }

    fn scope(pids: Vec<u32>, owner: u32) -> Scope {
        Scope {
            id: ProcessId(4),
            run: RunId(9),
            owner,
            name: "web".into(),
            workspace: "shop".into(),
            pids,
        }
    }

    /// The real table and this test's own fds: its sockets are the
    /// scope's; a port it holds is named as held by it, as supervised or
    /// not, and hidden from another user.
    #[test]
    fn a_process_s_sockets_are_found_and_named_to_its_owner_only() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (t, u) = (
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        );
        let pid = std::process::id();
        let mut s = Scanner::new("/proc");
        let found = s
            .refresh(&[scope(vec![pid], me())], &[], &|s| s.pids.clone())
            .unwrap();
        let (id, run, ports) = &found.listening[0];
        assert_eq!((*id, *run), (ProcessId(4), RunId(9)));
        for (proto, port) in [("tcp", t), ("udp", u)] {
            let want = ListenPort {
                proto: proto.into(),
                address: "127.0.0.1".into(),
                port,
            };
            assert!(ports.contains(&want), "{want} not in {ports:?}");
        }

        let wanted = |owner| Wanted {
            id: ProcessId(5),
            owner,
            ports: vec![(Proto::Tcp, t), (Proto::Tcp, 1)],
        };
        let found = s
            .refresh(&[scope(vec![pid], me())], &[wanted(me())], &|s| {
                s.pids.clone()
            })
            .unwrap();
        let holder = |found: &Found| found.holders[0].1.clone();
        assert_eq!(
            holder(&found),
            vec![PortHolder {
                port: t,
                pid,
                description: "web (id 4, workspace shop)".into()
            }]
        );
        // Not supervised: found by the walk of /proc.
        let found = s
            .refresh(&[], &[wanted(me())], &|s| s.pids.clone())
            .unwrap();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(
            holder(&found)[0].description,
            format!("PID {pid} ({}), not supervised", comm.trim_end())
        );
        // Another user's, supervised or not: no PID, no name.
        for scopes in [vec![], vec![scope(vec![pid], me())]] {
            let found = s
                .refresh(&scopes, &[wanted(me() + 1)], &|s| s.pids.clone())
                .unwrap();
            let h = &holder(&found)[0];
            assert_eq!(
                (h.pid, h.description.as_str()),
                (0, "another user's process")
            );
        }
        // Once closed, nobody holds it and the scope lists it no more.
        drop(tcp);
        let found = s
            .refresh(&[scope(vec![pid], me())], &[wanted(me())], &|s| {
                s.pids.clone()
            })
            .unwrap();
        assert!(holder(&found).is_empty());
        assert!(!found.listening[0]
            .2
            .iter()
            .any(|p| p.port == t && p.proto == "tcp"));
    }

    /// A fixture `/proc`: each PID's fd 3 links to its socket.
    fn fake_proc(sockets: &[(u32, u32)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, inode) in sockets {
            let fd = dir.path().join(pid.to_string()).join("fd");
            std::fs::create_dir_all(&fd).unwrap();
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), fd.join("3")).unwrap();
        }
        dir
    }

    /// A start or an exit alone reads only the new scopes' fds; a socket
    /// whose holder went while it still listens is found again with a
    /// full pass, and a new socket anywhere triggers one too.
    #[test]
    fn only_new_scopes_are_read_when_only_the_scopes_changed() {
        let proc = fake_proc(&[(100, 11), (200, 11), (300, 33)]);
        let bound = |inodes: &[u32]| -> Vec<Bound> {
            inodes
                .iter()
                .map(|&inode| Bound {
                    proto: Proto::Tcp,
                    address: std::net::Ipv4Addr::LOCALHOST.into(),
                    port: inode as u16,
                    inode,
                    uid: me(),
                })
                .collect()
        };
        // PIDs are read through `pids_of`: process N runs as PID N × 100.
        let at = |id: u64| Scope {
            id: ProcessId(id),
            run: RunId(id),
            owner: me(),
            name: format!("p{id}"),
            workspace: "w".into(),
            pids: Vec::new(),
        };
        let read = std::cell::RefCell::new(Vec::new());
        let pids_of = |s: &Scope| {
            read.borrow_mut().push(s.id.0);
            vec![s.id.0 as u32 * 100]
        };
        let ports = |found: &Found| -> Vec<(u64, Vec<u16>)> {
            found
                .listening
                .iter()
                .map(|(id, _, p)| (id.0, p.iter().map(|p| p.port).collect()))
                .collect()
        };
        let mut s = Scanner::new(proc.path());
        let mut scopes = vec![at(1)];
        let found = s.answer(&bound(&[11]), &scopes, &[], &pids_of);
        assert_eq!(ports(&found), vec![(1, vec![11])]);
        assert_eq!(read.take(), vec![1]);

        // A start: the new scope is read, the old one not again; the
        // socket both share stays with its first holder.
        scopes.push(at(2));
        let found = s.answer(&bound(&[11]), &scopes, &[], &pids_of);
        assert_eq!(ports(&found), vec![(1, vec![11]), (2, vec![])]);
        assert_eq!(read.take(), vec![2]);

        // Its holder exits and the socket still listens: a full pass
        // finds the process it was passed on to.
        scopes.remove(0);
        let found = s.answer(&bound(&[11]), &scopes, &[], &pids_of);
        assert_eq!(ports(&found), vec![(2, vec![11])]);
        assert_eq!(read.take(), vec![2]);

        // Nothing changed: nothing read.
        s.answer(&bound(&[11]), &scopes, &[], &pids_of);
        assert_eq!(read.take(), Vec::<u64>::new());

        // A new listener: every scope is read again.
        scopes.push(at(3));
        let found = s.answer(&bound(&[11, 33]), &scopes, &[], &pids_of);
        assert_eq!(ports(&found), vec![(2, vec![11]), (3, vec![33])]);
        assert_eq!(read.take(), vec![2, 3]);
    }
}
