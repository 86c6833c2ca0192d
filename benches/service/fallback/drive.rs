//! The sites and the committee of a measured fallback round. Every site's upload is computed
//! before anything is measured ([`precompute`]); the load generator then submits them over
//! HTTPS in a shuffled order, at most `concurrency` at a time, each site on its own mutual-TLS
//! client ([`upload_all`]); the committee members (`amalgam_he::Decryptor` in this process,
//! each on its own client) fetch their views, admit every upload, sign the cohort statement
//! and release their piece sums ([`committee`]); one site reads the decoded sum ([`result`]).

use std::sync::Arc;
use std::time::Instant;

use amalgam_he::{
    CohortStatement, Decryptor, MemberRoundRecord, SiteRound, SiteRoundLog, StatementSignature,
    UploadView,
};
use amalgam_net::client::{ApiClient, RetryPolicy};
use amalgam_net::fallback_api::{FallbackResult, MAX_FRAMES, decode_frames, fallback_path};
use amalgam_net::tls::{self, AggregatorPin};
use amalgam_proto::SiteId;
use amalgam_proto::codec::{Decode, Encode};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::{FbDeployment, MEMBERS, MODEL, PIECE_THRESHOLD, ROUND};

/// Every site's upload, and the plaintext sum of their updates.
pub struct Precomputed {
    /// `uploads[i]`: site i's signed upload bytes.
    pub uploads: Vec<Vec<u8>>,
    /// Σ of the updates, per coordinate (what the decoded sum must equal).
    pub sum: Vec<u64>,
}

fn site_rng(seed: &[u8; 32], label: &[u8], i: usize) -> ChaCha20Rng {
    let mut h = Sha256::new();
    h.update(b"amalgam/v1/bench/fallback/rng/");
    h.update(label);
    h.update((i as u64).to_be_bytes());
    h.update(seed);
    ChaCha20Rng::from_seed(h.finalize().into())
}

/// Site `i`'s update: uniform values of the setup's input bits, from `input_seed`.
fn update(dep: &FbDeployment, input_seed: &[u8; 32], i: usize) -> Vec<u64> {
    let p = dep.setup.params();
    let mut rng = site_rng(input_seed, b"input", i);
    let shift = 64 - p.input_bits();
    (0..p.vector_len())
        .map(|_| rng.next_u64() >> shift)
        .collect()
}

/// One precompute thread's uploads (with their site indices) and partial sum.
type ThreadPart = (Vec<(usize, Vec<u8>)>, Vec<u64>);

/// Draws every site's round state and upload (spread over `threads` threads): each site's
/// update from `input_seed`, its per-round seed from its own generator.
pub fn precompute(dep: &FbDeployment, input_seed: &[u8; 32], threads: usize) -> Precomputed {
    let n = dep.n();
    let d = dep.setup.params().vector_len();
    let threads = threads.clamp(1, n);
    let per = n.div_ceil(threads);
    let parts: Vec<ThreadPart> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut sum = vec![0u64; d];
                    let mut out = Vec::new();
                    for i in (t * per)..((t + 1) * per).min(n) {
                        let x = update(dep, input_seed, i);
                        for (a, b) in sum.iter_mut().zip(&x) {
                            *a += b;
                        }
                        let mut log = SiteRoundLog::new();
                        let mut rng = site_rng(&dep.seed, b"round-seed", i);
                        let bytes = SiteRound::draw(&dep.setup, &mut log, MODEL, x, &mut rng)
                            .and_then(|sr| sr.upload(&dep.setup, SiteId(i as u16), &dep.sites[i]))
                            .map(|u| u.to_bytes())
                            .unwrap_or_else(|e| panic!("site {i}'s upload: {e}"));
                        out.push((i, bytes));
                    }
                    (out, sum)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("precompute thread")))
            .collect()
    });
    let mut uploads = vec![Vec::new(); n];
    let mut sum = vec![0u64; d];
    for (ups, part) in parts {
        for (i, b) in ups {
            uploads[i] = b;
        }
        for (a, b) in sum.iter_mut().zip(&part) {
            *a += b;
        }
    }
    Precomputed { uploads, sum }
}

/// `key`'s API client for `base`: its own client certificate, the pinned aggregator, one
/// attempt per request (a failure is a failed measurement, not something to retry).
pub fn client(dep: &FbDeployment, base: &str, key: &SigningKey) -> Result<ApiClient, String> {
    amalgam_net::install_crypto_provider();
    let pin = AggregatorPin {
        identity: dep.agg.verifying_key(),
        consortium_digest: dep.view.consortium_digest(),
    };
    let ident = tls::member_identity(&tls::ed25519_pkcs8_from_seed(&key.to_bytes()))
        .map_err(|e| e.to_string())?;
    let cfg = tls::client_config(&ident, pin).map_err(|e| e.to_string())?;
    let policy = RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    };
    ApiClient::new(base, cfg, policy).map_err(|e| e.to_string())
}

/// A Fisher–Yates shuffle of 0..n from the OS-seeded `seed`.
pub fn shuffled(n: usize, seed: &[u8; 32]) -> Vec<usize> {
    let mut rng = site_rng(seed, b"order", 0);
    let mut order: Vec<usize> = (0..n).collect();
    for k in (1..n).rev() {
        // The modulo bias is below 2^-50 for n ≤ 65,535: irrelevant to an ordering.
        let j = (rng.next_u64() % (k as u64 + 1)) as usize;
        order.swap(k, j);
    }
    order
}

/// Submits `uploads[i]` for each `i` of `order`, at most `concurrency` in flight, each site on
/// a fresh client of its own (so that every upload opens its own mutual-TLS connection).
/// Returns the seconds from the first request to the last response; any refusal fails.
pub async fn upload_all(
    dep: &Arc<FbDeployment>,
    base: &str,
    uploads: Vec<Vec<u8>>,
    order: &[usize],
    concurrency: usize,
) -> Result<f64, String> {
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut slots: Vec<Option<Vec<u8>>> = uploads.into_iter().map(Some).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for &i in order {
        let body = slots
            .get_mut(i)
            .and_then(Option::take)
            .ok_or(format!("no upload for site {i}"))?;
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (dep, base) = (dep.clone(), base.to_owned());
        tasks.spawn(async move {
            let _permit = permit;
            let c = client(&dep, &base, &dep.sites[i])?;
            let r = c
                .post(&fallback_path(ROUND, "upload"), body)
                .await
                .map_err(|e| format!("site {i}: {e}"))?;
            if r.status != 200 {
                return Err(format!("site {i}: {} {:?}", r.status, r.problem()));
            }
            Ok::<_, String>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(t0.elapsed().as_secs_f64())
}

async fn get_ok(c: &ApiClient, what: &str) -> Result<Vec<u8>, String> {
    let r = c
        .get(&(fallback_path(ROUND, what) + "?wait=60"))
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if r.status != 200 {
        return Err(format!("{what}: {} {:?}", r.status, r.problem()));
    }
    Ok(r.body)
}

async fn post_ok(c: &ApiClient, what: &str, body: Vec<u8>) -> Result<(), String> {
    let r = c
        .post(&fallback_path(ROUND, what), body)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if r.status != 200 {
        return Err(format!("{what}: {} {:?}", r.status, r.problem()));
    }
    Ok(())
}

struct Member {
    j: usize,
    d: Decryptor,
    client: ApiClient,
    statement: CohortStatement,
}

/// Member `j`: fetches its views, admits every upload (signature over the boxes and the
/// ciphertext digest, its own seed box opened) on the blocking pool, fetches and signs the
/// cohort statement.
async fn admit_and_sign(dep: Arc<FbDeployment>, base: String, j: usize) -> Result<Member, String> {
    let mut record = MemberRoundRecord::new();
    let mut d = Decryptor::new(dep.setup.clone(), j, dep.secrets(j), &mut record)
        .map_err(|e| format!("member {j}: {e}"))?;
    let client = client(&dep, &base, &dep.member_key(j))?;
    let views = get_ok(&client, "views").await?;
    let setup = dep.setup.clone();
    let mut d = tokio::task::spawn_blocking(move || {
        let frames = decode_frames(&views, MAX_FRAMES, 1 << 20).map_err(|e| e.to_string())?;
        for f in &frames {
            let v = UploadView::from_bytes(f, &setup, j).map_err(|e| e.to_string())?;
            d.admit(&v).map_err(|e| format!("member {j} admits: {e}"))?;
        }
        Ok::<_, String>(d)
    })
    .await
    .map_err(|e| e.to_string())??;
    let st = CohortStatement::from_bytes(&get_ok(&client, "statement").await?, &())
        .map_err(|e| format!("statement: {e}"))?;
    // A deployed member persists its record before the signature leaves; nothing here
    // restarts, so the pending snapshot is released unpersisted.
    let sig = d
        .sign(&st)
        .map_err(|e| format!("member {j} signs: {e}"))?
        .persisted();
    post_ok(&client, "signatures", sig.to_bytes()).await?;
    Ok(Member {
        j,
        d,
        client,
        statement: st,
    })
}

/// Member `m` releases its piece sums once the quorum's signatures are on the relay.
async fn release(m: &Member) -> Result<(), String> {
    let st = &m.statement;
    let body = get_ok(&m.client, "signatures").await?;
    let sigs: Vec<StatementSignature> = decode_frames(&body, MEMBERS, 4 + 1 + 64)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|b| StatementSignature::from_bytes(b, &()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let rel =
        m.d.release(st, &sigs)
            .map_err(|e| format!("member {} releases: {e}", m.j))?;
    post_ok(&m.client, "release", rel.to_bytes()).await
}

/// The whole committee, concurrently: every member admits and signs, then t_c members
/// release. Returns the seconds it took.
pub async fn committee(dep: &Arc<FbDeployment>, base: &str) -> Result<f64, String> {
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for j in 0..MEMBERS {
        tasks.spawn(admit_and_sign(dep.clone(), base.to_owned(), j));
    }
    let mut members = Vec::new();
    while let Some(done) = tasks.join_next().await {
        members.push(done.map_err(|e| e.to_string())??);
    }
    // Any t_c members hold every piece between them; the round ends with their releases (a
    // later one is refused: the round is over).
    members.sort_by_key(|m| m.j);
    for m in &members[..PIECE_THRESHOLD] {
        release(m).await?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Site 0 reads the decoded sum (long-poll).
pub async fn result(dep: &FbDeployment, base: &str) -> Result<FallbackResult, String> {
    let c = client(dep, base, &dep.sites[0])?;
    let body = get_ok(&c, "result").await?;
    serde_json::from_slice(&body).map_err(|e| format!("result JSON: {e}"))
}
