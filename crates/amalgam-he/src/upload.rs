//! The site's single signed upload, and the part of it one decryptor sees (spec §5.3).
//!
//! The site signs `label ‖ round context ‖ site ‖ model digest ‖ model round ‖ box public key ‖ H(bodies) ‖
//! H(box_0) ‖ … ‖ H(box_{c−1}) ‖ commitment_0 ‖ … ‖ commitment_{P−1}`. A decryptor receives the
//! [`UploadView`] — everything but the bodies, which it replaces by their digest — and checks the
//! same signature from its own box and the other boxes' digests alone. The upload digest named
//! in cohort statements is the SHA-256 of that signed message.

use amalgam_proto::codec::{Decode, Encode, Reader, Writer};
use amalgam_proto::{DecodeError, SiteId};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::round::RoundSetup;
use crate::seed_box::box_len;
use crate::wire::{MSG_HE_UPLOAD, MSG_HE_UPLOAD_VIEW, put_words, read_field_words};

/// The signed fields common to the upload and its views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadHeader {
    /// The sender.
    pub site: SiteId,
    /// Digest of the model the update was trained on (one of the last s published).
    pub model_digest: [u8; 32],
    /// Round the model was published in: with the round id it fixes the public staleness
    /// weight the site applied ([`crate::staleness_weight`]), signed so that nobody can
    /// re-weight the upload afterwards by claiming another model round.
    pub model_round: u64,
    /// The site's per-round X25519 box public key.
    pub box_public: [u8; 32],
    /// Hash commitment to each piece seed, one per piece.
    pub commitments: Vec<[u8; 32]>,
}

/// The message the site signs.
pub fn signed_message(
    round_context: &[u8; 32],
    header: &UploadHeader,
    bodies_digest: &[u8; 32],
    box_digests: &[[u8; 32]],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(160 + 32 * (box_digests.len() + header.commitments.len()));
    m.extend_from_slice(b"amalgam/v2/he-upload");
    m.extend_from_slice(round_context);
    m.extend_from_slice(&header.site.0.to_be_bytes());
    m.extend_from_slice(&header.model_digest);
    m.extend_from_slice(&header.model_round.to_be_bytes());
    m.extend_from_slice(&header.box_public);
    m.extend_from_slice(bodies_digest);
    for d in box_digests {
        m.extend_from_slice(d);
    }
    for c in &header.commitments {
        m.extend_from_slice(c);
    }
    m
}

/// SHA-256 of the bodies' canonical big-endian words.
pub fn bodies_digest(bodies: &[u64]) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(8 * 1024);
    for chunk in bodies.chunks(1024) {
        buf.clear();
        for w in chunk {
            buf.extend_from_slice(&w.to_be_bytes());
        }
        h.update(&buf);
    }
    h.finalize().into()
}

/// The commitment to one piece seed: `H(label ‖ round context ‖ site ‖ piece ‖ seed)`.
pub fn piece_commitment(
    round_context: &[u8; 32],
    site: SiteId,
    piece: usize,
    seed: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"amalgam/v2/he-piece-commitment");
    h.update(round_context);
    h.update(site.0.to_be_bytes());
    h.update((piece as u16).to_be_bytes());
    h.update(seed);
    h.finalize().into()
}

/// Verifies a site signature (strict Ed25519).
pub(crate) fn verify(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

/// A site's one upload: header, one seed box per committee member, the KAHE bodies, signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedUpload {
    /// Signed header fields.
    pub header: UploadHeader,
    /// Seed box for member j (its pieces' seeds), for every member.
    pub boxes: Vec<Vec<u8>>,
    /// KAHE bodies, `chunks · N` canonical words.
    pub bodies: Vec<u64>,
    /// Site signature over [`signed_message`].
    pub signature: [u8; 64],
}

impl SignedUpload {
    /// The digests of the boxes, in member order.
    pub fn box_digests(&self) -> Vec<[u8; 32]> {
        self.boxes
            .iter()
            .map(|b| Sha256::digest(b).into())
            .collect()
    }

    /// The signed message (recomputed).
    pub fn message(&self, round_context: &[u8; 32]) -> Vec<u8> {
        signed_message(
            round_context,
            &self.header,
            &bodies_digest(&self.bodies),
            &self.box_digests(),
        )
    }

    /// The digest cohort statements name.
    pub fn digest(&self, round_context: &[u8; 32]) -> [u8; 32] {
        Sha256::digest(self.message(round_context)).into()
    }

    /// What member `member` receives: the header, the box digests, its own box.
    pub fn view_for(&self, member: usize) -> Option<UploadView> {
        Some(UploadView {
            header: self.header.clone(),
            bodies_digest: bodies_digest(&self.bodies),
            box_digests: self.box_digests(),
            own_box: self.boxes.get(member)?.clone(),
            signature: self.signature,
        })
    }
}

/// What one committee member receives of a site's upload: never the bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadView {
    /// Signed header fields.
    pub header: UploadHeader,
    /// Digest of the bodies.
    pub bodies_digest: [u8; 32],
    /// Digest of every member's box.
    pub box_digests: Vec<[u8; 32]>,
    /// This member's box.
    pub own_box: Vec<u8>,
    /// Site signature.
    pub signature: [u8; 64],
}

impl UploadView {
    /// The signed message (recomputed).
    pub fn message(&self, round_context: &[u8; 32]) -> Vec<u8> {
        signed_message(
            round_context,
            &self.header,
            &self.bodies_digest,
            &self.box_digests,
        )
    }

    /// The digest cohort statements name.
    pub fn digest(&self, round_context: &[u8; 32]) -> [u8; 32] {
        Sha256::digest(self.message(round_context)).into()
    }
}

/// An upload without its bodies (which are already in the aggregator's sum): what the
/// aggregator keeps to forward views and to re-check signatures when it restores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeptUpload {
    pub(crate) header: UploadHeader,
    pub(crate) bodies_digest: [u8; 32],
    pub(crate) boxes: Vec<Vec<u8>>,
    pub(crate) signature: [u8; 64],
}

impl KeptUpload {
    pub(crate) fn of(u: &SignedUpload) -> Self {
        Self {
            header: u.header.clone(),
            bodies_digest: bodies_digest(&u.bodies),
            boxes: u.boxes.clone(),
            signature: u.signature,
        }
    }

    fn box_digests(&self) -> Vec<[u8; 32]> {
        self.boxes
            .iter()
            .map(|b| Sha256::digest(b).into())
            .collect()
    }

    pub(crate) fn message(&self, round_context: &[u8; 32]) -> Vec<u8> {
        signed_message(
            round_context,
            &self.header,
            &self.bodies_digest,
            &self.box_digests(),
        )
    }

    pub(crate) fn view_for(&self, member: usize) -> Option<UploadView> {
        Some(UploadView {
            header: self.header.clone(),
            bodies_digest: self.bodies_digest,
            box_digests: self.box_digests(),
            own_box: self.boxes.get(member)?.clone(),
            signature: self.signature,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        encode_header(w, &self.header);
        w.bytes(&self.bodies_digest);
        w.count(self.boxes.len());
        for b in &self.boxes {
            w.bytes_prefixed(b);
        }
        w.bytes(&self.signature);
    }

    pub(crate) fn decode(r: &mut Reader<'_>, setup: &RoundSetup) -> Result<Self, DecodeError> {
        let header = decode_header(r, setup)?;
        let bodies_digest = r.array("bodies_digest")?;
        let c = setup.committee().size();
        r.count("boxes", c, c)?;
        let boxes = (0..c)
            .map(|j| read_box(r, setup, j))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            header,
            bodies_digest,
            boxes,
            signature: r.array("signature")?,
        })
    }
}

fn encode_header(w: &mut Writer, h: &UploadHeader) {
    w.u16(h.site.0);
    w.bytes(&h.model_digest);
    w.u64(h.model_round);
    w.bytes(&h.box_public);
    w.count(h.commitments.len());
    for c in &h.commitments {
        w.bytes(c);
    }
}

fn decode_header(r: &mut Reader<'_>, setup: &RoundSetup) -> Result<UploadHeader, DecodeError> {
    let site = SiteId(r.u16("site")?);
    let model_digest = r.array("model_digest")?;
    let model_round = r.u64("model_round")?;
    let box_public = r.array("box_public")?;
    let pieces = setup.committee().pieces();
    let n = r.count("commitments", pieces, pieces)?;
    let commitments = (0..n)
        .map(|_| r.array("commitment"))
        .collect::<Result<Vec<[u8; 32]>, _>>()?;
    Ok(UploadHeader {
        site,
        model_digest,
        model_round,
        box_public,
        commitments,
    })
}

fn read_box(r: &mut Reader<'_>, setup: &RoundSetup, member: usize) -> Result<Vec<u8>, DecodeError> {
    let len = box_len(setup.committee().held_by(member).len());
    let got = r.count("box_len", len, len)?;
    Ok(r.bytes(got, "box")?.to_vec())
}

impl Encode for SignedUpload {
    fn encode(&self, w: &mut Writer) {
        w.header(MSG_HE_UPLOAD);
        encode_header(w, &self.header);
        w.count(self.boxes.len());
        for b in &self.boxes {
            w.bytes_prefixed(b);
        }
        put_words(w, &self.bodies);
        w.bytes(&self.signature);
    }
}

impl Decode for SignedUpload {
    type Context = RoundSetup;
    const NAME: &'static str = "SignedUpload";
    fn decode(r: &mut Reader<'_>, setup: &RoundSetup) -> Result<Self, DecodeError> {
        r.expect_header(MSG_HE_UPLOAD)?;
        let header = decode_header(r, setup)?;
        let c = setup.committee().size();
        r.count("boxes", c, c)?;
        let boxes = (0..c)
            .map(|j| read_box(r, setup, j))
            .collect::<Result<Vec<_>, _>>()?;
        let bodies = read_field_words(r, setup.params().body_len(), "bodies")?;
        let signature = r.array("signature")?;
        Ok(Self {
            header,
            boxes,
            bodies,
            signature,
        })
    }
}

impl Encode for UploadView {
    fn encode(&self, w: &mut Writer) {
        w.header(MSG_HE_UPLOAD_VIEW);
        encode_header(w, &self.header);
        w.bytes(&self.bodies_digest);
        w.count(self.box_digests.len());
        for d in &self.box_digests {
            w.bytes(d);
        }
        w.bytes_prefixed(&self.own_box);
        w.bytes(&self.signature);
    }
}

impl UploadView {
    /// Decodes the view addressed to `member` (its box length depends on the pieces it holds).
    pub fn from_bytes(
        bytes: &[u8],
        setup: &RoundSetup,
        member: usize,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.expect_header(MSG_HE_UPLOAD_VIEW)?;
        let header = decode_header(&mut r, setup)?;
        let bodies_digest = r.array("bodies_digest")?;
        let c = setup.committee().size();
        r.count("box_digests", c, c)?;
        let box_digests = (0..c)
            .map(|_| r.array("box_digest"))
            .collect::<Result<Vec<[u8; 32]>, _>>()?;
        let own_box = read_box(&mut r, setup, member)?;
        let signature = r.array("signature")?;
        r.finish("UploadView")?;
        Ok(Self {
            header,
            bodies_digest,
            box_digests,
            own_box,
            signature,
        })
    }
}
