//! The HTTP/WebSocket listener: what `axum::serve` does, plus the bounds a public listener needs before any
//! request has shown a key.
//!
//! ```text
//!  accept ─▶ caps: TCP connections agent-wide and per client IP ─ over ─▶ closed at once (counted)
//!         ─▶ task: hyper (HTTP/1.1 + h2c), PeerAddr in every request's extensions
//!              ├─ header-read timeout (hyper's timer): a request head must arrive within it
//!              └─ watchdog: no request in flight and no byte either way for the keep-alive timeout ─▶ closed
//!  shutdown ─▶ stop accepting; open connections finish their requests (graceful)
//! ```
//! A WebSocket leaves this accounting once upgraded; from then on the agent's long-lived connection caps
//! (`--max-connections`, per key, unauthenticated per IP) bound it.
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use infergate_runtime::shutdown::Shutdown;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

/// The client's address, in every request's extensions (the unauthenticated-WebSocket cap is per IP).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Bounds on connections that have not necessarily authenticated.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// A request head must arrive within this.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no traffic for this long is closed.
    pub keep_alive_timeout: Duration,
    /// Open TCP connections on this listener, all clients together.
    pub max_connections: usize,
    /// Open TCP connections from one client IP.
    pub max_connections_per_ip: u32,
}

/// Why a connection was closed at accept; the label of `infergate_http_connections_refused_total`.
fn refuse_reason(total_full: bool) -> &'static str {
    if total_full { "listener_full" } else { "per_ip_full" }
}

struct Counts {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

/// One accepted connection's place in [`Counts`]; dropping it gives the place back.
struct Admitted {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = self.counts.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Counts {
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ConnectionLimits) -> Result<Admitted, &'static str> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let total_full = self.total.load(Ordering::Acquire) >= limits.max_connections;
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if total_full || mine >= limits.max_connections_per_ip {
            return Err(refuse_reason(total_full));
        }
        per_ip.insert(ip, mine + 1);
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(Admitted { counts: Arc::clone(self), ip })
    }
}

/// When the connection last moved a byte, and how many of its requests are being answered.
#[derive(Default)]
struct Activity {
    /// Milliseconds since `origin` of the last read or write.
    last_io_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self, origin: Instant) {
        self.last_io_ms.store(origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self, origin: Instant) -> Duration {
        let now = origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_io_ms.load(Ordering::Relaxed)))
    }
}

/// A TCP stream that records when it last moved a byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    origin: Instant,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch(self.origin);
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(self.origin);
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request in flight until its response future finishes.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One accepted connection's serving context.
struct Conn {
    app: Router,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    peer: SocketAddr,
    activity: Arc<Activity>,
    origin: Instant,
    shutdown: Shutdown,
    /// The client certificate the TLS handshake verified (mutual TLS), put into every request's extensions.
    client_cert: Option<Arc<infergate_gate::admission::ClientCert>>,
}

impl Conn {
    /// Serves HTTP on `io` (plain or TLS) until the client leaves, the keep-alive watchdog closes it, or shutdown.
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn { app, builder, limits, peer, activity, origin, shutdown, client_cert } = self;
        let service = {
            let activity = Arc::clone(&activity);
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(PeerAddr(peer));
                if let Some(cert) = &client_cert {
                    request.extensions_mut().insert(Arc::clone(cert));
                }
                activity.in_flight.fetch_add(1, Ordering::AcqRel);
                let guard = InFlight(Arc::clone(&activity));
                let response = app.clone().oneshot(request.map(axum::body::Body::new));
                async move {
                    let response = response.await;
                    drop(guard);
                    response
                }
            })
        };
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let check_every = (limits.keep_alive_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut draining = false;
        loop {
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = tokio::time::sleep(check_every) => {
                    let idle = activity.in_flight.load(Ordering::Acquire) == 0
                        && activity.idle_for(origin) >= limits.keep_alive_timeout;
                    if idle {
                        // Nothing is being answered and nothing has moved: dropping the connection closes it.
                        return;
                    }
                }
                _ = shutdown.clone().wait(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, within `limits`, over TLS when `tls` is set. `refused` counts
/// connections closed at accept.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    refused: prometheus::IntCounterVec,
    shutdown: Shutdown,
    tls: Option<Arc<super::tls::Tls>>,
) -> std::io::Result<()> {
    let counts = Arc::new(Counts { total: AtomicUsize::new(0), per_ip: Mutex::default() });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait briefly rather than spin; the listener stays up.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.clone().wait() => return Ok(()),
        };
        let admitted = match counts.admit(peer.ip(), &limits) {
            Ok(admitted) => admitted,
            Err(reason) => {
                refused.with_label_values(&[reason]).inc();
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, builder, shutdown, tls) = (app.clone(), Arc::clone(&builder), shutdown.clone(), tls.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            let origin = Instant::now();
            let activity = Arc::new(Activity::default());
            let watched = Watched { inner: stream, activity: Arc::clone(&activity), origin };
            let mut conn = Conn { app, builder, limits, peer, activity, origin, shutdown, client_cert: None };
            match tls {
                None => conn.serve(watched).await,
                // The handshake gets the header-read timeout too: a client that stalls in it holds nothing longer.
                Some(tls) => {
                    // No valid certificate pair yet: nothing to handshake with, the connection is closed.
                    let Some(acceptor) = tls.http_acceptor() else { return };
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(watched)).await {
                        Ok(Ok(encrypted)) => {
                            conn.client_cert = super::tls::client_cert(encrypted.get_ref().1.peer_certificates());
                            conn.serve(encrypted).await
                        }
                        _ => {}
                    }
                }
            }
        });
    }
}
