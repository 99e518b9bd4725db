//! Wall-clock time as corral records it everywhere (store rows, log
//! lines, exit records, the CLI's "ago"): microseconds since the Unix
//! epoch. Plain std, so the shim can link it without tokio or zbus.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch; 0 if the clock is before it.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
