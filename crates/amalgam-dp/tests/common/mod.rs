//! Helpers shared by the ledger tests: the consortium epoch a request runs under.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use amalgam_dp::ledger::{Ledger, LedgerError, RoundParams, RoundPermit, RoundRequest};

/// The round parameters of `r`, as a manifest would state them.
pub fn params_of(r: &RoundRequest) -> RoundParams {
    r.params()
}

/// Records an epoch with `r`'s manifest and parameters unless that is the epoch in force.
pub fn enter_epoch_of(ledger: &mut Ledger, r: &RoundRequest) {
    let next = match ledger.epoch_in_force() {
        Some((digest, _, params))
            if digest == r.manifest_digest && params.mismatch(r).is_none() =>
        {
            return;
        }
        Some((_, epoch, _)) => epoch + 1,
        None => 0,
    };
    ledger
        .record_epoch(r.manifest_digest, next, params_of(r))
        .unwrap();
}

/// Authorizes `r` in an epoch whose parameters are `r`'s (recording that epoch if needed).
pub fn authorize_in_epoch(
    ledger: &mut Ledger,
    r: RoundRequest,
) -> Result<RoundPermit, LedgerError> {
    enter_epoch_of(ledger, &r);
    ledger.authorize(r)
}

use amalgam_dp::ledger::entry::{EntryBody, EntryKind};
use amalgam_dp::ledger::store::MAGIC;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

/// Rebuilds a ledger file from payloads (valid framing, so only the audit can object).
pub fn reframe(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for p in payloads {
        let len = (p.len() as u32).to_le_bytes();
        let mut h = Sha256::new();
        h.update(len);
        h.update(p);
        out.extend_from_slice(&len);
        out.extend_from_slice(p);
        out.extend_from_slice(&h.finalize());
    }
    out
}

/// Signs `body` as the ledger does (what a site holding its own key can always do).
pub fn sign(body: &EntryBody, key: &SigningKey) -> Vec<u8> {
    let bytes = body.to_bytes();
    let sig = key.sign(&[b"amalgam-dp ledger entry v2\0".as_slice(), &bytes].concat());
    [bytes, sig.to_bytes().to_vec()].concat()
}

/// The body of a payload (body ‖ signature).
pub fn body(payload: &[u8]) -> EntryBody {
    EntryBody::from_bytes(&payload[..payload.len() - 64]).unwrap()
}

/// The charge in `body`, mutably.
pub fn charge_mut(body: &mut EntryBody) -> &mut amalgam_dp::ledger::entry::Charge {
    match &mut body.kind {
        EntryKind::Charge(c) => c,
        other => panic!("not a charge: {other:?}"),
    }
}
