//! The protocol crate's role traits for the fallback's site and aggregator, so a driver runs
//! masking or the fallback with the same loop. The fallback is one-shot: a site's only message
//! is its first upload, and the aggregator's one phase ends with the closed cohort statement
//! (the committee steps follow through [`amalgam_proto::DecryptorRole`]).

use core::convert::Infallible;

use amalgam_proto::{AggregatorRole, AggregatorStep, SiteId, SiteRole};
use ed25519_dalek::SigningKey;
use rand_core::CryptoRng;

use crate::aggregator::HeAggregator;
use crate::error::HeError;
use crate::persist::PersistFirst;
use crate::round::RoundSetup;
use crate::round_record::SiteRoundLog;
use crate::site::SiteRound;
use crate::statement::CohortStatement;
use crate::upload::SignedUpload;

/// A site in one fallback round. It borrows the site's [`SiteRoundLog`] mutably, so a
/// second instance for the same round id cannot start (the driver persists the log before
/// the upload leaves).
pub struct HeSite<'log> {
    log: &'log mut SiteRoundLog,
    setup: RoundSetup,
    site: SiteId,
    identity: SigningKey,
    round: Option<SiteRound>,
}

impl core::fmt::Debug for HeSite<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "HeSite({}, round {})", self.site.0, self.setup.round())
    }
}

impl<'log> HeSite<'log> {
    /// Site `site` of `setup` with its identity key and its round log.
    pub fn new(
        setup: RoundSetup,
        site: SiteId,
        identity: SigningKey,
        log: &'log mut SiteRoundLog,
    ) -> Result<Self, HeError> {
        if setup.sites().key(site)? != &identity.verifying_key() {
            return Err(HeError::BadKey {
                what: "site directory",
                index: site.index(),
                reason: "not this site's identity",
            });
        }
        Ok(Self {
            log,
            setup,
            site,
            identity,
            round: None,
        })
    }

    /// The site's round log (persist it with the round state before the upload leaves).
    pub fn round_log(&self) -> &SiteRoundLog {
        self.log
    }

    /// Resumes from a persisted [`SiteRound`]: the upload is re-created byte for byte (the
    /// round id was claimed when the state was drawn; identical bytes hand over nothing new).
    pub fn resume(&mut self, round: SiteRound) -> Result<SignedUpload, HeError> {
        let upload = round.upload(&self.setup, self.site, &self.identity)?;
        self.round = Some(round);
        Ok(upload)
    }
}

impl SiteRole for HeSite<'_> {
    /// ((round, digest) of the model trained on, the already-noised encoded update, weighted
    /// by [`RoundSetup::staleness_weight`] of that model round).
    type Input = ((u64, [u8; 32]), Vec<u64>);
    /// The upload, released only after the round state is persisted.
    type Upload = PersistFirst<SignedUpload>;
    /// The fallback sends a site nothing.
    type Download = Infallible;
    type Error = HeError;

    fn site_id(&self) -> SiteId {
        self.site
    }

    fn start<R: CryptoRng + ?Sized>(
        &mut self,
        (model, update): Self::Input,
        rng: &mut R,
    ) -> Result<Self::Upload, HeError> {
        if self.round.is_some() {
            return Err(HeError::WrongState("this round already started"));
        }
        let round = SiteRound::draw(&self.setup, self.log, model, update, rng)?;
        let upload = round.upload(&self.setup, self.site, &self.identity)?;
        let state = round.to_bytes();
        self.round = Some(round);
        Ok(PersistFirst::new(state, upload))
    }

    fn handle<R: CryptoRng + ?Sized>(
        &mut self,
        download: Infallible,
        _rng: &mut R,
    ) -> Result<Option<Self::Upload>, HeError> {
        match download {}
    }

    fn is_done(&self) -> bool {
        self.round.is_some()
    }
}

impl AggregatorRole for HeAggregator {
    type Upload = SignedUpload;
    /// The fallback sends sites nothing.
    type Download = Infallible;
    /// The closed cohort, for the committee.
    type Output = CohortStatement;
    type Error = HeError;

    fn receive(&mut self, upload: SignedUpload) -> Result<(), HeError> {
        HeAggregator::receive(self, &upload)
    }

    fn close_phase(&mut self) -> Result<AggregatorStep<Infallible, CohortStatement>, HeError> {
        self.close().map(AggregatorStep::Finished)
    }

    fn responded(&self) -> Vec<SiteId> {
        HeAggregator::responded(self)
    }

    fn is_done(&self) -> bool {
        self.is_closed()
    }
}
