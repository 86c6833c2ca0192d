//! The preamble that opens both snapshot layouts (spec §8):
//! `H(type) ‖ params_enc ‖ manifest_digest 32 ‖ context_digest 32 ‖ round u64`.
//!
//! The site and the aggregator snapshots differ only in their message type and in what follows
//! the preamble, so the preamble is written and checked in one place — as is the rule every
//! site-keyed list in a snapshot follows (members of the round, strictly ascending).

use crate::codec::{Decode, Encode, Reader, Writer};
use crate::error::DecodeError;
use crate::params::{Manifest, RoundParams, SiteId};

/// Starts a snapshot of type `msg_type`: header, round parameters, manifest digest, round.
pub(crate) fn write_preamble(
    msg_type: u8,
    params: &RoundParams,
    manifest: &Manifest,
    context_digest: &[u8; 32],
    round: u64,
) -> Writer {
    let mut w = Writer::new();
    w.header(msg_type);
    params.encode(&mut w);
    w.bytes(&manifest.digest());
    w.bytes(context_digest);
    w.u64(round);
    w
}

/// Reads and checks the preamble of a snapshot of type `msg_type` taken under `manifest`
/// (its digest must match); returns the round parameters, the context digest and the round.
pub(crate) fn read_preamble(
    r: &mut Reader<'_>,
    msg_type: u8,
    manifest: &Manifest,
) -> Result<(RoundParams, [u8; 32], u64), DecodeError> {
    r.expect_header(msg_type)?;
    let params = RoundParams::decode(r, &())?;
    let digest: [u8; 32] = r.array("manifest_digest")?;
    if digest != manifest.digest() {
        return Err(DecodeError::InvalidValue {
            field: "manifest_digest",
            reason: "snapshot is for another manifest",
        });
    }
    let context_digest: [u8; 32] = r.array("context_digest")?;
    let round = r.u64("round")?;
    Ok((params, context_digest, round))
}

/// Checks that `id`, the next key of a site-keyed snapshot list, is a member of the round and
/// greater than the previous key `last` (then records it). Ascending order makes the encoding
/// canonical and rules out duplicates.
pub(crate) fn next_member(
    params: &RoundParams,
    last: &mut Option<SiteId>,
    id: SiteId,
    field: &'static str,
) -> Result<SiteId, DecodeError> {
    if !params.contains(id) || last.is_some_and(|l| l >= id) {
        return Err(DecodeError::InvalidValue {
            field,
            reason: "out of range or not ascending",
        });
    }
    *last = Some(id);
    Ok(id)
}
