//! Pure text helpers of `corralctl`: human units for bytes and durations,
//! local time, signal names, shell-style command quoting and column
//! alignment. Nothing here does I/O except reading the local time zone
//! (through libc), so every function is unit-testable.

use crate::api::UNSET;

/// Linux signal names without the `SIG` prefix, as kill(1) spells them.
const SIGNALS: [(&str, i32); 33] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Highest signal number on Linux (`SIGRTMAX`); real-time signals are
/// accepted by number only.
const SIGNAL_MAX: i32 = 64;

/// `TERM`, `SIGTERM`, `sigterm`, `15` → 15. Signal 0 is refused: it sends
/// nothing, so asking for it is almost certainly a mistake.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().filter(|n| (1..=SIGNAL_MAX).contains(n));
    }
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().find(|(n, _)| *n == bare).map(|&(_, v)| v)
}

/// 9 → `SIGKILL`; unknown numbers as `signal 42`.
pub fn signal_name(n: i32) -> String {
    // The first entry wins, so aliases (IOT, POLL) come after their main name.
    match SIGNALS.iter().find(|&&(_, v)| v == n) {
        Some((name, _)) => format!("SIG{name}"),
        None => format!("signal {n}"),
    }
}

/// Bytes with binary units and one decimal, as systemd prints them:
/// `512B`, `4.0K`, `12.3M`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    // 1023.96K would print as "1024.0K": move up before rounding does.
    while v >= 1023.95 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// A usage counter for display: `-` when the agent does not know it.
pub fn format_opt_bytes(n: u64) -> String {
    if n == UNSET {
        "-".into()
    } else {
        format_bytes(n)
    }
}

/// Whole seconds as the two most significant units: `45s`, `3m12s`,
/// `2h5m`, `3d4h`; a zero second unit is left out (`3m`, not `3m0s`).
pub fn format_duration(secs: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    for (i, &(size, name)) in units.iter().enumerate() {
        if secs >= size || size == 1 {
            let major = secs / size;
            let mut s = format!("{major}{name}");
            if let Some(&(next, next_name)) = units.get(i + 1) {
                let minor = (secs % size) / next;
                if minor > 0 {
                    s.push_str(&format!("{minor}{next_name}"));
                }
            }
            return s;
        }
    }
    format!("{secs}s")
}

/// CPU time: `850ms`, `12.345s`, then `3m12s` once it is a minute or more.
pub fn format_cpu_time(nsec: u64) -> String {
    if nsec == UNSET {
        return "-".into();
    }
    let ms = nsec / 1_000_000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    } else {
        format_duration(ms / 1000)
    }
}

/// How long ago `then_us` was, at `now_us` (both µs since the epoch):
/// `3m12s ago`, or `in 3s` for a time in the future (a pending restart).
pub fn format_relative(then_us: u64, now_us: u64) -> String {
    if then_us <= now_us {
        format!("{} ago", format_duration((now_us - then_us) / 1_000_000))
    } else {
        // Round up so a restart due in 0.4 s reads "in 1s", not "in 0s".
        format!(
            "in {}",
            format_duration((then_us - now_us).div_ceil(1_000_000))
        )
    }
}

/// Broken-down local time, the part of `libc::tm` we print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Local time of `secs` since the epoch, in the process's time zone (TZ or
/// /etc/localtime). None only for times libc cannot represent.
pub fn local_time(secs: u64) -> Option<LocalTime> {
    let t: libc::time_t = secs.try_into().ok()?;
    // SAFETY: an all-zero `tm` is a valid value (null tm_zone included);
    // localtime_r only reads `t` and writes `tm`, and it is the reentrant
    // variant, so no static buffer is shared.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return None;
    }
    let u = |v: libc::c_int| u32::try_from(v).unwrap_or(0);
    Some(LocalTime {
        year: tm.tm_year + 1900,
        month: u(tm.tm_mon + 1),
        day: u(tm.tm_mday),
        hour: u(tm.tm_hour),
        minute: u(tm.tm_min),
        second: u(tm.tm_sec),
    })
}

/// `2025-11-26 12:56:03`, with `.123` milliseconds when `millis` is given.
pub fn format_local(t: LocalTime, millis: Option<u32>) -> String {
    let mut s = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    if let Some(ms) = millis {
        s.push_str(&format!(".{ms:03}"));
    }
    s
}

/// A µs timestamp as local time to the second; `-` for 0 (never).
pub fn format_time_us(us: u64) -> String {
    if us == 0 {
        return "-".into();
    }
    match local_time(us / 1_000_000) {
        Some(t) => format_local(t, None),
        None => format!("@{}", us / 1_000_000),
    }
}

/// A µs timestamp as local time with milliseconds (events and log lines).
pub fn format_time_us_ms(us: u64) -> String {
    match local_time(us / 1_000_000) {
        Some(t) => format_local(t, Some(((us / 1000) % 1000) as u32)),
        None => format!("@{}", us / 1_000_000),
    }
}

/// Replaces control characters by escapes, so a newline or tab in a
/// command line or log field cannot break a table row apart.
pub fn sanitize(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// argv as a shell would need it typed: arguments with anything but
/// `[A-Za-z0-9_@%+=:,./-]` go in single quotes.
pub fn shell_join(argv: &[String]) -> String {
    let quote = |a: &String| -> String {
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
        if plain {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    sanitize(&argv.iter().map(quote).collect::<Vec<_>>().join(" "))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Aligns `rows` (and an optional header) in columns two spaces apart.
/// Widths count chars, not bytes, so a UTF-8 name does not shift the
/// columns after it (wide CJK glyphs still take two cells: a width table
/// would need a dependency for little gain). The last column is never
/// padded, so lines carry no trailing spaces.
pub fn render_table(header: Option<&[&str]>, rows: &[Vec<String>], align: &[Align]) -> String {
    let ncols = header
        .map(|h| h.len())
        .into_iter()
        .chain(rows.iter().map(Vec::len))
        .max()
        .unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    let all = header
        .map(|h| h.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .into_iter()
        .chain(rows.iter().cloned());
    let all: Vec<Vec<String>> = all.collect();
    for row in &all {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &all {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let last = i + 1 == row.len();
            let pad = widths[i].saturating_sub(cell.chars().count());
            let right = align.get(i) == Some(&Align::Right);
            if i > 0 {
                line.push_str("  ");
            }
            if right {
                line.push_str(&" ".repeat(pad));
            }
            line.push_str(cell);
            if !right && !last {
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(format_bytes(0), "0B");
        assert_eq!(format_bytes(1023), "1023B");
        assert_eq!(format_bytes(1024), "1.0K");
        assert_eq!(format_bytes(12_900_000), "12.3M");
        assert_eq!(format_bytes((1 << 20) - 1), "1.0M");
        assert_eq!(format_bytes(3 << 30), "3.0G");
        assert_eq!(format_bytes(u64::MAX - 1), "16.0E");
        assert_eq!(format_opt_bytes(UNSET), "-");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(192), "3m12s");
        assert_eq!(format_duration(180), "3m");
        assert_eq!(format_duration(2 * 3600 + 5 * 60 + 7), "2h5m");
        assert_eq!(format_duration(3 * 86400 + 4 * 3600), "3d4h");
        // No overflow at the top of the range.
        assert_eq!(
            format_duration(u64::MAX),
            format!("{}d7h", u64::MAX / 86400)
        );
        assert_eq!(format_cpu_time(850_000_000), "850ms");
        assert_eq!(format_cpu_time(12_345_000_000), "12.345s");
        assert_eq!(format_cpu_time(192_000_000_000), "3m12s");
        assert_eq!(format_cpu_time(UNSET), "-");
        assert_eq!(format_relative(1_000_000, 193_000_000), "3m12s ago");
        assert_eq!(format_relative(10_400_000, 10_000_000), "in 1s");
    }

    #[test]
    fn local_times() {
        let t = LocalTime {
            year: 2025,
            month: 1,
            day: 2,
            hour: 3,
            minute: 4,
            second: 5,
        };
        assert_eq!(format_local(t, None), "2025-01-02 03:04:05");
        assert_eq!(format_local(t, Some(7)), "2025-01-02 03:04:05.007");
        assert_eq!(format_time_us(0), "-");
        // Whatever the zone, the year of a mid-2020 instant is 2020.
        assert_eq!(local_time(1_593_000_000).map(|t| t.year), Some(2020));
        // Out of time_t's range: an answer, not a panic.
        assert_eq!(local_time(u64::MAX), None);
        assert_eq!(format_time_us_ms(u64::MAX), format_time_us_ms(u64::MAX));
    }

    #[test]
    fn signals() {
        for (s, n) in [
            ("TERM", 15),
            ("SIGTERM", 15),
            ("sigterm", 15),
            ("hup", 1),
            ("KILL", 9),
            ("9", 9),
            ("64", 64),
            (" INT ", 2),
            ("ABRT", 6),
        ] {
            assert_eq!(parse_signal(s), Some(n), "{s}");
        }
        for s in [
            "",
            "0",
            "65",
            "-1",
            "SIG",
            "TERMX",
            "99999999999999",
            "SIGSIGTERM",
        ] {
            assert_eq!(parse_signal(s), None, "{s}");
        }
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(6), "SIGABRT");
        assert_eq!(signal_name(29), "SIGIO");
        assert_eq!(signal_name(40), "signal 40");
    }

    #[test]
    fn quoting_and_sanitizing() {
        let argv: Vec<String> = ["npm", "run", "dev server", "it's", "", "a=b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_join(&argv),
            r#"npm run 'dev server' 'it'\''s' '' a=b"#
        );
        assert_eq!(sanitize("a\nb\tc"), r"a\nb\tc");
        assert_eq!(shell_join(&["echo".into(), "x\ny".into()]), r"echo 'x\ny'");
    }

    #[test]
    fn table_aligns_utf8_by_chars() {
        let rows = vec![
            vec![
                "1".to_string(),
                "café-größe".to_string(),
                "12".to_string(),
                "x".to_string(),
            ],
            vec![
                "22".to_string(),
                "web".to_string(),
                "3".to_string(),
                "sleep 9".to_string(),
            ],
        ];
        let out = render_table(
            Some(&["ID", "NAME", "PID", "COMMAND"]),
            &rows,
            &[Align::Left, Align::Left, Align::Right, Align::Left],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "ID  NAME        PID  COMMAND");
        assert_eq!(lines[1], "1   café-größe   12  x");
        assert_eq!(lines[2], "22  web           3  sleep 9");
        // Every column starts at the same char offset on every line.
        let col = |l: &str, pat: &str| l.find(pat).map(|b| l[..b].chars().count());
        assert_eq!(col(lines[0], "COMMAND"), col(lines[1], "x"));
        assert!(out.lines().all(|l| !l.ends_with(' ')));
    }
}
