//! Connection slots: one address cannot take them all, and a member elsewhere still gets in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amalgam_server::events::MemoryStore;
use amalgam_server::listen::ListenLimits;
use common::{Fixture, start_with};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    sock.connect(to).await.unwrap()
}

/// A member's TLS handshake and one `GET /v1/time` from `from`; the response's status line.
async fn member_time(
    cfg: rustls::ClientConfig,
    from: [u8; 4],
    to: SocketAddr,
) -> Result<String, String> {
    let tcp = connect_from(from, to).await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /v1/time HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot() {
    amalgam_net::install_crypto_provider();
    let fx = Fixture::new();
    let limits = ListenLimits {
        max_per_ip: 3,
        // Long enough that the idle handshakes below are still held when the member tries.
        handshake_timeout: Duration::from_secs(600),
        ..ListenLimits::default()
    };
    let run = start_with(&fx, Arc::new(MemoryStore::new()), limits)
        .await
        .unwrap();
    let cfg = run.tls_for(&fx.sites[0]);
    // Under the cap a member from 127.0.0.1 is served.
    assert_eq!(
        member_time(cfg.clone(), [127, 0, 0, 1], run.addr).await,
        Ok("HTTP/1.1 200 OK".into())
    );
    // The attacker opens the cap's worth of connections and never handshakes.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect_from([127, 0, 0, 1], run.addr).await);
    }
    // The next connection from that address is closed at once, even a member's.
    assert!(
        member_time(cfg.clone(), [127, 0, 0, 1], run.addr)
            .await
            .is_err()
    );
    // A member from another address still gets in.
    assert_eq!(
        member_time(cfg, [127, 0, 0, 2], run.addr).await,
        Ok("HTTP/1.1 200 OK".into())
    );
    drop(idle);
    run.stop().await;
}
