//! The health-check contract: the `HealthCheck` start spec key (an
//! `a{sv}`: `Type`, `Command`, `Address`, `IntervalMs`, `TimeoutMs`,
//! `StartPeriodMs`, `Retries`, `OnUnhealthy`, and for `http`
//! `ExpectStatus` and `ExpectBody`), its checks and defaults,
//! and the `HealthResults` entries (`a(tbs)`: time in µs since the epoch,
//! passed, message). How probes run is the agent's business.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use zbus::zvariant::{OwnedValue, Value};

use super::lifecycle::{OnUnhealthy, ProbeKind};

/// How many results `HealthResults` keeps (newest last).
pub const HEALTH_RESULTS_KEPT: usize = 5;

/// One probe's outcome: (time µs, passed, message).
pub type HealthResult = (u64, bool, String);

/// A process's health check, as given and as stored with the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub kind: ProbeKind,
    /// `exec`: argv, run with the process's environment and directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `tcp`: `host:port`; `http`: an `http://` URL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub start_period_ms: u64,
    /// Consecutive failures that make the process unhealthy.
    pub retries: u32,
    pub on_unhealthy: OnUnhealthy,
    /// `http`: the statuses that pass; `None` is [`StatusRange::default`].
    /// Configs written before the key existed read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<StatusRange>,
    /// `http`: text the response body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
}

/// The longest `ExpectBody`: a marker to look for, not a document.
pub const MAX_EXPECT_BODY: usize = 4096;

/// The HTTP statuses an `http` probe accepts (`ExpectStatus`): one status
/// (`204`) or an inclusive range (`200-299`), within 100-599. Stored in
/// the config as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StatusRange {
    lo: u16,
    hi: u16,
}

impl StatusRange {
    pub fn contains(self, status: u16) -> bool {
        (self.lo..=self.hi).contains(&status)
    }
}

/// Success and redirects, what the probe accepted before `ExpectStatus`.
impl Default for StatusRange {
    fn default() -> Self {
        StatusRange { lo: 200, hi: 399 }
    }
}

impl FromStr for StatusRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let status = |t: &str| {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| format!("'{s}' is not a status in 100-599 or a range like 200-299"))
        };
        let (lo, hi) = match s.split_once('-') {
            Some((lo, hi)) => (status(lo)?, status(hi)?),
            None => (status(s)?, status(s)?),
        };
        if lo > hi {
            return Err(format!("'{s}': the range ends before it starts"));
        }
        Ok(StatusRange { lo, hi })
    }
}

impl TryFrom<String> for StatusRange {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<StatusRange> for String {
    fn from(r: StatusRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Bounds: a probe at least every 100 ms, at most every day.
const MIN_INTERVAL_MS: u64 = 100;
const MAX_MS: u64 = 86_400_000;

impl HealthCheck {
    /// Decodes and checks the `HealthCheck` dictionary. Defaults:
    /// interval 1 s, timeout 1 s, no start period, 3 retries, `none`,
    /// statuses 200-399, any body.
    pub fn from_dict(mut d: HashMap<String, OwnedValue>) -> Result<HealthCheck, String> {
        fn take<T: TryFrom<OwnedValue>>(
            d: &mut HashMap<String, OwnedValue>,
            key: &str,
            sig: &str,
        ) -> Result<Option<T>, String> {
            match d.remove(key) {
                None => Ok(None),
                Some(v) => T::try_from(v)
                    .map(Some)
                    .map_err(|_| format!("HealthCheck.{key}: expected D-Bus type '{sig}'")),
            }
        }
        let kind: String = take(&mut d, "Type", "s")?.ok_or("HealthCheck.Type: required")?;
        let kind = ProbeKind::parse(&kind).ok_or_else(|| {
            format!(
                "HealthCheck.Type: '{kind}' is not one of {}",
                ProbeKind::NAMES.join(", ")
            )
        })?;
        let on: Option<String> = take(&mut d, "OnUnhealthy", "s")?;
        let on_unhealthy = match on {
            None => OnUnhealthy::None,
            Some(s) => OnUnhealthy::parse(&s).ok_or_else(|| {
                format!(
                    "HealthCheck.OnUnhealthy: '{s}' is not one of {}",
                    OnUnhealthy::NAMES.join(", ")
                )
            })?,
        };
        let expect_status = take::<String>(&mut d, "ExpectStatus", "s")?
            .map(|s| {
                s.parse()
                    .map_err(|e| format!("HealthCheck.ExpectStatus: {e}"))
            })
            .transpose()?;
        let check = HealthCheck {
            kind,
            command: take(&mut d, "Command", "as")?.unwrap_or_default(),
            address: take(&mut d, "Address", "s")?.unwrap_or_default(),
            interval_ms: take(&mut d, "IntervalMs", "t")?.unwrap_or(1000),
            timeout_ms: take(&mut d, "TimeoutMs", "t")?.unwrap_or(1000),
            start_period_ms: take(&mut d, "StartPeriodMs", "t")?.unwrap_or(0),
            retries: take(&mut d, "Retries", "u")?.unwrap_or(3),
            on_unhealthy,
            expect_status,
            expect_body: take(&mut d, "ExpectBody", "s")?,
        };
        if let Some(k) = d.keys().next() {
            return Err(format!("HealthCheck: unknown key '{k}'"));
        }
        check.validate()?;
        Ok(check)
    }

    pub fn to_dict(&self) -> HashMap<String, Value<'static>> {
        let mut d: HashMap<String, Value<'static>> = HashMap::from([
            ("Type".into(), self.kind.as_str().into()),
            ("IntervalMs".into(), self.interval_ms.into()),
            ("TimeoutMs".into(), self.timeout_ms.into()),
            ("StartPeriodMs".into(), self.start_period_ms.into()),
            ("Retries".into(), self.retries.into()),
            ("OnUnhealthy".into(), self.on_unhealthy.as_str().into()),
        ]);
        if !self.command.is_empty() {
            d.insert("Command".into(), self.command.clone().into());
        }
        if !self.address.is_empty() {
            d.insert("Address".into(), self.address.clone().into());
        }
        if let Some(r) = self.expect_status {
            d.insert("ExpectStatus".into(), r.to_string().into());
        }
        if let Some(b) = &self.expect_body {
            d.insert("ExpectBody".into(), b.clone().into());
        }
        d
    }

    fn validate(&self) -> Result<(), String> {
        match self.kind {
            ProbeKind::Exec if self.command.is_empty() => {
                return Err("HealthCheck.Command: required for Type exec".into())
            }
            ProbeKind::Tcp | ProbeKind::Http if self.address.is_empty() => {
                return Err(format!(
                    "HealthCheck.Address: required for Type {}",
                    self.kind
                ))
            }
            ProbeKind::Http if !self.address.starts_with("http://") => {
                return Err(format!(
                    "HealthCheck.Address: '{}' is not an http:// URL (https is not supported)",
                    self.address
                ))
            }
            _ => {}
        }
        if self.kind != ProbeKind::Http {
            let only_http = [
                ("ExpectStatus", self.expect_status.is_some()),
                ("ExpectBody", self.expect_body.is_some()),
            ];
            if let Some((key, _)) = only_http.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "HealthCheck.{key}: only for Type http, not {}",
                    self.kind
                ));
            }
        }
        if let Some(b) = &self.expect_body {
            if b.is_empty() || b.len() > MAX_EXPECT_BODY {
                return Err(format!(
                    "HealthCheck.ExpectBody: must be 1 to {MAX_EXPECT_BODY} bytes, not {}",
                    b.len()
                ));
            }
        }
        if self.command.len() > super::MAX_ARGS || self.address.len() > super::MAX_PATH_LEN {
            return Err("HealthCheck: Command or Address too long".into());
        }
        if self
            .command
            .iter()
            .chain([&self.address])
            .chain(&self.expect_body)
            .any(|s| s.contains('\0'))
        {
            return Err("HealthCheck: contains a NUL byte".into());
        }
        if !(MIN_INTERVAL_MS..=MAX_MS).contains(&self.interval_ms) {
            return Err(format!(
                "HealthCheck.IntervalMs: {} is not in [{MIN_INTERVAL_MS}, {MAX_MS}]",
                self.interval_ms
            ));
        }
        if !(1..=MAX_MS).contains(&self.timeout_ms) || self.start_period_ms > MAX_MS {
            return Err(format!(
                "HealthCheck.TimeoutMs / StartPeriodMs: out of (0, {MAX_MS}]"
            ));
        }
        if !(1..=1000).contains(&self.retries) {
            return Err("HealthCheck.Retries: must be in [1, 1000]".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(d: HashMap<String, Value<'static>>) -> HashMap<String, OwnedValue> {
        d.into_iter()
            .map(|(k, v)| (k, v.try_into_owned().unwrap()))
            .collect()
    }

    #[test]
    fn a_check_round_trips_and_bad_ones_are_named() {
        let c = HealthCheck {
            kind: ProbeKind::Http,
            command: vec![],
            address: "http://127.0.0.1:8000/".into(),
            interval_ms: 500,
            timeout_ms: 200,
            start_period_ms: 0,
            retries: 2,
            on_unhealthy: OnUnhealthy::Restart,
            expect_status: Some("200-299".parse().unwrap()),
            expect_body: Some("ok".into()),
        };
        assert_eq!(HealthCheck::from_dict(owned(c.to_dict())).unwrap(), c);
        let plain = HealthCheck {
            expect_status: None,
            expect_body: None,
            ..c.clone()
        };
        assert_eq!(
            HealthCheck::from_dict(owned(plain.to_dict())).unwrap(),
            plain
        );
        let bad = |pairs: Vec<(&str, Value<'static>)>, want: &str| {
            let d = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let e = HealthCheck::from_dict(owned(d)).unwrap_err();
            assert!(e.contains(want), "{e}");
        };
        bad(vec![("Type", "ping".into())], "Type");
        bad(vec![("Type", "exec".into())], "Command");
        bad(
            vec![("Type", "http".into()), ("Address", "https://x".into())],
            "http://",
        );
        bad(
            vec![
                ("Type", "tcp".into()),
                ("Address", "h:1".into()),
                ("Retries", 0u32.into()),
            ],
            "Retries",
        );
        bad(
            vec![
                ("Type", "tcp".into()),
                ("Address", "h:1".into()),
                ("IntervalMs", 5u64.into()),
            ],
            "IntervalMs",
        );
        bad(
            vec![
                ("Type", "tcp".into()),
                ("Address", "h:1".into()),
                ("Port", 5u64.into()),
            ],
            "unknown key",
        );
        bad(
            vec![("Type", "tcp".into()), ("Address", 5u32.into())],
            "'s'",
        );
        let http = |key: &'static str, v: Value<'static>| {
            vec![
                ("Type", "http".into()),
                ("Address", "http://h/".into()),
                (key, v),
            ]
        };
        for wrong in ["299-200", "99", "600", "2xx", "200-", ""] {
            bad(http("ExpectStatus", wrong.into()), "ExpectStatus");
        }
        bad(
            http("ExpectStatus", 200u32.into()),
            "ExpectStatus: expected",
        );
        bad(http("ExpectBody", "".into()), "ExpectBody");
        bad(http("ExpectBody", "x".repeat(4097).into()), "ExpectBody");
        bad(
            vec![
                ("Type", "tcp".into()),
                ("Address", "h:1".into()),
                ("ExpectStatus", "200-399".into()),
            ],
            "ExpectStatus: only for Type http",
        );
        bad(
            vec![
                ("Type", "exec".into()),
                ("Command", vec!["true"].into()),
                ("ExpectBody", "ok".into()),
            ],
            "ExpectBody: only for Type http",
        );
    }

    #[test]
    fn status_ranges_parse_and_show() {
        let r: StatusRange = "200-299".parse().unwrap();
        assert!(r.contains(200) && r.contains(299));
        assert!(!r.contains(199) && !r.contains(300));
        assert_eq!(r.to_string(), "200-299");
        let one: StatusRange = " 204 ".parse().unwrap();
        assert!(one.contains(204) && !one.contains(200));
        assert_eq!(one.to_string(), "204");
        assert_eq!(
            "100-599".parse::<StatusRange>().unwrap().to_string(),
            "100-599"
        );
        let d = StatusRange::default();
        assert!(d.contains(200) && d.contains(399) && !d.contains(400));
    }

    /// A check stored before `ExpectStatus`/`ExpectBody` existed still
    /// reads; a new one keeps them, as text.
    #[test]
    fn stored_checks_read_with_and_without_the_http_keys() {
        let old = r#"{"kind":"http","address":"http://h/","interval_ms":1000,
            "timeout_ms":1000,"start_period_ms":0,"retries":3,"on_unhealthy":"none"}"#;
        let c: HealthCheck = serde_json::from_str(old).unwrap();
        assert_eq!((c.expect_status, c.expect_body), (None, None));
        let new = HealthCheck {
            expect_status: Some("204".parse().unwrap()),
            expect_body: Some("ok".into()),
            ..c
        };
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains(r#""expect_status":"204""#), "{json}");
        assert_eq!(serde_json::from_str::<HealthCheck>(&json).unwrap(), new);
        let bad = json.replace(r#""204""#, r#""500-400""#);
        assert!(serde_json::from_str::<HealthCheck>(&bad).is_err());
    }
}
