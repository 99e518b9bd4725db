//! The opt-in `/metrics` listener (`metrics_listen`): a few lines of HTTP/1
//! over tokio's `TcpListener`, answering `GET /metrics` with the text of
//! `api::metrics::render` and anything else with 404. No HTTP server crate:
//! one fixed GET route, bounded request heads and a connection cap are
//! all a scraper needs (README "History, top and metrics").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::api::metrics::{self, Metered};
use crate::api::Filter;
use crate::daemon::supervisor::{Access, Command, Handle};

/// Longest request head read; a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;

/// Binds `addr` (a startup error if that fails) and serves it until the
/// supervisor goes away.
pub async fn serve(addr: SocketAddr, handle: Handle) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &handle).await {
                            tracing::debug!("/metrics: {e}");
                        }
                        drop(permit);
                    });
                }
                Err(e) => tracing::warn!("/metrics accept: {e}"),
            }
        }
    });
    Ok(())
}

/// Reads the request head (up to its blank line) and answers it.
async fn answer(mut stream: TcpStream, handle: &Handle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next(), words.next());
    let path = path.map(|p| p.split(|&b| b == b'?').next().unwrap_or(p));
    let (status, kind, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => match text(handle).await {
            Some(body) => ("200 OK", metrics::CONTENT_TYPE, body),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "shutting down\n".into(),
            ),
        },
        _ => (
            "404 Not Found",
            "text/plain",
            "only GET /metrics is served here\n".into(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// Every process, as `corralctl metrics` prints them.
async fn text(handle: &Handle) -> Option<String> {
    let views = handle
        .ask(|reply| Command::List {
            filter: Filter::default(),
            access: Access::All,
            reply,
        })
        .await?;
    let metered: Vec<Metered> = views
        .into_iter()
        .map(|v| {
            let dict = v.to_dict();
            Metered::new(v, |k| dict.get(k))
        })
        .collect();
    Some(metrics::render(&metered))
}
