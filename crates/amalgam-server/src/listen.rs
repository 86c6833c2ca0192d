//! Listeners: the TLS accept loop that authenticates each connection and hands its member key
//! to the handlers, a plain loop for `--insecure` loopback development, and the metrics one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::http::Peer;

/// Bounds of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ListenLimits {
    /// Concurrent connections (handshakes included); more are closed at once.
    pub max_connections: usize,
    /// Concurrent connections from one peer IP address (handshakes included), so that one
    /// host cannot take every slot; more from that address are closed at once.
    pub max_per_ip: usize,
    /// Time allowed for the TLS handshake: short, because a slot is held before the peer is
    /// authenticated.
    pub handshake_timeout: Duration,
    /// Time allowed for a request's headers, counted from when the server starts waiting for
    /// them: on a kept-alive connection this is also the idle timeout between requests.
    pub header_timeout: Duration,
}

impl Default for ListenLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_per_ip: 16,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(15),
        }
    }
}

/// Open connections per peer IP address.
#[derive(Debug, Default, Clone)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection counted against its address; uncounted on drop.
struct IpSlot {
    table: PerIp,
    ip: IpAddr,
}

impl PerIp {
    fn take(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

async fn serve_conn<S>(io: S, router: Router, peer: Peer, limits: ListenLimits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(router.layer(Extension(peer)));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        tracing::debug!("connection ended: {e}");
    }
}

/// Serves `router` over mutual TLS on `listener` until the task is dropped. The member is
/// the key of the client certificate the TLS verifier accepted on this connection.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ListenLimits,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = PerIp::default();
    // Connection tasks live in this set: dropping the serving future ends them all.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, addr) = tokio::select! {
            a = listener.accept() => a?,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Some(ip_slot) = per_ip.take(addr.ip(), limits.max_per_ip) else {
            tracing::warn!(%addr, "per-address connection limit reached; closing");
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "connection limit reached; closing");
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _ip_slot = ip_slot;
            let stream =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%addr, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%addr, "TLS handshake timed out");
                        return;
                    }
                };
            let key = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| amalgam_net::tls::member_key_of_cert(c).ok());
            serve_conn(stream, router, Peer(key), limits).await;
        });
    }
}

/// Serves `router` over plain HTTP (loopback development, and the metrics listener): no
/// connection is attributed to a member.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    limits: ListenLimits,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => a?,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let router = router.clone();
        conns.spawn(async move {
            let _permit = permit;
            serve_conn(tcp, router, Peer(None), limits).await;
        });
    }
}
