//! The site role of an HE round: encrypt the quantized update under the pinned decryptor key,
//! sign it, upload once. Nothing comes back, so an HE site can contribute and disconnect.

use std::convert::Infallible;

use amalgam_proto::{SiteId, SiteRole};
use ed25519_dalek::SigningKey;
use rand_core::CryptoRng;
use zeroize::Zeroize;

use crate::consortium::HeConsortium;
use crate::encrypt::encrypt_vector;
use crate::error::HeError;
use crate::keys::PublicKey;
use crate::messages::SignedContribution;

/// One site in one HE round. Holds its identity key (wiped on drop by ed25519-dalek).
pub struct HeSite {
    consortium: HeConsortium,
    round: u64,
    site: SiteId,
    identity: SigningKey,
    public_key: PublicKey,
    done: bool,
}

impl HeSite {
    /// Refuses a decryptor key whose fingerprint is not the one pinned in the consortium
    /// configuration, and an identity key that is not this site's manifest entry.
    pub fn new(
        consortium: HeConsortium,
        round: u64,
        site: SiteId,
        identity: SigningKey,
        public_key: PublicKey,
    ) -> Result<Self, HeError> {
        let public_key = public_key.pinned(consortium.key())?;
        let expected = consortium.sites().key(site)?;
        if expected.as_bytes() != identity.verifying_key().as_bytes() {
            return Err(HeError::BadIdentity {
                index: site.index(),
                reason: "not this site's identity key",
            });
        }
        Ok(Self {
            consortium,
            round,
            site,
            identity,
            public_key,
            done: false,
        })
    }
}

impl SiteRole for HeSite {
    type Input = Vec<u64>;
    type Upload = SignedContribution;
    type Download = Infallible;
    type Error = HeError;

    fn site_id(&self) -> SiteId {
        self.site
    }

    /// Encrypts and signs the input; a site contributes at most once per round.
    fn start<R: CryptoRng + ?Sized>(
        &mut self,
        input: Vec<u64>,
        rng: &mut R,
    ) -> Result<SignedContribution, HeError> {
        let mut input = input;
        if self.done {
            input.zeroize();
            return Err(HeError::DuplicateContribution { site: self.site.0 });
        }
        let encrypted = encrypt_vector(&self.public_key, self.consortium.params(), &input, rng);
        // The plaintext update is the site's private data: wiped once encrypted (or refused).
        input.zeroize();
        let ciphertext = encrypted?;
        self.done = true;
        Ok(SignedContribution::sign(
            self.round,
            self.site,
            *self.consortium.key(),
            ciphertext,
            &self.identity,
        ))
    }

    /// HE rounds send nothing to sites.
    fn handle<R: CryptoRng + ?Sized>(
        &mut self,
        download: Infallible,
        _rng: &mut R,
    ) -> Result<Option<SignedContribution>, HeError> {
        match download {}
    }

    fn is_done(&self) -> bool {
        self.done
    }
}
