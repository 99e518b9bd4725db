//! The usage history on the wire: one row per point of `History`, and the
//! bound on how many points one reply holds.

/// One point of a process's usage history: (time µs since epoch, CPU
/// percent of one CPU, memory bytes, tasks, IO bytes read, IO bytes
/// written). The CPU figure is `-1` and the others are [`super::UNSET`]
/// where the cgroup did not provide them. A point stands for the interval
/// from its time to the next point's: averages of CPU and memory, the
/// highest task count and IO counters (which count since the run began).
pub type HistoryRow = (u64, f64, u64, u64, u64, u64);

/// Most points one `History` reply holds: a longer range comes back in
/// wider steps (so a reply stays under ~100 KiB whatever the client asks).
pub const HISTORY_MAX_POINTS: u64 = 2000;
