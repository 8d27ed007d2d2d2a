//! The agent's API on a Unix socket (mode 0600): one JSON request per line,
//! one JSON response per line. The agent's main loop answers; this module
//! only carries messages.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader},
    net::UnixListener,
    sync::{Semaphore, mpsc, oneshot},
};

pub mod live;
mod messages;
pub use messages::*;

/// The envelope of every answer: `data` is one of the answer types in
/// [`messages`], which [`ask`] reads back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(data: &impl Serialize) -> Self {
        match serde_json::to_value(data) {
            Ok(data) => Self {
                ok: true,
                error: None,
                data: Some(data),
            },
            Err(e) => Self::err(format!("encoding the answer: {e}")),
        }
    }
    pub fn err(e: impl std::fmt::Display) -> Self {
        Self {
            ok: false,
            error: Some(e.to_string()),
            data: None,
        }
    }
}

/// A request, where its answer goes, and for `lb trace` the stream its
/// lines go to.
pub type Call = (Request, oneshot::Sender<Response>, Option<Stream>);

/// A streaming client (`lb trace`): the agent sends it lines until it drops
/// the sender; the connection's end closes `lines`.
pub struct Stream {
    pub lines: mpsc::Sender<String>,
    /// The client's pid (SO_PEERCRED), named when a second trace is refused.
    pub pid: Option<u32>,
    /// Set when the client ends its side of the connection (Ctrl-C does):
    /// it asks for the end, and still reads the last line.
    pub stopped: Arc<std::sync::atomic::AtomicBool>,
}

/// Lines a stream buffers before the agent waits for the client.
const STREAM_LINES: usize = 1024;

/// Binds the socket (replacing a stale one) and forwards requests to `tx`.
pub fn serve(path: &Path, tx: mpsc::Sender<Call>) -> Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    ensure_no_agent(path)?;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of fds, say: accept fails again at once, so wait
                    // instead of spinning, and let the connections drain.
                    log::warn!("API socket: accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let tx = tx.clone();
            let slot = slots.clone().try_acquire_owned();
            tokio::spawn(async move {
                let pid = stream
                    .peer_cred()
                    .ok()
                    .and_then(|c| c.pid())
                    .map(|p| p as u32);
                let (rd, mut wr) = stream.into_split();
                let (resp, streamed) = match slot {
                    Ok(_slot) => answer(rd, &tx, pid).await,
                    Err(_) => (
                        Response::err(format!(
                            "the agent serves {MAX_CONNECTIONS} API connections at once; try again"
                        )),
                        None,
                    ),
                };
                let mut out = serde_json::to_string(&resp).unwrap_or_default();
                out.push('\n');
                let _ = tokio::time::timeout(REQUEST_TIME, wr.write_all(out.as_bytes())).await;
                if let Some((rd, lines)) = streamed
                    && resp.ok
                {
                    forward(rd, wr, lines).await;
                }
            });
        }
    }))
}

/// Connections served at once; past them a client is told so at once. A
/// CLI call holds one for a few milliseconds.
const MAX_CONNECTIONS: usize = 256;
/// The longest request line; every request lb sends is far shorter.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request (or read the answer).
const REQUEST_TIME: Duration = Duration::from_secs(5);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A streaming request's connection, once answered: its read half (whose
/// end means the client asks to stop), the agent's lines, and the flag
/// that tells the agent so.
type Streamed = (
    tokio::net::unix::OwnedReadHalf,
    (mpsc::Receiver<String>, Arc<std::sync::atomic::AtomicBool>),
);

/// Reads one request line from `rd` (bounded in size and time) and has the
/// agent answer it.
async fn answer(
    rd: tokio::net::unix::OwnedReadHalf,
    tx: &mpsc::Sender<Call>,
    pid: Option<u32>,
) -> (Response, Option<Streamed>) {
    let mut line = String::new();
    let mut limited = TokioBufReader::new(rd.take(MAX_REQUEST));
    match tokio::time::timeout(REQUEST_TIME, limited.read_line(&mut line)).await {
        Err(_) => {
            return (
                Response::err(format!("no request within {REQUEST_TIME:?}")),
                None,
            );
        }
        Ok(Err(e)) => return (Response::err(format!("bad request: {e}")), None),
        Ok(Ok(_)) if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST => {
            return (
                Response::err(format!("request longer than {MAX_REQUEST} bytes")),
                None,
            );
        }
        Ok(Ok(_)) => {}
    }
    let req = match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => req,
        Err(e) => return (Response::err(format!("bad request: {e}")), None),
    };
    let (stream, lines) = if matches!(req, Request::Trace(_)) {
        let (ltx, lrx) = mpsc::channel(STREAM_LINES);
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stream = Stream {
            lines: ltx,
            pid,
            stopped: stopped.clone(),
        };
        (Some(stream), Some((lrx, stopped)))
    } else {
        (None, None)
    };
    let (otx, orx) = oneshot::channel();
    if tx.send((req, otx, stream)).await.is_err() {
        return (Response::err("agent is shutting down"), None);
    }
    let resp = orx
        .await
        .unwrap_or_else(|_| Response::err("agent dropped the request"));
    let rd = limited.into_inner().into_inner();
    (resp, lines.map(|l| (rd, l)))
}

/// Sends the agent's lines to a streaming client until the agent ends the
/// stream (drops its sender) or a write fails (the client is gone; dropping
/// `lines` then tells the agent). The end of the client's side of the
/// connection (Ctrl-C shuts it down; a killed client closes it) sets
/// `stopped`, and the lines still flow until the agent's last one.
async fn forward(
    mut rd: tokio::net::unix::OwnedReadHalf,
    mut wr: tokio::net::unix::OwnedWriteHalf,
    (mut lines, stopped): (mpsc::Receiver<String>, Arc<std::sync::atomic::AtomicBool>),
) {
    let mut buf = [0u8; 256];
    let mut reading = true;
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(l) => {
                    if wr.write_all(l.as_bytes()).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            // Anything a client sends after its request is ignored.
            n = rd.read(&mut buf), if reading => {
                if matches!(n, Ok(0) | Err(_)) {
                    reading = false;
                    stopped.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    }
}

/// Fails if a live agent answers on `path`: two agents must never share a
/// socket (or, behind it, a pin directory).
pub fn ensure_no_agent(path: &Path) -> Result<()> {
    if UnixStream::connect(path).is_ok() {
        bail!(
            "another lb agent answers on {}; stop it or use another api.socket",
            path.display()
        );
    }
    Ok(())
}

/// The CLI side: one request, its answer read as `T`, or the agent's error
/// as ours.
pub fn ask<T: serde::de::DeserializeOwned>(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<T> {
    let resp = call(socket, req, timeout)?;
    if !resp.ok {
        bail!("{}", resp.error.unwrap_or_default());
    }
    serde_json::from_value(resp.data.unwrap_or_default())
        .context("unexpected answer from the agent (is it another version of lb?)")
}

/// The CLI side: one request, one response.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the agent at {} (is `lb run` running?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut resp = String::new();
    BufReader::new(s).read_line(&mut resp)?;
    serde_json::from_str(resp.trim()).context("bad response from the agent")
}
