//! corral: a process-supervisor agent. corrald runs each supervised process
//! in its own transient systemd scope under a tiny shim that owns the
//! child's exit status and output; corralctl talks to corrald over D-Bus.
//!
//! Modules: `shim` (the per-process shim and its wire types), `logfile`
//! (output log format, rotation, reading back).

pub mod logfile;
pub mod shim;
