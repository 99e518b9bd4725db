//! The health-check contract: the `HealthCheck` start spec key (an
//! `a{sv}`: `Type`, `Command`, `Address`, `IntervalMs`, `TimeoutMs`,
//! `StartPeriodMs`, `Retries`, `OnUnhealthy`), its checks and defaults,
//! and the `HealthResults` entries (`a(tbs)`: time in µs since the epoch,
//! passed, message). How probes run is the agent's business.

use std::collections::HashMap;

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
}

/// Bounds: a probe at least every 100 ms, at most every day.
const MIN_INTERVAL_MS: u64 = 100;
const MAX_MS: u64 = 86_400_000;

impl HealthCheck {
    /// Decodes and checks the `HealthCheck` dictionary. Defaults:
    /// interval 1 s, timeout 1 s, no start period, 3 retries, `none`.
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
        let check = HealthCheck {
            kind,
            command: take(&mut d, "Command", "as")?.unwrap_or_default(),
            address: take(&mut d, "Address", "s")?.unwrap_or_default(),
            interval_ms: take(&mut d, "IntervalMs", "t")?.unwrap_or(1000),
            timeout_ms: take(&mut d, "TimeoutMs", "t")?.unwrap_or(1000),
            start_period_ms: take(&mut d, "StartPeriodMs", "t")?.unwrap_or(0),
            retries: take(&mut d, "Retries", "u")?.unwrap_or(3),
            on_unhealthy,
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
        if self.command.len() > super::MAX_ARGS || self.address.len() > super::MAX_PATH_LEN {
            return Err("HealthCheck: Command or Address too long".into());
        }
        if self
            .command
            .iter()
            .chain([&self.address])
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
        };
        assert_eq!(HealthCheck::from_dict(owned(c.to_dict())).unwrap(), c);
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
    }
}
