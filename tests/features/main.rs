//! Feature suite: the capabilities added after the core (tracking, health,
//! live limits, history, terminals, projects, sd_notify readiness), each
//! in its own module, against the real `corrald`, `corralctl` and `busctl` on a real systemd
//! manager and dbus-daemon — one test binary so the VM tier boots once for
//! all of them. Run through `scripts/test`; one test at a time.

#[path = "../common/mod.rs"]
mod common;

// One line per feature module (kept sorted).
mod history;
mod live;
mod notify;
mod ports;
mod project;
mod terminal;
mod track;
mod watch;
