//! `corralctl top`: every process, refreshed each second, in a full-screen
//! ratatui table with per-workspace totals; keys sort it and act on the
//! selected process (stop, restart, logs) or its workspace (freeze). Not
//! a terminal: the same rows printed once as a plain table. Actions run
//! as tasks so a slow Stop never freezes the screen; their outcome shows
//! in the status line.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use tokio::sync::mpsc;
use zbus::Connection;

use super::error::{Bus, CliError, Result};
use super::format::{format_opt_bytes, render_table, sanitize, Align};
use crate::api::{self, cpu_percent_known, Filter, ManagerProxy, ProcessProxy, ProcessView, UNSET};

const REFRESH: Duration = Duration::from_secs(1);
const KEYS: &str =
    "q quit  c/m/n sort cpu/mem/name  ↑↓ select  s stop  r restart  l logs  f freeze workspace";

#[derive(Clone, Copy, PartialEq)]
enum Sort {
    Cpu,
    Memory,
    Name,
}

/// One row of the view.
struct Line {
    view: ProcessView,
    health: Option<String>,
}

async fn fetch(manager: &ManagerProxy<'_>, sort: Sort) -> zbus::Result<Vec<Line>> {
    let records = manager.list(Filter::default().to_dict()).await?;
    let mut lines: Vec<Line> = records
        .into_iter()
        .map(|d| {
            let (health, _) = api::metrics::extras(|k| d.get(k).map(|v| &**v));
            Line {
                view: ProcessView::from_dict(d),
                health,
            }
        })
        .collect();
    let cpu = |l: &Line| {
        if cpu_percent_known(&l.view) {
            l.view.cpu_percent
        } else {
            -1.0
        }
    };
    let mem = |l: &Line| {
        if l.view.state.is_active() && l.view.memory_current != UNSET {
            l.view.memory_current
        } else {
            0
        }
    };
    match sort {
        Sort::Cpu => lines.sort_by(|a, b| {
            cpu(b)
                .total_cmp(&cpu(a))
                .then(a.view.name.cmp(&b.view.name))
        }),
        Sort::Memory => {
            lines.sort_by(|a, b| mem(b).cmp(&mem(a)).then(a.view.name.cmp(&b.view.name)))
        }
        Sort::Name => lines.sort_by(|a, b| {
            a.view
                .name
                .cmp(&b.view.name)
                .then(a.view.id.cmp(&b.view.id))
        }),
    }
    Ok(lines)
}

const HEADER: [&str; 8] = [
    "ID",
    "NAME",
    "WORKSPACE",
    "STATE",
    "HEALTH",
    "CPU%",
    "MEM",
    "TASKS",
];

fn cells(l: &Line) -> Vec<String> {
    let v = &l.view;
    let active = v.state.is_active();
    vec![
        v.id.clone(),
        sanitize(&v.name),
        sanitize(&v.workspace),
        v.state.as_str().to_string(),
        l.health.clone().unwrap_or_else(|| "-".into()),
        if cpu_percent_known(v) {
            format!("{:.1}", v.cpu_percent)
        } else {
            "-".into()
        },
        if active {
            format_opt_bytes(v.memory_current)
        } else {
            "-".into()
        },
        if active && v.tasks_current != UNSET {
            v.tasks_current.to_string()
        } else {
            "-".into()
        },
    ]
}

/// Per-workspace totals of running processes: (name, count, cpu %, memory).
fn totals(lines: &[Line]) -> Vec<Vec<String>> {
    let mut ws: BTreeMap<&str, (u32, f64, u64)> = BTreeMap::new();
    for l in lines {
        let t = ws.entry(l.view.workspace.as_str()).or_default();
        if l.view.state.is_active() {
            t.0 += 1;
            if cpu_percent_known(&l.view) {
                t.1 += l.view.cpu_percent;
            }
            if l.view.memory_current != UNSET {
                t.2 += l.view.memory_current;
            }
        }
    }
    ws.into_iter()
        .map(|(name, (n, cpu, mem))| {
            vec![
                sanitize(name),
                format!("{n} active"),
                format!("{cpu:.1}%"),
                format_opt_bytes(mem),
            ]
        })
        .collect()
}

/// Entry point: the screen on a terminal, else one plain table.
pub async fn run(conn: &Connection, manager: &ManagerProxy<'static>, bus: Bus) -> Result<()> {
    let call_err = |e| CliError::from_call(bus, e);
    if !std::io::stdout().is_terminal() {
        let lines = fetch(manager, Sort::Cpu).await.map_err(call_err)?;
        let rows: Vec<Vec<String>> = lines.iter().map(cells).collect();
        let mut text = render_table(
            Some(&HEADER),
            &rows,
            &[
                Align::Right,
                Align::Left,
                Align::Left,
                Align::Left,
                Align::Left,
                Align::Right,
                Align::Right,
                Align::Right,
            ],
        );
        text.push('\n');
        text.push_str(&render_table(
            Some(&["WORKSPACE", "PROCESSES", "CPU%", "MEM"]),
            &totals(&lines),
            &[Align::Left, Align::Right, Align::Right, Align::Right],
        ));
        print!("{text}");
        return Ok(());
    }
    let mut terminal = ratatui::init();
    let outcome = screen(&mut terminal, conn, manager).await;
    ratatui::restore();
    outcome.map_err(call_err)
}

/// What an action sent back for the status line.
type Note = String;

async fn screen(
    terminal: &mut ratatui::DefaultTerminal,
    conn: &Connection,
    manager: &ManagerProxy<'static>,
) -> zbus::Result<()> {
    let mut sort = Sort::Cpu;
    let mut table = TableState::default().with_selected(Some(0));
    let (notes_tx, mut notes) = mpsc::unbounded_channel::<Note>();
    let mut status = String::from(KEYS);
    let mut logs: Option<(String, Vec<String>)> = None;
    let mut lines = fetch(manager, sort).await?;
    let mut fetched = Instant::now();
    loop {
        while let Ok(n) = notes.try_recv() {
            status = n;
        }
        let selected = table.selected().and_then(|i| lines.get(i));
        terminal
            .draw(|f| {
                let ws_rows = totals(&lines);
                let logs_height = if logs.is_some() { 8 } else { 0 };
                let [main, ws_area, logs_area, status_area] = Layout::vertical([
                    Constraint::Min(3),
                    Constraint::Length(ws_rows.len() as u16 + 3),
                    Constraint::Length(logs_height),
                    Constraint::Length(1),
                ])
                .areas(f.area());
                let sort_name = match sort {
                    Sort::Cpu => "cpu",
                    Sort::Memory => "memory",
                    Sort::Name => "name",
                };
                let widths = [4, 20, 12, 10, 9, 7, 9, 6].map(Constraint::Length);
                let rows = lines.iter().map(|l| Row::new(cells(l)));
                let t = Table::new(rows, widths)
                    .header(Row::new(HEADER).style(Style::new().add_modifier(Modifier::BOLD)))
                    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
                    .block(Block::bordered().title(format!(
                        " corral top — {} processes, sorted by {sort_name} ",
                        lines.len()
                    )));
                f.render_stateful_widget(t, main, &mut table);
                let ws = Table::new(
                    ws_rows.into_iter().map(Row::new),
                    [20, 12, 9, 9].map(Constraint::Length),
                )
                .header(
                    Row::new(["WORKSPACE", "PROCESSES", "CPU%", "MEM"])
                        .style(Style::new().add_modifier(Modifier::BOLD)),
                )
                .block(Block::bordered().title(" workspaces "));
                f.render_widget(ws, ws_area);
                if let Some((title, text)) = &logs {
                    let p = Paragraph::new(text.join("\n"))
                        .block(Block::bordered().title(format!(" logs of {title} ")));
                    f.render_widget(p, logs_area);
                }
                f.render_widget(Paragraph::new(status.as_str()), status_area);
            })
            .map_err(|e| zbus::Error::Failure(e.to_string()))?;
        // Blocking is fine here: nothing else runs on this thread while we wait.
        let wait = REFRESH
            .saturating_sub(fetched.elapsed())
            .min(Duration::from_millis(200));
        if event::poll(wait).map_err(|e| zbus::Error::Failure(e.to_string()))? {
            if let Event::Key(k) = event::read().map_err(|e| zbus::Error::Failure(e.to_string()))? {
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                let target = selected.map(|l| {
                    (
                        l.view.id.clone(),
                        l.view.name.clone(),
                        l.view.workspace.clone(),
                    )
                });
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') => sort = Sort::Cpu,
                    KeyCode::Char('m') => sort = Sort::Memory,
                    KeyCode::Char('n') => sort = Sort::Name,
                    KeyCode::Down => table.select_next(),
                    KeyCode::Up => table.select_previous(),
                    KeyCode::Char(c @ ('s' | 'r')) => {
                        if let Some((id, name, _)) = target {
                            status = format!(
                                "{} {id} ({name})…",
                                if c == 's' { "stopping" } else { "restarting" }
                            );
                            act(conn.clone(), id, c == 's', notes_tx.clone());
                        }
                    }
                    KeyCode::Char('f') => {
                        if let Some((_, _, ws)) = target {
                            status = format!("freezing workspace {ws}…");
                            freeze(conn.clone(), ws, notes_tx.clone());
                        }
                    }
                    KeyCode::Char('l') => match (&logs, target) {
                        (Some(_), _) | (None, None) => logs = None,
                        (None, Some((id, name, _))) => {
                            let rows = manager.logs(&id, 6, 0).await.unwrap_or_default();
                            logs = Some((
                                format!("{id} ({name})"),
                                rows.into_iter().map(|r| sanitize(&r.2)).collect(),
                            ));
                        }
                    },
                    _ => {}
                }
                if matches!(k.code, KeyCode::Char('c' | 'm' | 'n')) {
                    lines = fetch(manager, sort).await?;
                    fetched = Instant::now();
                }
            }
        }
        if fetched.elapsed() >= REFRESH {
            lines = fetch(manager, sort).await?;
            fetched = Instant::now();
        }
    }
}

/// Stops or restarts `id` in the background.
fn act(conn: Connection, id: String, stop: bool, notes: mpsc::UnboundedSender<Note>) {
    tokio::spawn(async move {
        let done = async {
            let p = ProcessProxy::builder(&conn)
                .path(api::process_path(&id))?
                .build()
                .await?;
            if stop {
                p.stop().await
            } else {
                p.restart().await
            }
        };
        let what = if stop { "stop" } else { "restart" };
        let _ = notes.send(match done.await {
            Ok(()) => format!("{what} {id}: done"),
            Err(e) => format!("{what} {id}: {e}"),
        });
    });
}

/// A workspace's object path element: bytes other than `[A-Za-z0-9]` as
/// `_xx` (hex), the escaping systemd uses for bus paths.
fn escape_path(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect()
}

/// Calls `Workspace.Freeze` (served by agents that have workspace objects).
fn freeze(conn: Connection, workspace: String, notes: mpsc::UnboundedSender<Note>) {
    tokio::spawn(async move {
        let path = format!(
            "{}/workspace/{}",
            api::MANAGER_PATH,
            escape_path(&workspace)
        );
        let r = conn
            .call_method(
                Some(api::BUS_NAME),
                path.as_str(),
                Some("org.corral.Supervisor1.Workspace"),
                "Freeze",
                &(),
            )
            .await;
        let _ = notes.send(match r {
            Ok(_) => format!("workspace {workspace}: frozen"),
            Err(e) => format!("freeze {workspace}: {e}"),
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths_are_escaped() {
        assert_eq!(escape_path("shop"), "shop");
        assert_eq!(escape_path("my-app.2"), "my_2dapp_2e2");
        assert_eq!(escape_path(""), "_");
    }
}
