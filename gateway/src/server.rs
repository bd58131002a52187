//! The HTTP server loop: accepts TCP connections under a cap, serves HTTP/1.1 and HTTP/2 with a
//! header-read timeout, an idle timeout and a body-read deadline, hands every request its client
//! address (`ConnectInfo<SocketAddr>`), and shuts down gracefully. Routing and handlers do not go
//! here.
//!
//! It lives in the gateway library, not in the binary, so that the gateway's integration tests
//! serve through exactly this loop over real sockets (slow clients, idle connections, the cap).
//! `axum::serve` has none of these limits: one client holding connections open with partial
//! headers could exhaust the process's file descriptors.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::Service as _;

/// Limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Time a client has to send a request's headers once the server waits for them. hyper starts
    /// this timer whenever an HTTP/1.1 connection waits for its next request, so it also bounds
    /// the pause between two requests on a keep-alive connection.
    pub header_read_timeout: Duration,
    /// A connection on which no byte has moved in either direction for this long is shut down
    /// gracefully: a request in progress still completes, then the connection closes. This is what
    /// closes idle HTTP/2 connections; idle HTTP/1.1 ones are closed by the header timeout first
    /// when it is shorter.
    pub idle_timeout: Duration,
    /// Time a client has to send a whole request body, counted from the end of its headers.
    /// Exceeded → 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// Open client connections at most. When reached, new connections wait in the listen backlog
    /// until one closes (a WARN line says so, at most once a minute).
    pub max_connections: usize,
}

/// A slow client gets 10 s for its headers: a real client sends them in one packet.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// 75 s, nginx's keep-alive default: longer than the idle expiry of the common HTTP clients
/// (httpx 5 s, Node 5 s), so they close first and never reuse a connection we just closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// 60 s for a whole body: 32 MiB (the default body limit) at ~0.5 MB/s.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// 10,000 connections; lowered at start to what the process's file limit allows
/// ([`connection_cap`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// File descriptors kept for everything that is not a client connection: the log, spool and
/// read-store files, NATS, the listener, DNS.
const RESERVED_FDS: u64 = 256;
/// A client connection with a call in flight also holds one upstream connection.
const FDS_PER_CONNECTION: u64 = 2;
/// The cap's WARN line is repeated at most this often while connections keep hitting it.
const CAP_WARN_EVERY: Duration = Duration::from_secs(60);
/// Pause after a failed `accept` (out of file descriptors, …) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Raises the soft limit of open files to the hard limit and returns the soft limit in force
/// (`None` when it cannot be read, or is unlimited).
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current, limit.maximum);
    if soft != hard {
        match setrlimit(Resource::Nofile, Rlimit { current: hard, maximum: hard }) {
            Ok(()) => tracing::info!(from = ?soft, to = ?hard, "Open files limit raised to the hard limit."),
            Err(e) => tracing::warn!(error = %e, soft = ?soft, hard = ?hard, "Open files limit not raised."),
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The connection cap in force: `configured`, lowered so that the connections and their upstream
/// connections fit in `fd_limit` with a reserve ([`RESERVED_FDS`]); never below 1.
pub fn connection_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else { return configured.max(1) };
    let fit = usize::try_from(limit.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION).unwrap_or(usize::MAX);
    configured.min(fit).max(1)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets every open
/// request finish, and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let max = cfg.max_connections.clamp(1, Semaphore::MAX_PERMITS).min(u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(cfg.header_read_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let conn = Arc::new(ConnSettings { builder, idle: cfg.idle_timeout, body: cfg.body_read_timeout, app });
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_warn: Option<Instant> = None;
    let mut waits_since_warn = 0u64;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                waits_since_warn += 1;
                if last_warn.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY) {
                    tracing::warn!(
                        max_connections = max,
                        waits = waits_since_warn,
                        "Connection limit reached; new connections wait until one closes."
                    );
                    last_warn = Some(Instant::now());
                    waits_since_warn = 0;
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Nagle's algorithm would hold small SSE chunks back by up to 40 ms.
        let _ = tcp.set_nodelay(true);
        let conn = conn.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            conn.serve(tcp, remote, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it has closed.
    let _ = slots.acquire_many(max as u32).await;
    Ok(())
}

/// What every connection task shares.
struct ConnSettings {
    builder: Builder<TokioExecutor>,
    idle: Duration,
    body: Duration,
    app: Router,
}

impl ConnSettings {
    async fn serve(&self, tcp: TcpStream, remote: SocketAddr, mut stop: watch::Receiver<bool>) {
        let born = Instant::now();
        let activity = Arc::new(AtomicU64::new(0));
        let io = TokioIo::new(Watched { inner: tcp, born, last: activity.clone() });
        let (app, body_timeout) = (self.app.clone(), self.body);
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let deadline = tokio::time::Instant::now() + body_timeout;
            let mut req = req.map(|b| Body::new(DeadlineBody { inner: b, deadline, timer: None }));
            req.extensions_mut().insert(ConnectInfo(remote));
            app.clone().call(req)
        });
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut idle_check = born + self.idle;
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "Connection ended with an error.");
                    }
                    break;
                }
                changed = stop.changed(), if !closing => {
                    if changed.is_err() || *stop.borrow() {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                () = tokio::time::sleep_until(idle_check.into()), if !closing => {
                    let last = born + Duration::from_millis(activity.load(Ordering::Relaxed));
                    if last.elapsed() >= self.idle {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    } else {
                        idle_check = last + self.idle;
                    }
                }
            }
        }
    }
}

/// The socket, noting when a byte last moved (milliseconds since the connection was accepted).
/// One relaxed store per read or write: no lock, no allocation.
struct Watched {
    inner: TcpStream,
    born: Instant,
    last: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The request body was not complete by the body-read deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received in time")]
pub struct BodyReadTimeout;

/// A request body that fails with [`BodyReadTimeout`] once its deadline has passed. The timer is
/// only created when the body is not already all there, so a body that came with its headers
/// costs nothing.
struct DeadlineBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(axum::BoxError::from)));
        }
        let deadline = this.deadline;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_fits_the_file_limit_with_a_reserve() {
        assert_eq!(connection_cap(10_000, Some(1024)), (1024 - 256) / 2);
        assert_eq!(connection_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(10_000, None), 10_000);
        assert_eq!(connection_cap(10_000, Some(100)), 1);
    }
}
