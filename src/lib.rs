//! corral: a process supervisor that runs processes in transient systemd scopes.

pub mod daemon;
