//! The sans-network core of one committee member: it admits upload views (signature checked
//! from the boxes and the ciphertext digest alone), records the one statement it signs per
//! round in its [`StatementStore`] **before** the signature exists outside this process, keeps
//! its seeds encrypted in the store's round vault and shreds them at the round's end.

use std::path::Path;

use amalgam_he::{
    CohortStatement, Decryptor, MemberRoundRecord, MemberSecrets, PieceSumRelease, RoundSetup,
    StatementSignature, UploadView,
};
use amalgam_net::fallback_api::is_fallback_round;
use amalgam_proto::codec::Encode;
use amalgam_store::fault::fault_point;
use amalgam_store::{Recorded, StatementStore, StoreError};
use zeroize::Zeroizing;

use crate::error::DecryptorError;

/// One member, its statement store and its secrets.
pub struct Member {
    index: usize,
    secrets_bytes: (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>),
    store: StatementStore,
}

impl core::fmt::Debug for Member {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Member({}, ..)", self.index)
    }
}

/// A signed round: the member's instance (holding the admitted seeds) and its signature.
pub struct Signed {
    /// The instance that signed (it releases for that statement only).
    pub decryptor: Decryptor,
    /// The statement it signed.
    pub statement: CohortStatement,
    /// The signature, persisted-first: the statement is committed before this exists.
    pub signature: StatementSignature,
}

impl core::fmt::Debug for Signed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Signed(member {})", self.signature.member)
    }
}

impl Member {
    /// Opens the member's statement database at `db` (SQLite `synchronous=FULL`, exclusive
    /// `<db>.lock`, a count anchor that refuses a database restored from an older copy, the
    /// round vault in `<db>.vault/`). `identity` and `box_secret` are the member's key bytes.
    pub fn open(
        db: &Path,
        index: usize,
        identity: [u8; 32],
        box_secret: [u8; 32],
    ) -> Result<Self, DecryptorError> {
        Ok(Self {
            index,
            secrets_bytes: (Zeroizing::new(identity), Zeroizing::new(box_secret)),
            store: StatementStore::open(db)?,
        })
    }

    /// This member's committee index.
    pub fn index(&self) -> usize {
        self.index
    }

    fn secrets(&self) -> MemberSecrets {
        let (a, b) = &self.secrets_bytes;
        amalgam_he::decryptor::member_secrets_from_bytes(**a, **b)
    }

    /// The statement already recorded for `round`, if any.
    pub fn recorded(&self, round: u64) -> Result<Option<Vec<u8>>, DecryptorError> {
        Ok(self.store.statement(round)?)
    }

    /// Admits `views`, checks `statement` (every named upload admitted with its digest, cohort
    /// bounds, no repeated seed), commits the statement as the round's only one, stores the
    /// admitted seeds encrypted in the round vault, and only then hands out the signature. A restart that is
    /// given the identical statement produces the identical signature (Ed25519 is
    /// deterministic); a different statement for a round already recorded is refused with
    /// [`DecryptorError::SecondStatement`] before anything is signed. A masking round id
    /// (below 2^32) is refused with [`DecryptorError::NotAFallbackRound`].
    pub fn sign(
        &mut self,
        setup: &RoundSetup,
        views: &[UploadView],
        statement: &CohortStatement,
    ) -> Result<Signed, DecryptorError> {
        let round = setup.round();
        // The member checks the id range itself: the aggregator is not trusted to keep the
        // masking and fallback id spaces apart.
        if !is_fallback_round(round) {
            return Err(DecryptorError::NotAFallbackRound { round });
        }
        let bytes = statement.to_bytes();
        if let Some(prev) = self.store.statement(round)?
            && prev != bytes
        {
            return Err(DecryptorError::SecondStatement { round });
        }
        // The persisted guard is the statement store, not a member round record: a restarted
        // member rebuilds its instance from the relay's views and may only sign what the store
        // holds for the round.
        let mut record = MemberRoundRecord::new();
        let mut d = Decryptor::new(setup.clone(), self.index, self.secrets(), &mut record)?;
        for v in views {
            if let Err(e) = d.admit(v) {
                tracing::warn!(
                    round,
                    site = v.header.site.0,
                    code = e.code(),
                    "view refused"
                );
            }
        }
        let pending = d.sign(statement)?;
        // The statement is committed first, the seeds stored after: a refused record leaves no
        // seeds behind. A crash between the two is harmless: the restart is given the same
        // statement, rebuilds the seeds from the views and stores them then.
        match self.store.record_once(round, &bytes) {
            Ok(Recorded::New | Recorded::Same) => {}
            Err(StoreError::SecondStatement { round }) => {
                return Err(DecryptorError::SecondStatement { round });
            }
            Err(e) => return Err(e.into()),
        }
        // Seeds at rest: encrypted under the round's vault key, shredded at the round's end.
        self.store.vault().put(round, pending.state())?;
        fault_point("after-statement-persisted", round);
        let signature = pending.persisted();
        Ok(Signed {
            decryptor: d,
            statement: statement.clone(),
            signature,
        })
    }

    /// The release for the signed statement once `signatures` hold a quorum on it.
    pub fn release(
        &self,
        signed: &Signed,
        signatures: &[StatementSignature],
    ) -> Result<PieceSumRelease, DecryptorError> {
        Ok(signed.decryptor.release(&signed.statement, signatures)?)
    }

    /// Crypto-shreds the round's seeds and sums (its vault key is deleted). The statement row
    /// stays: the round can never be signed again.
    pub fn shred(&mut self, round: u64) -> Result<(), DecryptorError> {
        Ok(self.store.vault().shred_round(round)?)
    }

    /// Whether the round's vault was shredded.
    pub fn is_shredded(&mut self, round: u64) -> bool {
        self.store.vault().is_shredded(round)
    }

    /// The durability pragmas of the statement database.
    pub fn durability(&self) -> Result<amalgam_store::Durability, DecryptorError> {
        Ok(self.store.durability()?)
    }
}
