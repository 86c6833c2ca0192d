//! The site's side of a fallback round (spec §5.1): one upload, re-sent byte for byte.
//!
//! [`SiteRound`] is what the site persists, sealed, before anything derived from it leaves: the
//! round id, the already-noised encoded update (produced once per round id by the DP crate under
//! one permit) and one 32-byte per-round seed from the OS CSPRNG. Every piece seed, the box
//! secret and the KAHE noise are derived from that seed, so [`SiteRound::upload`] returns
//! identical bytes on every retry and after every restore — a restored site never encrypts under
//! the same key with fresh noise, and never hands out fresh pieces for the same bodies.

use amalgam_proto::SiteId;
use amalgam_proto::codec::{Reader, Writer};
use ed25519_dalek::{Signer, SigningKey};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey as BoxPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::error::HeError;
use crate::kahe::{self, KeyVector};
use crate::round::RoundSetup;
use crate::round_record::SiteRoundLog;
use crate::seed_box::{self, Binding, Seed};
use crate::upload::{SignedUpload, UploadHeader, bodies_digest, piece_commitment, signed_message};
use crate::wire::SNAPSHOT_HE_SITE_ROUND;

/// A site's persisted round: round id, round context, model digest, per-round seed, encoded
/// update.
///
/// The round context is kept, not only the round id: every piece, the noise and the box secret
/// are derived from the seed *under the context*, so the same state used with a second setup of
/// the same round id (another manifest, committee or m) would encrypt the same update under a
/// second key with fresh noise and hand the aggregator a difference.
pub struct SiteRound {
    round: u64,
    context: [u8; 32],
    model_round: u64,
    model_digest: [u8; 32],
    seed: Seed,
    update: Zeroizing<Vec<u64>>,
}

impl core::fmt::Debug for SiteRound {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SiteRound(round {}, ..)", self.round)
    }
}

fn derive(seed: &[u8; 32], context: &[u8; 32], label: &[u8], index: u16) -> Seed {
    let mut info = b"amalgam/v2/he-site/".to_vec();
    info.extend_from_slice(label);
    info.extend_from_slice(&index.to_be_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's output limit.
    #[allow(clippy::expect_used)]
    Hkdf::<Sha256>::new(Some(context), seed)
        .expand(&info, out.as_mut())
        .expect("32-byte HKDF output");
    out
}

impl SiteRound {
    /// Starts a round: checks the update against the parameters, claims the round id in the
    /// site's `log` (refused with [`HeError::RoundReused`] at or below its mark, so a second
    /// instance never draws a second seed for a round id) and draws the per-round seed. The
    /// caller persists `log` and [`SiteRound::to_bytes`] (sealed) before sending any upload.
    /// On `Err`, `log` is unchanged.
    pub fn draw<R: CryptoRng + ?Sized>(
        setup: &RoundSetup,
        log: &mut SiteRoundLog,
        (model_round, model_digest): (u64, [u8; 32]),
        update: Vec<u64>,
        rng: &mut R,
    ) -> Result<Self, HeError> {
        let update = Zeroizing::new(update);
        let p = setup.params();
        if update.len() != p.vector_len() {
            return Err(HeError::LengthMismatch {
                what: "update",
                expected: p.vector_len(),
                got: update.len(),
            });
        }
        if let Some(index) = update.iter().position(|&x| x >> p.input_bits() != 0) {
            return Err(HeError::ValueOutOfRange {
                index,
                input_bits: p.input_bits(),
            });
        }
        if !setup.accepts_model(model_round, &model_digest) {
            return Err(HeError::StaleModel);
        }
        log.claim(setup.round())?;
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Ok(Self {
            round: setup.round(),
            context: *setup.context(),
            model_round,
            model_digest,
            seed,
            update,
        })
    }

    /// The round id.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The persisted form (secret: seal it).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(112 + 8 * self.update.len());
        w.header(SNAPSHOT_HE_SITE_ROUND);
        w.u64(self.round);
        w.bytes(&self.context);
        w.u64(self.model_round);
        w.bytes(&self.model_digest);
        w.bytes(self.seed.as_ref());
        w.count(self.update.len());
        for &x in self.update.iter() {
            w.u64(x);
        }
        Zeroizing::new(w.into_bytes())
    }

    /// Restores a persisted round for `setup` (refuses another round id, another round context
    /// or a malformed update).
    pub fn from_bytes(bytes: &[u8], setup: &RoundSetup) -> Result<Self, HeError> {
        let mut r = Reader::new(bytes);
        r.expect_header(SNAPSHOT_HE_SITE_ROUND)?;
        let round = r.u64("round")?;
        let context: [u8; 32] = r.array("context")?;
        let model_round = r.u64("model_round")?;
        let model_digest = r.array("model_digest")?;
        let seed = Zeroizing::new(r.array("seed")?);
        let d = setup.params().vector_len();
        let n = r.count("update", d, d)?;
        let mut update = Zeroizing::new(Vec::with_capacity(n));
        for _ in 0..n {
            update.push(r.u64("update")?);
        }
        r.finish("SiteRound")?;
        if round != setup.round() || &context != setup.context() {
            return Err(HeError::WrongRound);
        }
        let limit = setup.params().input_bits();
        if let Some(index) = update.iter().position(|&x| x >> limit != 0) {
            return Err(HeError::ValueOutOfRange {
                index,
                input_bits: limit,
            });
        }
        Ok(Self {
            round,
            context,
            model_round,
            model_digest,
            seed,
            update,
        })
    }

    /// The site's signed upload for this round: deterministic in the persisted state. Refused
    /// with [`HeError::WrongRound`] for a setup whose round id or round context is not the one
    /// the state was drawn for.
    pub fn upload(
        &self,
        setup: &RoundSetup,
        site: SiteId,
        identity: &SigningKey,
    ) -> Result<SignedUpload, HeError> {
        if self.round != setup.round() || &self.context != setup.context() {
            return Err(HeError::WrongRound);
        }
        if setup.sites().key(site)? != &identity.verifying_key() {
            return Err(HeError::BadKey {
                what: "site directory",
                index: site.index(),
                reason: "not this site's identity",
            });
        }
        let ctx = setup.context();
        let committee = setup.committee();
        let seeds: Vec<Seed> = (0..committee.pieces())
            .map(|p| derive(&self.seed, ctx, b"piece", p as u16))
            .collect();
        let mut key = KeyVector::zero();
        for s in &seeds {
            key.add_assign(&KeyVector::expand(s));
        }
        let noise_seed = derive(&self.seed, ctx, b"noise", 0);
        let bodies = kahe::encrypt(setup.params(), ctx, &key, &self.update, &noise_seed)?;
        // The derived bytes stay in a named `Zeroizing` buffer, wiped when `upload` returns,
        // and `StaticSecret` (feature `zeroize`) wipes its own copy on drop. The by-value
        // argument in between is a move the compiler makes; no wrapper can wipe it.
        let box_bytes = derive(&self.seed, ctx, b"box", 0);
        let box_secret = StaticSecret::from(*box_bytes);
        let box_public = BoxPublic::from(&box_secret).to_bytes();
        let header = UploadHeader {
            site,
            model_digest: self.model_digest,
            model_round: self.model_round,
            box_public,
            commitments: seeds
                .iter()
                .enumerate()
                .map(|(p, s)| piece_commitment(ctx, site, p, s))
                .collect(),
        };
        let mut boxes = Vec::with_capacity(committee.size());
        for member in 0..committee.size() {
            let pieces = committee.held_by(member);
            let held: Vec<Seed> = pieces.iter().map(|&p| seeds[p].clone()).collect();
            let binding = Binding {
                round_context: ctx,
                sender: site,
                recipient: member,
                pieces: &pieces,
                sender_key: &box_public,
                recipient_key: &committee.member(member)?.box_key,
            };
            boxes.push(seed_box::seal(&box_secret, &binding, &held));
        }
        let mut upload = SignedUpload {
            header,
            boxes,
            bodies,
            signature: [0; 64],
        };
        let message = signed_message(
            ctx,
            &upload.header,
            &bodies_digest(&upload.bodies),
            &upload.box_digests(),
        );
        upload.signature = identity.sign(&message).to_bytes();
        Ok(upload)
    }
}
