//! corral: a process supervisor for Linux desktops and dev machines.
//!
//! `corrald` starts (or adopts) long-running commands as transient systemd
//! scope units, so each one and all its children live in their own cgroup;
//! it reads their usage from the cgroup files, keeps their history in
//! SQLite, and serves everything on D-Bus (`org.corral.Supervisor1`).
//! `corralctl` is a D-Bus client of that API; `corral-shim` is the tiny
//! per-process keeper that owns a child, its exit status and its output.
//!
//! Modules: [`api`] the wire contract (shared by agent and CLI), [`config`]
//! the agent's settings, [`daemon`] the agent, [`cli`] the command line,
//! [`shim`] + [`logfile`] the per-process keeper and its log files,
//! [`clock`] the timestamps all of them record.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod logfile;
pub mod project;
pub mod shim;
