//! The HTTP/WebSocket listener: what `axum::serve` does, plus the bounds a public listener needs before any
//! request has shown a key.
//!
//! ```text
//!  accept ─▶ caps: TCP connections agent-wide and per client IP ─ over ─▶ closed at once (counted)
//!         ─▶ task: hyper (HTTP/1.1 + h2c)
//!              ├─ the door's `Immediate` answers what it can from the head alone (no router, no future)
//!              ├─ everything else: PeerAddr into the request's extensions ─▶ axum's router
//!              ├─ header-read timeout (hyper's timer): a request head must arrive within it
//!              └─ watchdog: no request in flight and no byte either way for the keep-alive timeout ─▶ closed
//!  shutdown ─▶ stop accepting; open connections finish their requests (graceful)
//! ```
//! A WebSocket leaves this accounting once upgraded; from then on the agent's long-lived connection caps
//! (`--max-connections`, per key, unauthenticated per IP) bound it.
use axum::Router;
use futures::future::Either;
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

/// What a door answers from a request's head alone, on the spot: `None` sends the request on to the router.
///
/// For the few routes that need no body and wait on nothing (`GET /healthz`, `GET /v1/models`): the router's
/// path match, its boxed handler future and the request body's boxing were ~0.4 us of user CPU per request, about
/// a quarter of what the agent spent on `/healthz` (issue 15, item 2). The router keeps the same routes, calling
/// the same functions, for every method and form this does not take.
pub type Immediate = Arc<dyn Fn(&Head<'_>) -> Option<axum::response::Response> + Send + Sync>;

/// The part of a request an [`Immediate`] answer may depend on.
pub struct Head<'a> {
    pub method: &'a axum::http::Method,
    pub uri: &'a axum::http::Uri,
    pub headers: &'a axum::http::HeaderMap,
    /// The client certificate the connection's TLS handshake verified (mutual TLS).
    pub client_cert: Option<&'a Arc<infergate_gate::admission::ClientCert>>,
}

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
struct Activity {
    /// The kernel's coarse monotonic clock at the last read or write, in milliseconds.
    last_io_ms: AtomicU64,
    in_flight: AtomicUsize,
}

/// The coarse monotonic clock (one kernel tick, 1-10 ms): every read and write of every connection stamps it, and
/// a precise clock read there was two vDSO calls per request for a timeout counted in seconds.
fn now_ms() -> u64 {
    (infergate_gate::clock::monotonic_seconds() * 1000.0) as u64
}

impl Activity {
    fn new() -> Self {
        Activity { last_io_ms: AtomicU64::new(now_ms()), in_flight: AtomicUsize::new(0) }
    }
    fn touch(&self) {
        self.last_io_ms.store(now_ms(), Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_io_ms.load(Ordering::Relaxed)))
    }
}

/// hyper's HTTP/1 header-read deadline on the coarse clock, with no timer of its own.
///
/// hyper arms the deadline for every request head (keep-alive included) and drops it once the head is parsed.
/// With tokio's timer that was, per request, a precise clock read plus an insert into and a removal from the
/// timer wheel (~0.2 us of the agent's ~2 us of its own CPU per request, `perf` under `wrk`). Here a deadline is a
/// number: it is polled whenever hyper polls the connection, and the connection task's watchdog tick (`Conn::serve`,
/// at most a quarter of the header-read timeout apart) polls the connection, so an overdue head is refused at
/// most a tick late. This timer is only sound on connections served by `Conn::serve`, which nothing else uses.
struct HeadTimer;

/// A fixed point of both clocks, so hyper's `Instant`s convert to coarse milliseconds without a clock read.
fn clock_base() -> (Instant, u64) {
    static BASE: std::sync::OnceLock<(Instant, u64)> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| (Instant::now(), now_ms()))
}

/// Ready once the coarse clock reaches this many milliseconds; see [`HeadTimer`].
struct CoarseDeadline(u64);

impl std::future::Future for CoarseDeadline {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if now_ms() >= self.0 { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl hyper::rt::Sleep for CoarseDeadline {}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseDeadline(now_ms().saturating_add(duration.as_millis() as u64)))
    }
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let (instant, ms) = clock_base();
        Box::pin(CoarseDeadline(ms.saturating_add(deadline.saturating_duration_since(instant).as_millis() as u64)))
    }
    fn now(&self) -> Instant {
        let (instant, ms) = clock_base();
        instant + Duration::from_millis(now_ms().saturating_sub(ms))
    }
}

/// A TCP stream that records when it last moved a byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
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
    immediate: Immediate,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    peer: SocketAddr,
    activity: Arc<Activity>,
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
        let Conn { app, immediate, builder, limits, peer, activity, shutdown, client_cert } = self;
        let service = {
            let activity = Arc::clone(&activity);
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                // Answered before anything else is set up for it; never in flight past this call, so it needs no
                // in-flight count (the watchdog sees its bytes move).
                let head = Head {
                    method: request.method(),
                    uri: request.uri(),
                    headers: request.headers(),
                    client_cert: client_cert.as_ref(),
                };
                if let Some(response) = immediate(&head) {
                    return Either::Left(std::future::ready(Ok(response)));
                }
                request.extensions_mut().insert(PeerAddr(peer));
                if let Some(cert) = &client_cert {
                    request.extensions_mut().insert(Arc::clone(cert));
                }
                activity.in_flight.fetch_add(1, Ordering::AcqRel);
                let guard = InFlight(Arc::clone(&activity));
                let response = app.clone().oneshot(request.map(axum::body::Body::new));
                Either::Right(async move {
                    let response = response.await;
                    drop(guard);
                    response
                })
            })
        };
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        // The tick also drives hyper's header-read deadline (see `HeadTimer`): it must come well within that timeout.
        let shortest = limits.keep_alive_timeout.min(limits.header_read_timeout);
        let check_every = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut draining = false;
        loop {
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = tokio::time::sleep(check_every) => {
                    let idle = activity.in_flight.load(Ordering::Acquire) == 0
                        && activity.idle_for() >= limits.keep_alive_timeout;
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

/// Serves `app` on `listener` until `shutdown`, within `limits`, over TLS when `tls` is set; `immediate` answers
/// first what it can. `refused` counts connections closed at accept.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    immediate: Immediate,
    limits: ConnectionLimits,
    refused: prometheus::IntCounterVec,
    shutdown: Shutdown,
    tls: Option<Arc<super::tls::Tls>>,
) -> std::io::Result<()> {
    let counts = Arc::new(Counts { total: AtomicUsize::new(0), per_ip: Mutex::default() });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(HeadTimer).header_read_timeout(limits.header_read_timeout);
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
        let (app, immediate, builder, shutdown, tls) =
            (app.clone(), immediate.clone(), Arc::clone(&builder), shutdown.clone(), tls.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            let activity = Arc::new(Activity::new());
            let watched = Watched { inner: stream, activity: Arc::clone(&activity) };
            let mut conn = Conn { app, immediate, builder, limits, peer, activity, shutdown, client_cert: None };
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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer as _;

    fn ready(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> bool {
        sleep.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())).is_ready()
    }

    #[test]
    fn head_deadline_is_due_by_the_coarse_clock_and_only_then() {
        let timer = HeadTimer;
        // hyper arms the deadline as `now() + timeout` and polls it while the head is incomplete.
        let mut due = timer.sleep_until(timer.now() + Duration::from_millis(30));
        let mut later = timer.sleep_until(timer.now() + Duration::from_secs(60));
        assert!(!ready(&mut due) && !ready(&mut later));
        std::thread::sleep(Duration::from_millis(60));
        assert!(ready(&mut due), "a head overdue by a kernel tick or more is refused");
        assert!(!ready(&mut later));
        // The timer's `now` follows the precise clock to within a kernel tick (a few ms).
        let drift = Instant::now().saturating_duration_since(timer.now());
        assert!(drift < Duration::from_millis(50), "coarse now lags by {drift:?}");
        assert!(ready(&mut timer.sleep(Duration::ZERO)));
    }
}
