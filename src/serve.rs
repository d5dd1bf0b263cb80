//! The HTTP server loop: axum's `serve`, with the limits a server facing the internet needs
//! on the connection itself, which `axum::serve` does not take.
//!
//! - **Slow headers** (slowloris): a connection that has not sent a request's headers within
//!   `server.header_read_timeout_ms` is closed (hyper's `header_read_timeout`, which applies
//!   to every request of a kept-alive connection), and so is one that sends nothing at all
//!   in that time; HTTP/2 connections are pinged every 20 s, and one that starts no request
//!   (no stream) for `server.header_read_timeout_ms` is shut down gracefully, as hyper does
//!   not time out an idle HTTP/2 connection whose peer answers pings (`idle`).
//! - **Slow bodies**: a request body not read in full within `server.body_read_timeout_ms`
//!   fails (`transport::request::BodyWithDeadline`, a total deadline, in `transport::router`): 408.
//! - **Too many connections**: at most `server.max_connections` at once; beyond, new
//!   connections wait in the kernel's accept queue until one closes.
//!
//! Shutdown is axum's: on the signal, accepting stops and every connection finishes its
//! request in flight and closes; upgraded connections (websockets, which hyper hands off)
//! are the transport's to close.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// How often an HTTP/2 connection is pinged, and how long its answer may take.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);

/// The connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for the connections'
/// requests in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropped to tell the connections to shut down; each holds a receiver until it is done.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                // Never closed: nothing to serve with if it were.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The peer's address, where `ConnectInfo` extractors look (rate limits).
        let started = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&started);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |request: hyper::Request<Incoming>| {
                counted.fetch_add(1, Ordering::Relaxed);
                let mut request = request.map(Body::new);
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                request
            },
        ));
        let mut stop = stop_rx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            // A connection that sends nothing at all is closed too: hyper's header timeout
            // starts only once it has seen the first bytes.
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first));
            if !matches!(peeked.await, Ok(Ok(n)) if n > 0) {
                drop((slot, done));
                return;
            }
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            // HTTP/2: pings find peers that went away.
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(H2_KEEPALIVE))
                .keep_alive_timeout(H2_KEEPALIVE);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                () = idle(&started, limits.header_read_timeout) => {
                    // Requests in flight finish; no new one starts.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            drop((slot, done));
        });
    }
    drop(stop_tx);
    drop(listener);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// Completes once a whole `timeout` went by in which the connection started no request
/// (`started` counts them).
async fn idle(started: &AtomicU64, timeout: Duration) {
    let mut seen = 0;
    loop {
        tokio::time::sleep(timeout).await;
        let now = started.load(Ordering::Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}
