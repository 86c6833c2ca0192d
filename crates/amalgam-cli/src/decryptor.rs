//! `amalgam decryptor serve`: one member of the homomorphic fallback's decryptor committee
//! against the aggregator, outbound over mutual TLS (`protocol-spec/decryptor.md`).
//!
//! The member's box secret of each key period is drawn from the OS RNG once and sealed at rest
//! in the state directory (`amalgam_store::SealedStore` under the state key, files 0600, the
//! directory 0700); a restart reuses it, so the member never certifies a second key for a
//! period. Its certificates of the current and the next period are posted ahead of the
//! period; a period's secret is deleted once the period has retired. It polls the
//! aggregator's status and serves the fallback re-run of every aborted masking round with
//! [`DecryptorAgent`]; prints one `READY member <j>` line once connected; exits 0 on SIGTERM
//! or Ctrl-C.
//!
//! Exit status: 1 failed, 4 authentication (a pin mismatch, a key not of the committee, a
//! second certificate stored for this member), 5 aggregator unreachable.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amalgam_consortium::fallback::{fallback_setup, issue_certificate, period_of};
use amalgam_consortium::period_key::PeriodCertificate;
use amalgam_consortium::{EpochHighWater, IdentityKey, SignedManifest, VerifiedManifest};
use amalgam_decryptor::keys::{fetch_certificates, post_certificate};
use amalgam_decryptor::{DecryptorAgent, DecryptorError, Member, Outcome, Patience, SetupFn};
use amalgam_he::decryptor::member_secrets_from_bytes;
use amalgam_net::api;
use amalgam_net::client::{ApiClient, ClientError, RetryPolicy};
use amalgam_net::fallback_api::fallback_round_of;
use amalgam_net::tls;
use amalgam_store::{SealedStore, StateAad, StateKey};
use zeroize::Zeroizing;

use crate::Failure;

/// Name of a period's sealed box secret (its round slot is the period number).
const BOX_SECRET: &str = "box-secret";
/// Phase byte of the sealed box secret's associated data (no protocol phase uses it).
const BOX_SECRET_PHASE: u8 = 0x50;
/// Format version of the sealed box secret.
const BOX_SECRET_VERSION: u8 = 1;

/// `amalgam decryptor …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve the committee: post this member's period certificates, sign and release the
    /// fallback re-runs the aggregator opens.
    Serve(ServeArgs),
}

/// `amalgam decryptor serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The co-signed consortium manifest.
    #[arg(long)]
    manifest: PathBuf,
    /// This member's identity key file (a decryptor of the manifest).
    #[arg(long)]
    key: PathBuf,
    /// The state directory (created 0700): state key, sealed box secrets, statement store.
    #[arg(long)]
    state: PathBuf,
    /// The aggregator, `https://host:port`.
    #[arg(long)]
    aggregator: String,
    /// Seconds between polls of the aggregator's status.
    #[arg(long, default_value_t = 2)]
    poll_seconds: u64,
}

/// Runs the subcommand.
pub fn run(args: &Args) -> Result<(), Failure> {
    match &args.command {
        Command::Serve(a) => serve(a),
    }
}

fn client_failure(e: &ClientError) -> Failure {
    match e {
        ClientError::PinMismatch(_) => Failure::with(4, e.to_string()),
        ClientError::Transport(_) => Failure::with(5, e.to_string()),
        _ => Failure::failed(e.to_string()),
    }
}

fn decryptor_failure(e: DecryptorError) -> Failure {
    match e {
        DecryptorError::Client(c) => client_failure(&c),
        DecryptorError::KeyConflict(_) => Failure::with(4, e.to_string()),
        e => Failure::failed(e.to_string()),
    }
}

fn store_failure(e: amalgam_store::StoreError) -> Failure {
    Failure::failed(e.to_string())
}

/// The member's fixed context: manifest, identity, index, state.
struct Ctx {
    manifest: VerifiedManifest,
    identity: Zeroizing<[u8; 32]>,
    index: usize,
    state: PathBuf,
    sealed: SealedStore,
}

impl Ctx {
    fn aad(&self, period: u64) -> StateAad {
        StateAad {
            consortium_digest: self.manifest.consortium_digest(),
            site: self.index as u16,
            round: period,
            phase: BOX_SECRET_PHASE,
            version: BOX_SECRET_VERSION,
        }
    }

    /// The box secret of `period`: the sealed one, or one fresh from the OS RNG sealed first
    /// (so a crash after this never leads to a second key for the period).
    fn box_secret(&self, period: u64) -> Result<Zeroizing<[u8; 32]>, Failure> {
        let aad = self.aad(period);
        if let Some(b) = self.sealed.get(BOX_SECRET, &aad).map_err(store_failure)? {
            let a: [u8; 32] = b
                .as_slice()
                .try_into()
                .map_err(|_| Failure::failed(format!("sealed box secret of period {period}")))?;
            return Ok(Zeroizing::new(a));
        }
        let mut s = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *s).map_err(|_| Failure::failed("no OS randomness"))?;
        self.sealed
            .put(BOX_SECRET, &aad, &*s)
            .map_err(store_failure)?;
        Ok(s)
    }

    fn certificate(&self, period: u64) -> Result<PeriodCertificate, Failure> {
        let secrets = member_secrets_from_bytes(*self.identity, *self.box_secret(period)?);
        issue_certificate(&self.manifest, &secrets, period)
            .map_err(|e| Failure::failed(e.to_string()))
    }

    /// Deletes the sealed secrets of periods before `current` (they can serve no round).
    fn shred_before(&self, current: u64) -> Result<(), Failure> {
        for p in self.sealed.rounds().map_err(store_failure)? {
            if p < current {
                self.sealed.delete_round(p).map_err(store_failure)?;
                tracing::info!(period = p, "box secret of a retired period shredded");
            }
        }
        Ok(())
    }

    fn db(&self) -> PathBuf {
        self.state.join("statements.db")
    }
}

fn private_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Failure::failed(format!("{dir:?}: {e}")))?;
    }
    Ok(())
}

fn load(a: &ServeArgs) -> Result<Ctx, Failure> {
    let key = IdentityKey::load(&a.key)?;
    private_dir(&a.state)?;
    let hw_path = a.state.join("epoch.highwater");
    let hw = EpochHighWater::load(&hw_path)?;
    let me = key.verifying_key();
    let manifest = SignedManifest::read(&a.manifest)?.verify_for(&me, hw.as_ref())?;
    EpochHighWater::accept(&hw_path, &manifest, &me)?;
    let index = manifest
        .decryptors()
        .iter()
        .position(|m| m.key == me)
        .ok_or_else(|| {
            Failure::with(
                4,
                format!("{} is not a decryptor of the manifest", a.key.display()),
            )
        })?;
    if manifest.committee().is_none() {
        return Err(Failure::failed("the manifest has no decryptor committee"));
    }
    let state_key =
        StateKey::load_or_generate(&a.state.join("state.key")).map_err(store_failure)?;
    let sealed = SealedStore::open(&a.state.join("sealed"), state_key).map_err(store_failure)?;
    Ok(Ctx {
        identity: Zeroizing::new(key.to_ledger_key().to_bytes()),
        manifest,
        index,
        state: a.state.clone(),
        sealed,
    })
}

fn serve(a: &ServeArgs) -> Result<(), Failure> {
    amalgam_net::install_crypto_provider();
    crate::serve::init_logs();
    let ctx = load(a)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::failed(e.to_string()))?;
    let client = {
        let _g = runtime.enter();
        let pin = tls::AggregatorPin {
            identity: ctx.manifest.aggregator().key,
            consortium_digest: ctx.manifest.consortium_digest(),
        };
        let id = tls::member_identity(&tls::ed25519_pkcs8_from_seed(&ctx.identity))
            .map_err(|e| Failure::with(4, e.to_string()))?;
        let config = tls::client_config(&id, pin).map_err(|e| Failure::with(4, e.to_string()))?;
        ApiClient::new(&a.aggregator, config, RetryPolicy::default())
            .map_err(|e| client_failure(&e))?
    };
    let poll = Duration::from_secs(a.poll_seconds.max(1));
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::failed(e.to_string()))?;
        tokio::select! {
            r = serve_loop(&ctx, &client, poll) => r,
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

async fn status(client: &ApiClient) -> Result<api::ServiceStatus, Failure> {
    let r = client
        .get(api::STATUS)
        .await
        .map_err(|e| client_failure(&e))?;
    if !r.status.is_success() {
        return Err(Failure::failed(format!(
            "status: HTTP {}",
            r.status.as_u16()
        )));
    }
    serde_json::from_slice(&r.body).map_err(|e| Failure::failed(format!("status: {e}")))
}

/// Posts this member's certificate of `period`; a 409 is acceptable only if the certificate
/// stored for this member is this one (then nothing was lost); otherwise the member stops.
async fn post_period(ctx: &Ctx, client: &ApiClient, period: u64) -> Result<(), Failure> {
    let cert = ctx.certificate(period)?;
    let bytes = cert.to_bytes();
    match post_certificate(client, &bytes).await {
        Ok(()) => Ok(()),
        Err(DecryptorError::KeyConflict(d)) => {
            let stored = fetch_certificates(client, period)
                .await
                .map_err(decryptor_failure)?;
            if stored.contains(&bytes) {
                return Ok(());
            }
            Err(Failure::with(
                4,
                format!(
                    "period {period}: the aggregator stores another certificate of this member \
                     ({d}); this member's sealed key was lost and it must not serve the period"
                ),
            ))
        }
        Err(e) => Err(decryptor_failure(e)),
    }
}

async fn serve_loop(ctx: &Ctx, client: &ApiClient, poll: Duration) -> Result<(), Failure> {
    let mut posted: BTreeSet<u64> = BTreeSet::new();
    let mut done: BTreeSet<u64> = BTreeSet::new();
    let mut ready = false;
    loop {
        let st = status(client).await?;
        let latest = st.rounds.iter().map(|r| r.round).max().unwrap_or(0);
        let current_round = fallback_round_of(latest).unwrap_or(0);
        let current =
            period_of(&ctx.manifest, current_round).map_err(|e| Failure::failed(e.to_string()))?;
        // Where the manifest forbids the fallback there is no round to serve and no key to
        // certify (the aggregator mounts no committee route then).
        // Never past the campaign's last key period: the aggregator refuses those (422).
        let last = amalgam_server::fallback::keys::last_period(&ctx.manifest).unwrap_or(current);
        let periods = if ctx.manifest.fallback().allowed {
            [current, current.saturating_add(1)]
                .into_iter()
                .filter(|p| *p <= last)
                .collect()
        } else {
            Vec::new()
        };
        for p in periods {
            if !posted.contains(&p) {
                post_period(ctx, client, p).await?;
                posted.insert(p);
            }
        }
        ctx.shred_before(current)?;
        if !ready {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "READY member {}", ctx.index);
            let _ = out.flush();
            tracing::info!(member = ctx.index, "decryptor serving");
            ready = true;
        }
        if ctx.manifest.fallback().allowed {
            for r in st.rounds.iter().filter(|r| r.phase == "aborted") {
                let Some(round) = fallback_round_of(r.round) else {
                    continue;
                };
                if done.contains(&round) {
                    continue;
                }
                match serve_rerun(ctx, client, round, r.round, &r.model_digest).await {
                    Ok(true) => {
                        done.insert(round);
                    }
                    Ok(false) => {}
                    Err(f) if f.code == 4 => return Err(f),
                    Err(f) => tracing::warn!(round, error = %f.message, "round not served yet"),
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// Serves fallback round `round` (the re-run of masking round `rerun`, bound to the model
/// the aggregator's status names: a wrong one only yields a setup no site shares). `Ok(true)`:
/// the round is over for this member; `Ok(false)`: not open yet, ask again.
async fn serve_rerun(
    ctx: &Ctx,
    client: &ApiClient,
    round: u64,
    rerun: u64,
    model_hex: &str,
) -> Result<bool, Failure> {
    let model: [u8; 32] = hex::decode(model_hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Failure::failed(format!("round {rerun}: model digest is not hex")))?;
    let period = period_of(&ctx.manifest, round).map_err(|e| Failure::failed(e.to_string()))?;
    let frames = fetch_certificates(client, period)
        .await
        .map_err(decryptor_failure)?;
    let certs = frames
        .iter()
        .map(|b| PeriodCertificate::from_bytes(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::failed(format!("a committee certificate does not decode: {e}")))?;
    let manifest = ctx.manifest.clone();
    let setups: SetupFn = std::sync::Arc::new(move |r| {
        fallback_setup(&manifest, r, &[(rerun, model)], &certs).map_err(|e| e.to_string())
    });
    let secret = ctx.box_secret(period)?;
    let mut member =
        Member::open(&ctx.db(), ctx.index, *ctx.identity, *secret).map_err(decryptor_failure)?;
    if member.is_shredded(round) {
        return Ok(true);
    }
    let patience = Patience {
        long_poll: Duration::from_secs(5),
        poll: Duration::from_millis(200),
        max_polls: 3000,
    };
    let mut agent = DecryptorAgent::new(member, client.clone(), setups, true, patience);
    let out = agent.serve_round(round).await;
    // A round that ended while this member was down (410 to the statement or to the views)
    // may still have the seeds the crashed run stored: they are shredded here, as on every
    // other way out of a round.
    let ended = match &out {
        Err(DecryptorError::Ended { .. }) => true,
        Err(DecryptorError::Answer(a)) => a.contains("HTTP 410"),
        _ => false,
    };
    if ended {
        agent
            .member_mut()
            .shred(round)
            .map_err(|e| Failure::failed(e.to_string()))?;
    }
    match out {
        Ok(Outcome::Released { cohort }) => {
            println!("round {round}: Released {cohort:?}");
            Ok(true)
        }
        Ok(Outcome::FinishedWithout { cohort }) => {
            println!("round {round}: FinishedWithout {cohort:?}");
            Ok(true)
        }
        Err(e) if ended => {
            println!("round {round}: Ended ({e})");
            Ok(true)
        }
        Err(DecryptorError::Answer(a)) if a.contains("round.unknown") || a.contains("404") => {
            Ok(false)
        }
        Err(e @ DecryptorError::SecondStatement { .. }) => Err(Failure::failed(e.to_string())),
        Err(e) => Err(decryptor_failure(e)),
    }
}
