//! A committee member's side of a fallback round (spec §5.4–5.6): admit uploads, sign at most
//! one cohort statement, release per-piece sums after a quorum. It sees seeds, never bodies.
//!
//! Order of checks before signing: round not expired; no other statement signed; m ≤ |S| ≤
//! K_max; sites strictly ascending and in the directory; each named upload admitted here with the
//! same digest (admission verified the site's signature, opened the box under its bindings and
//! matched every seed to the signed commitment); no seed value repeats across the cohort. The
//! signature is handed out only through [`PersistFirst`], after the record of the signed
//! statement is in the bytes the caller must persist.

use std::collections::BTreeMap;

use amalgam_proto::SiteId;
use amalgam_proto::codec::{Reader, Writer};
use sha2::{Digest, Sha256};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::committee::MemberSecrets;
use crate::error::HeError;
use crate::kahe::KeyVector;
pub use crate::persist::PersistFirst;
use crate::release::PieceSumRelease;
use crate::round::RoundSetup;
use crate::round_record::MemberRoundRecord;
use crate::seed_box::{self, Binding, Seed};
use crate::statement::{CohortStatement, StatementSignature};
use crate::upload::{UploadView, piece_commitment, verify};
use crate::wire::SNAPSHOT_HE_DECRYPTOR;

/// One admitted upload: its digest and the seeds of the pieces this member holds.
#[derive(Clone)]
struct Admitted {
    digest: [u8; 32],
    seeds: Vec<Seed>,
}

/// A committee member for one round.
pub struct Decryptor {
    setup: RoundSetup,
    member: usize,
    secrets: MemberSecrets,
    held: Vec<usize>,
    admitted: BTreeMap<u16, Admitted>,
    signed: Option<CohortStatement>,
    expired: bool,
}

impl core::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Decryptor(member {}, round {}, ..)",
            self.member,
            self.setup.round()
        )
    }
}

impl Decryptor {
    /// Member `member` of `setup`'s committee, with its identity and period box secret, for a
    /// round it has not served: the round id is claimed in `record`, and refused with
    /// [`HeError::RoundReused`] if it is already there. Without the record two fresh instances
    /// of every honest member could sign S and S ∖ {v} and both quorums would release. The
    /// driver MUST persist `record` before the first signature of the round leaves; a member
    /// that restarts mid-round continues with [`Decryptor::restore`]. On `Err`, `record` is
    /// unchanged.
    pub fn new(
        setup: RoundSetup,
        member: usize,
        secrets: MemberSecrets,
        record: &mut MemberRoundRecord,
    ) -> Result<Self, HeError> {
        let d = Self::build(setup, member, secrets)?;
        record.claim(d.setup.round())?;
        Ok(d)
    }

    fn build(setup: RoundSetup, member: usize, secrets: MemberSecrets) -> Result<Self, HeError> {
        let keys = setup.committee().member(member)?;
        if keys.identity != secrets.identity.verifying_key()
            || keys.box_key != x25519_dalek::PublicKey::from(&secrets.box_secret).to_bytes()
        {
            return Err(HeError::BadKey {
                what: "committee",
                index: member,
                reason: "not this member's keys",
            });
        }
        let held = setup.committee().held_by(member);
        Ok(Self {
            setup,
            member,
            secrets,
            held,
            admitted: BTreeMap::new(),
            signed: None,
            expired: false,
        })
    }

    /// This member's index.
    pub fn member(&self) -> usize {
        self.member
    }

    /// The statement this member signed for the round, if any.
    pub fn signed_statement(&self) -> Option<&CohortStatement> {
        self.signed.as_ref()
    }

    /// Admits one site's upload view: signature, model window, box under its bindings, every
    /// seed against its signed commitment. A repeat of the identical view is accepted; a
    /// different one from the same site is refused. On `Err`, nothing changed.
    pub fn admit(&mut self, view: &UploadView) -> Result<(), HeError> {
        if self.expired {
            return Err(HeError::Expired);
        }
        let ctx = *self.setup.context();
        let site = view.header.site;
        let key = self.setup.sites().key(site)?;
        if !verify(key, &view.message(&ctx), &view.signature) {
            return Err(HeError::BadSignature {
                what: "upload",
                signer: site.index(),
            });
        }
        let digest = view.digest(&ctx);
        if let Some(prev) = self.admitted.get(&site.0) {
            return if prev.digest == digest {
                Ok(())
            } else {
                Err(HeError::DuplicateSite { site: site.0 })
            };
        }
        if !self
            .setup
            .accepts_model(view.header.model_round, &view.header.model_digest)
        {
            return Err(HeError::StaleModel);
        }
        let own_digest: [u8; 32] = Sha256::digest(&view.own_box).into();
        if view.box_digests.get(self.member) != Some(&own_digest) {
            return Err(HeError::BoxDoesNotOpen { site: site.0 });
        }
        let binding = Binding {
            round_context: &ctx,
            sender: site,
            recipient: self.member,
            pieces: &self.held,
            sender_key: &view.header.box_public,
            recipient_key: &self.setup.committee().member(self.member)?.box_key,
        };
        let seeds = seed_box::open(&self.secrets.box_secret, &binding, &view.own_box)
            .ok_or(HeError::BoxDoesNotOpen { site: site.0 })?;
        for (&piece, seed) in self.held.iter().zip(&seeds) {
            let signed = view.header.commitments.get(piece);
            if signed != Some(&piece_commitment(&ctx, site, piece, seed)) {
                return Err(HeError::CommitmentMismatch {
                    site: site.0,
                    piece,
                });
            }
        }
        self.admitted.insert(site.0, Admitted { digest, seeds });
        Ok(())
    }

    /// Sites admitted so far.
    pub fn admitted(&self) -> Vec<SiteId> {
        self.admitted.keys().map(|&s| SiteId(s)).collect()
    }

    fn check_statement(&self, statement: &CohortStatement) -> Result<(), HeError> {
        let p = self.setup.params();
        let max = (p.max_sites() as usize).min(self.setup.sites().len());
        let size = statement.members.len();
        if size < self.setup.min_cohort() || size > max {
            return Err(HeError::CohortSize {
                size,
                min: self.setup.min_cohort(),
                max,
            });
        }
        let mut seen: Vec<(&[u8; 32], u16)> = Vec::with_capacity(size * self.held.len());
        let mut last: Option<u16> = None;
        for (site, digest) in &statement.members {
            if last.is_some_and(|l| l >= site.0) {
                return Err(HeError::DuplicateSite { site: site.0 });
            }
            last = Some(site.0);
            self.setup.sites().key(*site)?;
            let a = self
                .admitted
                .get(&site.0)
                .filter(|a| &a.digest == digest)
                .ok_or(HeError::UploadNotAdmitted { site: site.0 })?;
            seen.extend(a.seeds.iter().map(|s| (&**s, site.0)));
        }
        seen.sort_unstable();
        if let Some(w) = seen.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(HeError::RepeatedSeed {
                first: w[0].1.min(w[1].1),
                second: w[0].1.max(w[1].1),
            });
        }
        Ok(())
    }

    /// Signs `statement` if it passes every check and no other statement was signed for the
    /// round. The same statement again yields the same signature (Ed25519 is deterministic). On
    /// `Err`, nothing changed.
    pub fn sign(
        &mut self,
        statement: &CohortStatement,
    ) -> Result<PersistFirst<StatementSignature>, HeError> {
        if self.expired {
            return Err(HeError::Expired);
        }
        match &self.signed {
            Some(s) if s != statement => return Err(HeError::OtherStatementSigned),
            Some(_) => {}
            None => {
                self.check_statement(statement)?;
                self.signed = Some(statement.clone());
            }
        }
        let digest = statement.digest(self.setup.context());
        Ok(PersistFirst::new(
            self.snapshot(),
            StatementSignature::sign(&self.secrets.identity, self.member, &digest),
        ))
    }

    /// Releases the cohort sum of every piece this member holds, for the statement it signed,
    /// once `signatures` hold Q valid ones from distinct members on that identical statement.
    /// Re-sendable any number of times; never for another statement.
    pub fn release(
        &self,
        statement: &CohortStatement,
        signatures: &[StatementSignature],
    ) -> Result<PieceSumRelease, HeError> {
        if self.expired {
            return Err(HeError::Expired);
        }
        if self.signed.as_ref() != Some(statement) {
            return Err(HeError::NotSigned);
        }
        let ctx = self.setup.context();
        let digest = statement.digest(ctx);
        let committee = self.setup.committee();
        let mut signers = vec![false; committee.size()];
        for s in signatures {
            let m = usize::from(s.member);
            if let Ok(keys) = committee.member(m)
                && s.verifies(&keys.identity, &digest)
            {
                signers[m] = true;
            }
        }
        let got = signers.iter().filter(|&&b| b).count();
        if got < committee.quorum() {
            return Err(HeError::NoQuorum {
                got,
                quorum: committee.quorum(),
            });
        }
        let mut sums: Vec<(u16, KeyVector)> = self
            .held
            .iter()
            .map(|&p| (p as u16, KeyVector::zero()))
            .collect();
        for site in statement.sites() {
            let a = self
                .admitted
                .get(&site.0)
                .ok_or(HeError::UploadNotAdmitted { site: site.0 })?;
            for ((_, sum), seed) in sums.iter_mut().zip(&a.seeds) {
                sum.add_assign(&KeyVector::expand(seed));
            }
        }
        Ok(PieceSumRelease::sign(
            &self.secrets.identity,
            ctx,
            self.member,
            digest,
            sums,
        ))
    }

    /// The round deadline passed: every seed is deleted, released or not.
    pub fn expire(&mut self) {
        self.admitted.clear();
        self.expired = true;
    }

    /// The persisted state (holds seeds: the caller seals it). Secrets are not included.
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.header(SNAPSHOT_HE_DECRYPTOR);
        w.u64(self.setup.round());
        w.bytes(self.setup.context());
        w.u8(self.member as u8);
        w.bool(self.expired);
        w.count(self.admitted.len());
        for (site, a) in &self.admitted {
            w.u16(*site);
            w.bytes(&a.digest);
            for s in &a.seeds {
                w.bytes(s.as_ref());
            }
        }
        match &self.signed {
            None => w.bool(false),
            Some(s) => {
                w.bool(true);
                amalgam_proto::codec::Encode::encode(s, &mut w);
            }
        }
        Zeroizing::new(w.into_bytes())
    }

    /// Rebuilds a member from [`Decryptor::snapshot`] bytes (untrusted input: every field checked).
    /// The round was claimed in the member's record by [`Decryptor::new`]; restoring an older
    /// snapshot (from before it signed) makes the member count as corrupt.
    pub fn restore(
        bytes: &[u8],
        setup: RoundSetup,
        member: usize,
        secrets: MemberSecrets,
    ) -> Result<Self, HeError> {
        let mut d = Self::build(setup, member, secrets)?;
        let mut r = Reader::new(bytes);
        r.expect_header(SNAPSHOT_HE_DECRYPTOR)?;
        if r.u64("round")? != d.setup.round()
            || &r.array::<32>("context")? != d.setup.context()
            || usize::from(r.u8("member")?) != member
        {
            return Err(HeError::WrongRound);
        }
        d.expired = r.bool("expired")?;
        let n = r.count("admitted", 0, d.setup.sites().len())?;
        for _ in 0..n {
            let site = r.u16("site")?;
            d.setup.sites().key(SiteId(site))?;
            let digest = r.array("digest")?;
            let seeds = (0..d.held.len())
                .map(|_| r.array::<32>("seed").map(Zeroizing::new))
                .collect::<Result<Vec<_>, _>>()?;
            if d.admitted
                .insert(site, Admitted { digest, seeds })
                .is_some()
            {
                return Err(HeError::DuplicateSite { site });
            }
        }
        if r.bool("signed")? {
            let s = <CohortStatement as amalgam_proto::codec::Decode>::decode(&mut r, &())?;
            d.signed = Some(s);
        }
        r.finish("Decryptor")?;
        Ok(d)
    }
}

/// Helper for tests and tools: a member's secrets from raw bytes (seeded constructors are for
/// tests and vectors only).
pub fn member_secrets_from_bytes(identity: [u8; 32], box_secret: [u8; 32]) -> MemberSecrets {
    MemberSecrets {
        identity: ed25519_dalek::SigningKey::from_bytes(&identity),
        box_secret: StaticSecret::from(box_secret),
    }
}

impl amalgam_proto::DecryptorRole for Decryptor {
    type Upload = UploadView;
    type Statement = CohortStatement;
    type Signature = StatementSignature;
    type Pending = PersistFirst<StatementSignature>;
    type Release = PieceSumRelease;
    type Error = HeError;

    fn admit(&mut self, upload: &UploadView) -> Result<(), HeError> {
        Decryptor::admit(self, upload)
    }

    fn sign(&mut self, statement: &CohortStatement) -> Result<Self::Pending, HeError> {
        Decryptor::sign(self, statement)
    }

    fn release(
        &self,
        statement: &CohortStatement,
        signatures: &[StatementSignature],
    ) -> Result<PieceSumRelease, HeError> {
        Decryptor::release(self, statement, signatures)
    }
}
