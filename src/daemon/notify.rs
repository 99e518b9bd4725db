//! Desktop notifications (org.freedesktop.Notifications on the session
//! bus) when a process enters a crash loop, is OOM-killed, or fails for
//! good. A consumer of the supervisor's events, like the bus publisher:
//! it decides only what is worth a notification, never anything about the
//! process. Without a notification server on the bus the calls fail and
//! are logged at debug level; supervision is not affected.
//!
//! Each notification has a "Show logs" action (also its default, a click
//! on it): corrald runs `xdg-open` on the process's current log file, i.e.
//! the desktop opens it with its handler for plain text. The body names
//! `corralctl logs ID` for a terminal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use zbus::zvariant::Value;

use crate::api::{ExitReason, ProcessView, RestartMode, State};
use crate::daemon::supervisor::Event;
use crate::logfile::LOG_FILE;

/// The Desktop Notifications Specification, the two members corrald uses.
#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
trait Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, Value<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;

    #[zbus(signal)]
    fn action_invoked(&self, id: u32, action_key: &str) -> zbus::Result<()>;
}

/// `default` is what a click on the notification invokes; servers that
/// draw buttons show the label.
const ACTIONS: [&str; 2] = ["default", "Show logs"];

/// One notification to send.
#[derive(Debug, PartialEq)]
struct Alert {
    id: String,
    summary: String,
    body: String,
}

/// What corrald last notified per process (exit time and reason), so the
/// several events of one ending (ended, then restart scheduled) give one
/// notification.
#[derive(Default)]
struct Notified(HashMap<String, (u64, String)>);

impl Notified {
    /// The notification `event` deserves, if any.
    fn alert(&mut self, event: &Event) -> Option<Alert> {
        let view = match event {
            Event::Changed { view, .. } => view,
            Event::Removed(id) => {
                self.0.remove(id);
                return None;
            }
            Event::Added(_) | Event::HealthChanged { .. } => return None,
        };
        let what = trouble(view)?;
        let key = (view.exited_at, view.exit_reason.clone());
        if self.0.get(&view.id) == Some(&key) {
            return None;
        }
        self.0.insert(view.id.clone(), key);
        let workspace = if view.workspace.is_empty() {
            String::new()
        } else {
            format!(" in workspace {}", view.workspace)
        };
        Some(Alert {
            id: view.id.clone(),
            summary: format!("{} {what}", view.name),
            body: format!(
                "{}{workspace} (id {}): {what}.\nLogs: corralctl logs {}",
                view.name, view.id, view.id
            ),
        })
    }
}

/// Why a failed process is worth a notification: a crash loop or an OOM
/// kill always; any other failure only when its policy will not restart
/// it (a process that restarts either recovers or ends in a crash loop,
/// which is notified then).
fn trouble(view: &ProcessView) -> Option<String> {
    if view.state != State::Failed {
        return None;
    }
    match ExitReason::parse(&view.exit_reason) {
        Some(ExitReason::CrashLoop) => Some("is in a crash loop".into()),
        Some(ExitReason::OomKill) => Some("was killed: out of memory".into()),
        _ if RestartMode::parse(&view.restart_policy) != Some(RestartMode::No) => None,
        Some(ExitReason::SpawnFailed) => Some("could not start".into()),
        Some(ExitReason::Lost) => Some("was lost".into()),
        _ if view.exit_signal != 0 => Some(format!("failed: signal {}", view.exit_signal)),
        _ => Some(format!("failed: exit code {}", view.exit_code)),
    }
}

/// Sends the notifications `events` call for, and opens a process's log
/// when its notification's action is invoked.
pub async fn run(conn: zbus::Connection, logs_dir: PathBuf, mut events: UnboundedReceiver<Event>) {
    let proxy = match NotificationsProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("desktop notifications off: {e}");
            return;
        }
    };
    let mut invoked = match proxy.receive_action_invoked().await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!("not listening for notification actions: {e}");
            None
        }
    };
    let mut notified = Notified::default();
    // Notification id -> process id, for the actions of the notifications
    // still shown (the server forgets closed ones; so may we, lazily).
    let mut shown: HashMap<u32, String> = HashMap::new();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let Some(alert) = notified.alert(&event) else { continue };
                match send(&proxy, &alert).await {
                    Ok(n) => {
                        shown.insert(n, alert.id);
                    }
                    Err(e) => tracing::debug!("desktop notification not sent: {e}"),
                }
            }
            Some(signal) = next(&mut invoked) => {
                let Ok(args) = signal.args() else { continue };
                if let Some(id) = shown.remove(&args.id) {
                    open_log(&logs_dir, &id);
                }
            }
        }
    }
}

async fn next(stream: &mut Option<ActionInvokedStream>) -> Option<ActionInvoked> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn send(proxy: &NotificationsProxy<'_>, alert: &Alert) -> zbus::Result<u32> {
    // Urgency normal (1): the server's usual timeout, no sticky popup.
    let hints = HashMap::from([("urgency", Value::U8(1))]);
    proxy
        .notify(
            "corral",
            0,
            "dialog-warning",
            &alert.summary,
            &alert.body,
            &ACTIONS,
            hints,
            -1,
        )
        .await
}

/// Opens the current log file of process `id` with the desktop's handler.
fn open_log(logs_dir: &Path, id: &str) {
    let path = logs_dir.join(id).join(LOG_FILE);
    // kill_on_drop is off: tokio reaps the child once it exits.
    if let Err(e) = tokio::process::Command::new("xdg-open")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        tracing::warn!(
            "opening {} for a notification's action: xdg-open: {e}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: State, reason: ExitReason, policy: RestartMode, exited_at: u64) -> ProcessView {
        let mut v = ProcessView::from_dict(Default::default());
        v.id = "7".into();
        v.name = "web".into();
        v.workspace = "shop".into();
        v.state = state;
        v.exit_reason = reason.as_str().into();
        v.exit_code = 2;
        v.restart_policy = policy.as_str().into();
        v.exited_at = exited_at;
        v
    }

    fn changed(view: ProcessView) -> Event {
        Event::Changed {
            view,
            old: State::Running,
        }
    }

    /// A crash loop is many failures with a restart due and then the give
    /// up: only the give-up is notified, once, however many events say it.
    #[test]
    fn a_crash_loop_is_one_notification() {
        let mut n = Notified::default();
        for at in 1..5 {
            let failed = view(State::Failed, ExitReason::Exit, RestartMode::OnFailure, at);
            assert_eq!(n.alert(&changed(failed)), None);
        }
        let gave_up = view(
            State::Failed,
            ExitReason::CrashLoop,
            RestartMode::OnFailure,
            9,
        );
        let alert = n.alert(&changed(gave_up.clone())).unwrap();
        assert_eq!(alert.summary, "web is in a crash loop");
        assert_eq!(
            alert.body,
            "web in workspace shop (id 7): is in a crash loop.\nLogs: corralctl logs 7"
        );
        assert_eq!(n.alert(&changed(gave_up)), None);
    }

    #[test]
    fn oom_kills_and_final_failures_are_notified() {
        let mut n = Notified::default();
        let oom = view(State::Failed, ExitReason::OomKill, RestartMode::Always, 1);
        assert!(n
            .alert(&changed(oom))
            .unwrap()
            .summary
            .contains("out of memory"));
        let failed = view(State::Failed, ExitReason::Exit, RestartMode::No, 2);
        assert_eq!(
            n.alert(&changed(failed)).unwrap().summary,
            "web failed: exit code 2"
        );
        for quiet in [
            view(State::Exited, ExitReason::Exit, RestartMode::No, 3),
            view(State::Stopped, ExitReason::Stopped, RestartMode::No, 4),
            view(State::Running, ExitReason::Exit, RestartMode::No, 5),
        ] {
            assert_eq!(n.alert(&changed(quiet)), None);
        }
    }
}
