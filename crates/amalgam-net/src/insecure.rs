//! `--insecure`: plain HTTP for loopback development.
//!
//! Decision (spec `service.md` §3.4): insecure mode authenticates nobody, so it serves only
//! `/healthz`, `/v1/time` and `/v1/status`; every member route answers 403
//! `server.insecure-mode`. Binds and URLs must be loopback.

use std::net::{IpAddr, SocketAddr};

/// A non-loopback address or URL given with `--insecure`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--insecure allows only loopback addresses; refused `{0}`")]
pub struct NotLoopback(pub String);

/// Refuses a non-loopback bind address.
pub fn require_loopback_bind(addr: &SocketAddr) -> Result<(), NotLoopback> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(NotLoopback(addr.to_string()))
    }
}

/// Refuses a URL whose host is not a loopback IP or `localhost`, or whose scheme is not http.
pub fn require_loopback_url(url: &str) -> Result<(), NotLoopback> {
    let refuse = || NotLoopback(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(refuse)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(refuse());
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(());
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(()),
        _ => Err(refuse()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(require_loopback_bind(&"127.0.0.1:0".parse().unwrap()).is_ok());
        assert!(require_loopback_bind(&"[::1]:80".parse().unwrap()).is_ok());
        assert!(require_loopback_bind(&"0.0.0.0:80".parse().unwrap()).is_err());
        assert!(require_loopback_url("http://127.0.0.1:8080/v1").is_ok());
        assert!(require_loopback_url("http://localhost:1").is_ok());
        assert!(require_loopback_url("http://[::1]:1/").is_ok());
        assert!(require_loopback_url("http://10.0.0.1:1/").is_err());
        assert!(require_loopback_url("http://127.0.0.1@evil.example/").is_err());
        assert!(require_loopback_url("https://127.0.0.1/").is_err());
        assert!(require_loopback_url("http://127.0.0.1.evil.example/").is_err());
    }
}
