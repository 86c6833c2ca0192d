//! Protocol messages and their canonical encodings (spec §3.3).
//!
//! Every message: `"AG" | version 0x01 | type | round u64 | ...`, integers big-endian, counts
//! `u32` bounded by the [`RoundParams`] before anything is read, lists strictly ascending by
//! site id (so each message has exactly one encoding), no trailing bytes. Site → aggregator
//! messages end with a 64-byte Ed25519 signature over their body (spec §4.8).

use crate::codec::{Decode, Encode, Reader, Writer, msg_type};
use crate::crypto::share_box::CIPHERTEXT_LEN;
use crate::error::DecodeError;
use crate::packing::check_packed;
use crate::params::{RoundParams, SiteId};

/// Ed25519 signature bytes.
pub type SignatureBytes = [u8; 64];
/// X25519 public key bytes.
pub type PublicKeyBytes = [u8; 32];
/// One encrypted share pair (ChaCha20-Poly1305 ciphertext and tag).
pub type ShareCiphertext = [u8; CIPHERTEXT_LEN];
/// The y-bytes of one revealed Shamir share (x is the revealing site's id + 1).
pub type ShareBytes = [u8; 32];

fn max_sites(p: &RoundParams) -> usize {
    p.n()
}

fn read_site(r: &mut Reader<'_>, field: &'static str) -> Result<SiteId, DecodeError> {
    Ok(SiteId(r.u16(field)?))
}

/// Reads `count` ascending site-keyed entries.
fn read_ascending<T>(
    r: &mut Reader<'_>,
    count: usize,
    field: &'static str,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<(SiteId, T)>, DecodeError> {
    let mut out: Vec<(SiteId, T)> = Vec::with_capacity(r.capacity(count, 2));
    for _ in 0..count {
        let id = read_site(r, field)?;
        if out.last().is_some_and(|(last, _)| *last >= id) {
            return Err(DecodeError::InvalidValue {
                field,
                reason: "site ids must be strictly ascending",
            });
        }
        let v = item(r)?;
        out.push((id, v));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------

/// Round 0, site → aggregator: two fresh X25519 public keys, signed with the identity key
/// over the round context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertiseKeys {
    /// Round number.
    pub round: u64,
    /// Sender.
    pub sender: SiteId,
    /// Public key for share encryption (c_pk).
    pub c_pk: PublicKeyBytes,
    /// Public key for mask agreement (s_pk).
    pub s_pk: PublicKeyBytes,
    /// Signature over the body.
    pub signature: SignatureBytes,
}

impl AdvertiseKeys {
    /// Encoded length (fixed).
    pub const LEN: usize = 4 + 8 + 2 + 32 + 32 + 64;

    /// Canonical bytes covered by the signature.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        w.header(msg_type::ADVERTISE_KEYS);
        w.u64(self.round);
        w.u16(self.sender.0);
        w.bytes(&self.c_pk);
        w.bytes(&self.s_pk);
        w.into_bytes()
    }
}

impl Encode for AdvertiseKeys {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.body());
        w.bytes(&self.signature);
    }
}

impl Decode for AdvertiseKeys {
    type Context = RoundParams;
    const NAME: &'static str = "AdvertiseKeys";
    fn decode(r: &mut Reader<'_>, _: &RoundParams) -> Result<Self, DecodeError> {
        r.expect_header(msg_type::ADVERTISE_KEYS)?;
        Ok(Self {
            round: r.u64("round")?,
            sender: read_site(r, "sender")?,
            c_pk: r.array("c_pk")?,
            s_pk: r.array("s_pk")?,
            signature: r.array("signature")?,
        })
    }
}

/// End of round 0, aggregator → every site in U1: all accepted advertisements, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysBroadcast {
    /// Round number.
    pub round: u64,
    /// The advertisements of U1, ascending by sender.
    pub adverts: Vec<AdvertiseKeys>,
}

impl Encode for KeysBroadcast {
    fn encode(&self, w: &mut Writer) {
        w.header(msg_type::KEYS_BROADCAST);
        w.u64(self.round);
        w.count(self.adverts.len());
        for a in &self.adverts {
            a.encode(w);
        }
    }
}

impl Decode for KeysBroadcast {
    type Context = RoundParams;
    const NAME: &'static str = "KeysBroadcast";
    fn decode(r: &mut Reader<'_>, p: &RoundParams) -> Result<Self, DecodeError> {
        r.expect_header(msg_type::KEYS_BROADCAST)?;
        let round = r.u64("round")?;
        let count = r.count("adverts.count", 1, max_sites(p))?;
        let mut adverts: Vec<AdvertiseKeys> =
            Vec::with_capacity(r.capacity(count, AdvertiseKeys::LEN));
        for _ in 0..count {
            let a = AdvertiseKeys::decode(r, p)?;
            if adverts.last().is_some_and(|l| l.sender >= a.sender) {
                return Err(DecodeError::InvalidValue {
                    field: "adverts",
                    reason: "senders must be strictly ascending",
                });
            }
            adverts.push(a);
        }
        Ok(Self { round, adverts })
    }
}

/// Round 1, site → aggregator: a commitment to the self-mask seed b and, for each neighbour
/// in U1, the encrypted shares of s_sk and b.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareKeys {
    /// Round number.
    pub round: u64,
    /// Sender.
    pub sender: SiteId,
    /// SHA-256 commitment to b (spec §4.6).
    pub b_commitment: [u8; 32],
    /// (recipient, ciphertext), ascending by recipient.
    pub shares: Vec<(SiteId, ShareCiphertext)>,
    /// Signature over the body.
    pub signature: SignatureBytes,
}

impl ShareKeys {
    /// Canonical bytes covered by the signature.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(50 + self.shares.len() * (2 + CIPHERTEXT_LEN));
        w.header(msg_type::SHARE_KEYS);
        w.u64(self.round);
        w.u16(self.sender.0);
        w.bytes(&self.b_commitment);
        w.count(self.shares.len());
        for (to, ct) in &self.shares {
            w.u16(to.0);
            w.bytes(ct);
        }
        w.into_bytes()
    }
}

impl Encode for ShareKeys {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.body());
        w.bytes(&self.signature);
    }
}

impl Decode for ShareKeys {
    type Context = RoundParams;
    const NAME: &'static str = "ShareKeys";
    fn decode(r: &mut Reader<'_>, p: &RoundParams) -> Result<Self, DecodeError> {
        r.expect_header(msg_type::SHARE_KEYS)?;
        let round = r.u64("round")?;
        let sender = read_site(r, "sender")?;
        let b_commitment = r.array("b_commitment")?;
        let count = r.count("shares.count", 0, max_sites(p) - 1)?;
        let shares = read_ascending(r, count, "shares.recipient", |r| {
            r.array("shares.ciphertext")
        })?;
        Ok(Self {
            round,
            sender,
            b_commitment,
            shares,
            signature: r.array("signature")?,
        })
    }
}

/// End of round 1, aggregator → each site in U2: the ciphertexts addressed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedShares {
    /// Round number.
    pub round: u64,
    /// (sender, ciphertext), ascending by sender.
    pub shares: Vec<(SiteId, ShareCiphertext)>,
}

impl Encode for RoutedShares {
    fn encode(&self, w: &mut Writer) {
        w.header(msg_type::ROUTED_SHARES);
        w.u64(self.round);
        w.count(self.shares.len());
        for (from, ct) in &self.shares {
            w.u16(from.0);
            w.bytes(ct);
        }
    }
}

impl Decode for RoutedShares {
    type Context = RoundParams;
    const NAME: &'static str = "RoutedShares";
    fn decode(r: &mut Reader<'_>, p: &RoundParams) -> Result<Self, DecodeError> {
        r.expect_header(msg_type::ROUTED_SHARES)?;
        let round = r.u64("round")?;
        let count = r.count("shares.count", 0, max_sites(p) - 1)?;
        let shares = read_ascending(r, count, "shares.sender", |r| r.array("shares.ciphertext"))?;
        Ok(Self { round, shares })
    }
}

/// Round 2, site → aggregator: the masked input, bit-packed at B bits per element.
#[derive(Clone, PartialEq, Eq)]
pub struct MaskedInput {
    /// Round number.
    pub round: u64,
    /// Sender.
    pub sender: SiteId,
    /// ⌈d·B/8⌉ bytes (spec §3.4).
    pub packed: Vec<u8>,
    /// Signature over the body.
    pub signature: SignatureBytes,
}

impl core::fmt::Debug for MaskedInput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MaskedInput")
            .field("round", &self.round)
            .field("sender", &self.sender)
            .field("packed_len", &self.packed.len())
            .finish_non_exhaustive()
    }
}

impl MaskedInput {
    /// Canonical bytes covered by the signature.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(18 + self.packed.len());
        w.header(msg_type::MASKED_INPUT);
        w.u64(self.round);
        w.u16(self.sender.0);
        w.bytes_prefixed(&self.packed);
        w.into_bytes()
    }
}

impl Encode for MaskedInput {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.body());
        w.bytes(&self.signature);
    }
}

impl Decode for MaskedInput {
    type Context = RoundParams;
    const NAME: &'static str = "MaskedInput";
    fn decode(r: &mut Reader<'_>, p: &RoundParams) -> Result<Self, DecodeError> {
        r.expect_header(msg_type::MASKED_INPUT)?;
        let round = r.u64("round")?;
        let sender = read_site(r, "sender")?;
        let len = p.packed_len();
        let packed = r.bytes_prefixed("packed", len, len)?;
        check_packed(packed, p.d(), p.sum_bits().get(), "packed")?;
        Ok(Self {
            round,
            sender,
            packed: packed.to_vec(),
            signature: r.array("signature")?,
        })
    }
}

/// End of round 2, aggregator → each site in U3: the survivor set U3 to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurvivorSet {
    /// Round number.
    pub round: u64,
    /// U3, strictly ascending.
    pub survivors: Vec<SiteId>,
}

impl Encode for SurvivorSet {
    fn encode(&self, w: &mut Writer) {
        w.header(msg_type::SURVIVOR_SET);
        w.u64(self.round);
        w.count(self.survivors.len());
        for s in &self.survivors {
            w.u16(s.0);
        }
    }
}

impl Decode for SurvivorSet {
    type Context = RoundParams;
    const NAME: &'static str = "SurvivorSet";
    fn decode(r: &mut Reader<'_>, p: &RoundParams) -> Result<Self, DecodeError> {
        r.expect_header(msg_type::SURVIVOR_SET)?;
        let round = r.u64("round")?;
        let count = r.count("survivors.count", 1, max_sites(p))?;
        let survivors = read_ascending(r, count, "survivors", |_| Ok(()))?
            .into_iter()
            .map(|(id, ())| id)
            .collect();
        Ok(Self { round, survivors })
    }
}

/// Round 3, site → aggregator: the site's signature over (session id, U3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencySignature {
    /// Round number.
    pub round: u64,
    /// Sender.
    pub sender: SiteId,
    /// Signature over `SIG_CONSISTENCY || session_id || U3` (spec §4.8).
    pub signature: SignatureBytes,
}

impl Encode for ConsistencySignature {
    fn encode(&self, w: &mut Writer) {
        w.header(msg_type::CONSISTENCY_SIGNATURE);
        w.u64(self.round);
        w.u16(self.sender.0);
        w.bytes(&self.signature);
    }
}

impl Decode for ConsistencySignature {
    type Context = RoundParams;
    const NAME: &'static str = "ConsistencySignature";
    fn decode(r: &mut Reader<'_>, _: &RoundParams) -> Result<Self, DecodeError> {
        r.expect_header(msg_type::CONSISTENCY_SIGNATURE)?;
        Ok(Self {
            round: r.u64("round")?,
            sender: read_site(r, "sender")?,
            signature: r.array("signature")?,
        })
    }
}

/// End of round 3, aggregator → each site in U4: the survivors' consistency signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// Round number.
    pub round: u64,
    /// (signer, signature), ascending by signer.
    pub signatures: Vec<(SiteId, SignatureBytes)>,
}

impl Encode for UnmaskRequest {
    fn encode(&self, w: &mut Writer) {
        w.header(msg_type::UNMASK_REQUEST);
        w.u64(self.round);
        w.count(self.signatures.len());
        for (id, sig) in &self.signatures {
            w.u16(id.0);
            w.bytes(sig);
        }
    }
}

impl Decode for UnmaskRequest {
    type Context = RoundParams;
    const NAME: &'static str = "UnmaskRequest";
    fn decode(r: &mut Reader<'_>, p: &RoundParams) -> Result<Self, DecodeError> {
        r.expect_header(msg_type::UNMASK_REQUEST)?;
        let round = r.u64("round")?;
        let count = r.count("signatures.count", 1, max_sites(p))?;
        let signatures = read_ascending(r, count, "signatures.signer", |r| {
            r.array("signatures.signature")
        })?;
        Ok(Self { round, signatures })
    }
}

/// Round 4, site → aggregator: b-shares of the survivors and s_sk-shares of the dropped
/// sites this site holds shares of — never both for one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskShares {
    /// Round number.
    pub round: u64,
    /// Sender.
    pub sender: SiteId,
    /// (owner, share of owner's b) for owners in U3, ascending.
    pub b_shares: Vec<(SiteId, ShareBytes)>,
    /// (owner, share of owner's s_sk) for dropped owners, ascending.
    pub s_shares: Vec<(SiteId, ShareBytes)>,
    /// Signature over the body.
    pub signature: SignatureBytes,
}

impl UnmaskShares {
    /// Canonical bytes covered by the signature.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(22 + 34 * (self.b_shares.len() + self.s_shares.len()));
        w.header(msg_type::UNMASK_SHARES);
        w.u64(self.round);
        w.u16(self.sender.0);
        for list in [&self.b_shares, &self.s_shares] {
            w.count(list.len());
            for (id, y) in list {
                w.u16(id.0);
                w.bytes(y);
            }
        }
        w.into_bytes()
    }
}

impl Encode for UnmaskShares {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.body());
        w.bytes(&self.signature);
    }
}

impl Decode for UnmaskShares {
    type Context = RoundParams;
    const NAME: &'static str = "UnmaskShares";
    fn decode(r: &mut Reader<'_>, p: &RoundParams) -> Result<Self, DecodeError> {
        r.expect_header(msg_type::UNMASK_SHARES)?;
        let round = r.u64("round")?;
        let sender = read_site(r, "sender")?;
        let nb = r.count("b_shares.count", 0, max_sites(p))?;
        let b_shares = read_ascending(r, nb, "b_shares.owner", |r| r.array("b_shares.y"))?;
        let ns = r.count("s_shares.count", 0, max_sites(p))?;
        let s_shares = read_ascending(r, ns, "s_shares.owner", |r| r.array("s_shares.y"))?;
        Ok(Self {
            round,
            sender,
            b_shares,
            s_shares,
            signature: r.array("signature")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------

/// Any site → aggregator message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToAggregator {
    /// Round 0.
    AdvertiseKeys(AdvertiseKeys),
    /// Round 1.
    ShareKeys(ShareKeys),
    /// Round 2.
    MaskedInput(MaskedInput),
    /// Round 3.
    ConsistencySignature(ConsistencySignature),
    /// Round 4.
    UnmaskShares(UnmaskShares),
}

impl ToAggregator {
    /// The claimed sender.
    pub fn sender(&self) -> SiteId {
        match self {
            ToAggregator::AdvertiseKeys(m) => m.sender,
            ToAggregator::ShareKeys(m) => m.sender,
            ToAggregator::MaskedInput(m) => m.sender,
            ToAggregator::ConsistencySignature(m) => m.sender,
            ToAggregator::UnmaskShares(m) => m.sender,
        }
    }

    /// The round number in the message.
    pub fn round(&self) -> u64 {
        match self {
            ToAggregator::AdvertiseKeys(m) => m.round,
            ToAggregator::ShareKeys(m) => m.round,
            ToAggregator::MaskedInput(m) => m.round,
            ToAggregator::ConsistencySignature(m) => m.round,
            ToAggregator::UnmaskShares(m) => m.round,
        }
    }

    /// Message name (as in the spec).
    pub fn name(&self) -> &'static str {
        match self {
            ToAggregator::AdvertiseKeys(_) => "AdvertiseKeys",
            ToAggregator::ShareKeys(_) => "ShareKeys",
            ToAggregator::MaskedInput(_) => "MaskedInput",
            ToAggregator::ConsistencySignature(_) => "ConsistencySignature",
            ToAggregator::UnmaskShares(_) => "UnmaskShares",
        }
    }
}

impl Encode for ToAggregator {
    fn encode(&self, w: &mut Writer) {
        match self {
            ToAggregator::AdvertiseKeys(m) => m.encode(w),
            ToAggregator::ShareKeys(m) => m.encode(w),
            ToAggregator::MaskedInput(m) => m.encode(w),
            ToAggregator::ConsistencySignature(m) => m.encode(w),
            ToAggregator::UnmaskShares(m) => m.encode(w),
        }
    }
}

impl Decode for ToAggregator {
    type Context = RoundParams;
    const NAME: &'static str = "ToAggregator";
    fn decode(r: &mut Reader<'_>, p: &RoundParams) -> Result<Self, DecodeError> {
        let ty = r.clone().header()?;
        Ok(match ty {
            msg_type::ADVERTISE_KEYS => ToAggregator::AdvertiseKeys(AdvertiseKeys::decode(r, p)?),
            msg_type::SHARE_KEYS => ToAggregator::ShareKeys(ShareKeys::decode(r, p)?),
            msg_type::MASKED_INPUT => ToAggregator::MaskedInput(MaskedInput::decode(r, p)?),
            msg_type::CONSISTENCY_SIGNATURE => {
                ToAggregator::ConsistencySignature(ConsistencySignature::decode(r, p)?)
            }
            msg_type::UNMASK_SHARES => ToAggregator::UnmaskShares(UnmaskShares::decode(r, p)?),
            found => return Err(DecodeError::UnknownMessageType { found }),
        })
    }
}

/// Any aggregator → site message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToSite {
    /// End of round 0.
    KeysBroadcast(KeysBroadcast),
    /// End of round 1.
    RoutedShares(RoutedShares),
    /// End of round 2.
    SurvivorSet(SurvivorSet),
    /// End of round 3.
    UnmaskRequest(UnmaskRequest),
}

impl ToSite {
    /// The round number in the message.
    pub fn round(&self) -> u64 {
        match self {
            ToSite::KeysBroadcast(m) => m.round,
            ToSite::RoutedShares(m) => m.round,
            ToSite::SurvivorSet(m) => m.round,
            ToSite::UnmaskRequest(m) => m.round,
        }
    }

    /// Message name (as in the spec).
    pub fn name(&self) -> &'static str {
        match self {
            ToSite::KeysBroadcast(_) => "KeysBroadcast",
            ToSite::RoutedShares(_) => "RoutedShares",
            ToSite::SurvivorSet(_) => "SurvivorSet",
            ToSite::UnmaskRequest(_) => "UnmaskRequest",
        }
    }
}

impl Encode for ToSite {
    fn encode(&self, w: &mut Writer) {
        match self {
            ToSite::KeysBroadcast(m) => m.encode(w),
            ToSite::RoutedShares(m) => m.encode(w),
            ToSite::SurvivorSet(m) => m.encode(w),
            ToSite::UnmaskRequest(m) => m.encode(w),
        }
    }
}

impl Decode for ToSite {
    type Context = RoundParams;
    const NAME: &'static str = "ToSite";
    fn decode(r: &mut Reader<'_>, p: &RoundParams) -> Result<Self, DecodeError> {
        let ty = r.clone().header()?;
        Ok(match ty {
            msg_type::KEYS_BROADCAST => ToSite::KeysBroadcast(KeysBroadcast::decode(r, p)?),
            msg_type::ROUTED_SHARES => ToSite::RoutedShares(RoutedShares::decode(r, p)?),
            msg_type::SURVIVOR_SET => ToSite::SurvivorSet(SurvivorSet::decode(r, p)?),
            msg_type::UNMASK_REQUEST => ToSite::UnmaskRequest(UnmaskRequest::decode(r, p)?),
            found => return Err(DecodeError::UnknownMessageType { found }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> RoundParams {
        RoundParams::exact(5, 4, 7, 10).unwrap()
    }

    #[test]
    fn round_trips() {
        let p = p();
        let adv = AdvertiseKeys {
            round: 9,
            sender: SiteId(2),
            c_pk: [1; 32],
            s_pk: [2; 32],
            signature: [3; 64],
        };
        assert_eq!(adv.to_bytes().len(), AdvertiseKeys::LEN);
        let msgs = vec![
            ToAggregator::AdvertiseKeys(adv.clone()),
            ToAggregator::ShareKeys(ShareKeys {
                round: 9,
                sender: SiteId(1),
                b_commitment: [4; 32],
                shares: vec![
                    (SiteId(0), [5; CIPHERTEXT_LEN]),
                    (SiteId(3), [6; CIPHERTEXT_LEN]),
                ],
                signature: [7; 64],
            }),
            ToAggregator::MaskedInput(MaskedInput {
                round: 9,
                sender: SiteId(4),
                packed: crate::packing::pack(&[1; 10], p.sum_bits().get()),
                signature: [8; 64],
            }),
            ToAggregator::ConsistencySignature(ConsistencySignature {
                round: 9,
                sender: SiteId(0),
                signature: [9; 64],
            }),
            ToAggregator::UnmaskShares(UnmaskShares {
                round: 9,
                sender: SiteId(0),
                b_shares: vec![(SiteId(0), [1; 32]), (SiteId(2), [2; 32])],
                s_shares: vec![(SiteId(1), [3; 32])],
                signature: [4; 64],
            }),
        ];
        for m in msgs {
            assert_eq!(ToAggregator::from_bytes(&m.to_bytes(), &p).unwrap(), m);
        }
        let down = vec![
            ToSite::KeysBroadcast(KeysBroadcast {
                round: 9,
                adverts: vec![adv],
            }),
            ToSite::RoutedShares(RoutedShares {
                round: 9,
                shares: vec![(SiteId(4), [1; CIPHERTEXT_LEN])],
            }),
            ToSite::SurvivorSet(SurvivorSet {
                round: 9,
                survivors: vec![SiteId(0), SiteId(4)],
            }),
            ToSite::UnmaskRequest(UnmaskRequest {
                round: 9,
                signatures: vec![(SiteId(1), [1; 64])],
            }),
        ];
        for m in down {
            assert_eq!(ToSite::from_bytes(&m.to_bytes(), &p).unwrap(), m);
        }
    }

    #[test]
    fn strictness() {
        let p = p();
        let s = SurvivorSet {
            round: 1,
            survivors: vec![SiteId(2), SiteId(1)],
        };
        assert!(matches!(
            SurvivorSet::from_bytes(&s.to_bytes(), &p),
            Err(DecodeError::InvalidValue { .. })
        ));
        let s = SurvivorSet {
            round: 1,
            survivors: vec![SiteId(1); 6],
        };
        assert!(matches!(
            SurvivorSet::from_bytes(&s.to_bytes(), &p),
            Err(DecodeError::LengthOutOfBounds {
                field: "survivors.count",
                declared: 6,
                ..
            })
        ));
        let mut b = SurvivorSet {
            round: 1,
            survivors: vec![SiteId(1)],
        }
        .to_bytes();
        b.push(0);
        assert!(matches!(
            SurvivorSet::from_bytes(&b, &p),
            Err(DecodeError::TrailingBytes { .. })
        ));
        let m = MaskedInput {
            round: 1,
            sender: SiteId(0),
            packed: vec![0; 3],
            signature: [0; 64],
        };
        assert!(matches!(
            MaskedInput::from_bytes(&m.to_bytes(), &p),
            Err(DecodeError::LengthOutOfBounds {
                field: "packed",
                ..
            })
        ));
        assert!(matches!(
            ToSite::from_bytes(&m.to_bytes(), &p),
            Err(DecodeError::UnknownMessageType { .. })
        ));
    }
}
