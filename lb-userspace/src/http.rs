//! The agent's HTTP listener on `metrics.listen` (default `127.0.0.1:9100`),
//! served by hyper:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | the Prometheus scrape ([`metrics::render`]) |
//! | `GET /api/status` | the live view as JSON ([`api::live::Status`](crate::api::live::Status)) |
//! | `GET /` | the status page ([`live::html`]): one self-contained HTML file that polls `/api/status` |
//!
//! All read-only. The agent owns the BPF maps and the health state, so this
//! module reads neither: each request sends an [`Ask`] (with a oneshot
//! sender) over an mpsc channel and the agent's main loop answers it. The
//! collecting code so runs on the agent's own (current_thread) runtime and
//! needs to be neither `Send` nor `Sync`.
//!
//! Slow or hostile clients cannot starve a scrape: a client has
//! [`HEAD_TIMEOUT`] to send a request head of at most [`MAX_REQUEST_HEAD`]
//! bytes, a connection lives at most [`CONNECTION_LIFETIME`], and up to
//! [`MAX_CONNECTIONS`] are served at once, far more than the clients that
//! legitimately look (a Prometheus or two, a few browsers).
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
    task::JoinHandle,
    time::timeout,
};

use crate::{
    live,
    metrics::{self, Snapshot},
};

#[cfg(test)]
mod tests;

/// What a request asks the agent for; the agent answers on the sender.
#[derive(Debug)]
pub enum Ask {
    /// A scrape.
    Metrics(oneshot::Sender<Snapshot>),
    /// The status page's poll (and `lb top`'s, over the API socket).
    Status(oneshot::Sender<crate::api::live::Status>),
}

/// A client gets this long to send each request head. Real clients send it
/// in one packet; a client that trickles it is cut off.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(3);
/// A request head larger than this is refused (431): hyper's smallest
/// buffer, far above what a scraper or browser sends.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A connection (keep-alive included) is closed after this long, so a
/// client that reads its answer slowly holds its slot for a bounded time.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// How long a request waits for the agent's answer: Prometheus's default
/// scrape timeout.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// Binds `listen` and serves there, asking `ask` for each answer: see the
/// module docs for the agent's side. Must be called inside a tokio runtime
/// (any flavour); the returned task runs until aborted.
pub fn serve(listen: SocketAddr, ask: mpsc::Sender<Ask>) -> Result<JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(listen).with_context(|| {
        format!(
            "binding the metrics endpoint on {listen}; stop what holds the port or set another `metrics.listen`"
        )
    })?;
    serve_on(listener, ask)
}

/// As [`serve`], on a listener the caller bound (tests bind port 0 and read
/// the port back with `local_addr`).
pub fn serve_on(listener: std::net::TcpListener, ask: mpsc::Sender<Ask>) -> Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::try_current()
        .context("http::serve must be called inside a tokio runtime")?;
    let _entered = runtime.enter();
    listener
        .set_nonblocking(true)
        .context("making the metrics listener non-blocking")?;
    let listener = TcpListener::from_std(listener).context("registering the metrics listener")?;
    Ok(runtime.spawn(accept_loop(listener, ask)))
}

async fn accept_loop(listener: TcpListener, ask: mpsc::Sender<Ask>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let ask = ask.clone();
                tokio::spawn(async move {
                    connection(stream, ask).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of file descriptors, usually: back off instead of spinning.
                log::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, ask: mpsc::Sender<Ask>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let ask = ask.clone();
        async move { Ok::<_, Infallible>(respond(req.method(), req.uri().path(), &ask).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            // Finish the request in flight, if any, then close.
            conn.as_mut().graceful_shutdown();
            let _ = timeout(HEAD_TIMEOUT, conn).await;
        }
    }
}

type Reply = Response<Full<Bytes>>;

async fn respond(method: &Method, path: &str, ask: &mpsc::Sender<Ask>) -> Reply {
    let content_type = match path {
        "/metrics" => metrics::CONTENT_TYPE,
        "/api/status" => "application/json",
        "/" => "text/html; charset=utf-8",
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "not found; metrics are at /metrics, the status page at /, its data at /api/status\n",
            );
        }
    };
    // hyper leaves a HEAD answer's body out and keeps its Content-Length.
    if method != Method::GET && method != Method::HEAD {
        let mut reply = text(StatusCode::METHOD_NOT_ALLOWED, "");
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return reply;
    }
    let body = match path {
        "/metrics" => asked(ask, Ask::Metrics).await.map(|s| metrics::render(&s)),
        "/api/status" => asked(ask, Ask::Status)
            .await
            .map(|s| serde_json::to_string(&s).expect("a Status serializes")),
        _ => asked(ask, Ask::Status).await.map(|s| live::html::page(&s)),
    };
    match body {
        Ok(body) => {
            let mut reply = Response::new(Full::new(Bytes::from(body)));
            reply
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            reply
        }
        Err(why) => {
            log::warn!("metrics: {path} failed: {why}");
            text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n"))
        }
    }
}

/// Sends the agent the request `make` builds and waits for its answer.
async fn asked<T>(
    ask: &mpsc::Sender<Ask>,
    make: impl FnOnce(oneshot::Sender<T>) -> Ask,
) -> Result<T, &'static str> {
    let (tx, rx) = oneshot::channel();
    let answered = async {
        ask.send(make(tx))
            .await
            .map_err(|_| "the agent is shutting down")?;
        rx.await.map_err(|_| "the agent dropped the request")
    };
    timeout(AGENT_TIMEOUT, answered)
        .await
        .unwrap_or(Err("the agent did not answer within 10s"))
}

fn text(status: StatusCode, body: &str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_owned())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}
