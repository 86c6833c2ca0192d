//! `amalgam site doctor` through the binary against a real aggregator: a healthy site passes,
//! and each problem that can be provoked locally (key and state permissions, a manifest that
//! forks from the accepted epoch, nothing listening, another consortium's aggregator) is a
//! row with its fix, exit 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;

use amalgam_consortium::testing;
use common::server::{amalgam_env as amalgam, serve, setup, text_of as text};

fn doctor(d: &Path, url: &str) -> (Output, serde_json::Value) {
    let out = amalgam(
        d,
        &[
            "site",
            "doctor",
            "--manifest",
            "consortium.manifest",
            "--key",
            "site0/identity.key",
            "--state",
            "state",
            "--aggregator",
            url,
            "--format",
            "json",
        ],
        &[],
    );
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

/// The rows of `v` whose status is `problem`, as (check, detail, fix).
fn problems(v: &serde_json::Value) -> Vec<(String, String, String)> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "problem")
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("check"), s("detail"), s("fix"))
        })
        .collect()
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn site_doctor_passes_a_healthy_site_and_names_each_provoked_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d, 65);
    std::fs::create_dir(d.join("state")).unwrap();
    chmod(&d.join("state"), 0o700);
    let server = serve(d, "600");

    let (out, v) = doctor(d, &server.url);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(problems(&v), vec![]);
    let checks: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["check"].as_str().unwrap())
        .collect();
    for c in [
        "key file",
        "key directory",
        "state directory",
        "file system",
        "free space",
        "manifest",
        "aggregator",
        "pin",
        "clock",
        "ledger",
    ] {
        assert!(checks.contains(&c), "{c} missing from {checks:?}");
    }

    // A key file readable by others.
    chmod(&d.join("site0/identity.key"), 0o644);
    let (out, v) = doctor(d, &server.url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert!(
        p.iter()
            .any(|(c, _, fix)| c == "key file" && fix.starts_with("chmod 600")),
        "{p:?}"
    );
    chmod(&d.join("site0/identity.key"), 0o600);

    // A state directory open to the group.
    chmod(&d.join("state"), 0o750);
    let (out, v) = doctor(d, &server.url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert!(
        p.iter()
            .any(|(c, _, fix)| c == "state directory" && fix.starts_with("chmod 700")),
        "{p:?}"
    );
    chmod(&d.join("state"), 0o700);

    // A manifest that forks from the epoch this site accepted (same keys and epoch, other
    // content): the manifest row names it, and doctor does not move the mark.
    let forked = testing::consortium(65, 5, 0, 32);
    let hw = d.join("state/epoch.highwater");
    amalgam_consortium::EpochHighWater::accept(
        &hw,
        &forked.verified,
        &forked.sites[0].verifying_key(),
    )
    .unwrap();
    let before = std::fs::read(&hw).unwrap();
    let (out, v) = doctor(d, &server.url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert!(
        p.iter()
            .any(|(c, detail, _)| c == "manifest" && detail.contains("epoch")),
        "{p:?}"
    );
    assert_eq!(std::fs::read(&hw).unwrap(), before);
    std::fs::remove_file(&hw).unwrap();

    // Nothing listening at the address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (out, v) = doctor(d, &format!("https://127.0.0.1:{port}"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert!(
        p.iter()
            .any(|(c, _, fix)| c == "aggregator" && fix.contains("nothing listens")),
        "{p:?}"
    );

    // Another consortium's aggregator: reported as probable TLS interception.
    let other = tempfile::tempdir().unwrap();
    setup(other.path(), 66);
    let foreign = serve(other.path(), "600");
    let (out, v) = doctor(d, &foreign.url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert!(
        p.iter().any(|(c, detail, fix)| c == "pin"
            && detail.contains("probable TLS interception")
            && fix.contains("probable TLS interception")),
        "{p:?}"
    );

    // The text form prints the fix under the problem.
    chmod(&d.join("site0/identity.key"), 0o640);
    let out = amalgam(
        d,
        &[
            "site",
            "doctor",
            "--manifest",
            "consortium.manifest",
            "--key",
            "site0/identity.key",
            "--state",
            "state",
            "--aggregator",
            &server.url,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("problem") && t.contains("fix: chmod 600"), "{t}");
}

/// An aggregator stand-in: the pinned identity's TLS binding and the member verifier of the
/// real listener, serving only `/v1/time`, `offset_ms` off this host's clock.
fn skewed_time_server(
    rt: &tokio::runtime::Runtime,
    c: &testing::TestConsortium,
    offset_ms: i64,
) -> String {
    use amalgam_net::api::ServerTime;
    use amalgam_net::tls;
    use amalgam_server::consortium::ConsortiumView;
    use amalgam_server::listen::{ListenLimits, serve_tls};
    amalgam_net::install_crypto_provider();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let identity = tls::aggregator_identity(
        &c.verified.consortium_digest(),
        now.as_secs() + 86_400,
        |m| c.aggregator.sign(m).to_bytes(),
    )
    .unwrap();
    let config = tls::server_config(&identity, c.verified.member_keys()).unwrap();
    let skewed = (now.as_millis() as i64 + offset_ms) as u64;
    let router = axum::Router::new().route(
        amalgam_net::api::TIME,
        axum::routing::get(move || async move { axum::Json(ServerTime { unix_ms: skewed }) }),
    );
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_tls(listener, config, router, ListenLimits::default()));
        format!("https://{addr}")
    })
}

#[test]
fn an_aggregator_clock_an_hour_off_is_a_clock_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let c = setup(d, 69);
    std::fs::create_dir(d.join("state")).unwrap();
    chmod(&d.join("state"), 0o700);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = skewed_time_server(&rt, &c, 3_600_000);
    let (out, v) = doctor(d, &url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = problems(&v);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "clock");
    assert!(p[0].1.contains("behind the aggregator"), "{p:?}");
    // Two minutes off is within the bound.
    let url = skewed_time_server(&rt, &c, -120_000);
    let (out, v) = doctor(d, &url);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(problems(&v), vec![]);
}
