//! HKDF-SHA256 derivations and the round/session hashes (spec §4.1-§4.3).
//!
//! Every derivation uses its own label from [`crate::labels`]; salts are the session id, so
//! nothing derived in one round is ever valid in another.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::codec::{Encode, Writer};
use crate::labels;
use crate::params::{RoundParams, SiteId};

/// A 32-byte symmetric key, wiped on drop.
pub type Key32 = Zeroizing<[u8; 32]>;

/// Spec §4.1 (v2) `round_context = SHA-256("amalgam/v2/round-context" ‖ context_digest ‖
/// params_enc ‖ round u64)`, for either scheme: the masking protocol passes its
/// `params_enc_v2` ([`masking_round_context`]); the homomorphic fallback passes its own
/// parameter encoding. `context_digest` is the caller's opaque 32-byte commitment to the
/// consortium manifest and the model being trained (it MUST commit to the manifest).
pub fn round_context(context_digest: &[u8; 32], params_enc: &[u8], round: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::ROUND_CONTEXT);
    h.update(context_digest);
    h.update(params_enc);
    h.update(round.to_be_bytes());
    h.finalize().into()
}

/// [`round_context`] of a masking round: `params_enc_v2` is the [`RoundParams`] encoding.
pub fn masking_round_context(
    context_digest: &[u8; 32],
    params: &RoundParams,
    round: u64,
) -> [u8; 32] {
    let mut w = Writer::new();
    params.encode(&mut w);
    round_context(context_digest, w.as_slice(), round)
}

/// Spec §4.2 `session_id = SHA-256(SESSION || round_context || u32 count || adverts...)`,
/// adverts being the exact bytes of the accepted AdvertiseKeys messages, ascending sender.
pub fn session_id<'a>(
    round_context: &[u8; 32],
    adverts: impl ExactSizeIterator<Item = &'a [u8]>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::SESSION);
    h.update(round_context);
    h.update((adverts.len() as u32).to_be_bytes());
    for a in adverts {
        h.update(a);
    }
    h.finalize().into()
}

fn hkdf32(salt: &[u8; 32], ikm: &[u8], info: &[u8]) -> Key32 {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    #[allow(clippy::expect_used)]
    hk.expand(info, out.as_mut()).expect("32 <= 255 * 32");
    out
}

/// Spec §4.4: key encrypting the shares that `sender` sends to `recipient`.
/// `ikm` is X25519(c_sk, c_pk') (the same for both directions; the info orders them).
pub fn share_key(
    session_id: &[u8; 32],
    ikm: &[u8; 32],
    sender: SiteId,
    recipient: SiteId,
) -> Key32 {
    let mut info = Vec::with_capacity(labels::KDF_SHARE_KEY.len() + 4);
    info.extend_from_slice(labels::KDF_SHARE_KEY);
    info.extend_from_slice(&sender.0.to_be_bytes());
    info.extend_from_slice(&recipient.0.to_be_bytes());
    hkdf32(session_id, ikm, &info)
}

fn mask_info(label: &[u8], params: &RoundParams, round: u64, ids: &[SiteId]) -> Vec<u8> {
    let mut info = Vec::with_capacity(label.len() + 17);
    info.extend_from_slice(label);
    info.extend_from_slice(&round.to_be_bytes());
    info.extend_from_slice(&params.vector_len().get().to_be_bytes());
    info.push(params.sum_bits().get());
    for id in ids {
        info.extend_from_slice(&id.0.to_be_bytes());
    }
    info
}

/// Spec §4.5: PRG key of the pairwise mask between `a` and `b` (order-independent).
/// `ikm` is X25519(s_sk_a, s_pk_b).
pub fn pair_mask_key(
    session_id: &[u8; 32],
    ikm: &[u8; 32],
    params: &RoundParams,
    round: u64,
    a: SiteId,
    b: SiteId,
) -> Key32 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    hkdf32(
        session_id,
        ikm,
        &mask_info(labels::KDF_PAIR_MASK, params, round, &[lo, hi]),
    )
}

/// Spec §4.5: PRG key of `owner`'s self mask, from its 32-byte seed b.
pub fn self_mask_key(
    session_id: &[u8; 32],
    seed: &[u8; 32],
    params: &RoundParams,
    round: u64,
    owner: SiteId,
) -> Key32 {
    hkdf32(
        session_id,
        seed,
        &mask_info(labels::KDF_SELF_MASK, params, round, &[owner]),
    )
}

/// Spec §4.6: commitment to the self-mask seed, checked after recovery.
pub fn b_commitment(session_id: &[u8; 32], owner: SiteId, seed: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(labels::B_COMMITMENT);
    h.update(session_id);
    h.update(owner.0.to_be_bytes());
    h.update(seed);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_separate_keys() {
        let p = RoundParams::exact(4, 3, 8, 16).unwrap();
        let sid = [7u8; 32];
        let ikm = [9u8; 32];
        let a = pair_mask_key(&sid, &ikm, &p, 1, SiteId(0), SiteId(1));
        let b = pair_mask_key(&sid, &ikm, &p, 1, SiteId(1), SiteId(0));
        assert_eq!(*a, *b, "pair key is symmetric");
        assert_ne!(
            *a,
            *pair_mask_key(&sid, &ikm, &p, 2, SiteId(0), SiteId(1)),
            "round separates"
        );
        assert_ne!(
            *a,
            *pair_mask_key(&[8; 32], &ikm, &p, 1, SiteId(0), SiteId(1)),
            "session separates"
        );
        assert_ne!(*a, *self_mask_key(&sid, &ikm, &p, 1, SiteId(0)));
        assert_ne!(
            *share_key(&sid, &ikm, SiteId(0), SiteId(1)),
            *share_key(&sid, &ikm, SiteId(1), SiteId(0))
        );
        let p2 = RoundParams::exact(4, 3, 8, 17).unwrap();
        assert_ne!(
            *a,
            *pair_mask_key(&sid, &ikm, &p2, 1, SiteId(0), SiteId(1)),
            "length separates"
        );
    }
}
