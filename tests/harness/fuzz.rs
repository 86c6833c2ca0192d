//! Fuzz entry points: every decoder and every state-machine input. Each function must never
//! panic, whatever the bytes. The first byte of `data` selects a phase / site where needed.

use std::sync::OnceLock;

use amalgam_proto::codec::Decode;
use amalgam_proto::messages::{ToAggregator, ToSite};
use amalgam_proto::params::{Manifest, RoundParams, SiteId};
use amalgam_proto::phase::Phase;
use amalgam_proto::roles::Snapshot;
use amalgam_proto::sim::SimConfig;
use amalgam_proto::site::RoundLog;
use amalgam_proto::{Aggregator, Site, SiteRestore};

use super::{Answer, PHASES, RecordedRound};

/// The recorded round all fuzz targets start from (n = 5, t = 3, d = 16, one dropout).
pub fn fixture() -> &'static RecordedRound {
    static FIXTURE: OnceLock<RecordedRound> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        #[allow(clippy::expect_used)]
        let params = RoundParams::exact(5, 4, 12, 16).expect("valid parameters");
        RecordedRound::record(
            SimConfig::new(params, 1, [0x5a; 32]).drop_site(4, Phase::MaskedInput),
        )
    })
}

/// Every decoder on arbitrary bytes.
pub fn decoders(data: &[u8]) {
    let f = fixture();
    let p = &f.config.params;
    let _ = ToAggregator::from_bytes(data, p);
    let _ = ToSite::from_bytes(data, p);
    let _ = RoundParams::from_bytes(data, &());
    let _ = Manifest::from_bytes(data, &());
    let _ = amalgam_proto::packing::unpack(data, p.d(), p.sum_bits().get());
}

/// Snapshot restoring on arbitrary bytes.
pub fn snapshots(data: &[u8]) {
    let f = fixture();
    let _ = Aggregator::restore(data, f.consortium.manifest());
    let ctx = SiteRestore {
        identity: f.consortium.identity(SiteId(0)).clone(),
        manifest: f.consortium.manifest().clone(),
    };
    let _ = Site::restore(data, &ctx, super::NOW, &mut RoundLog::new());
}

/// `data[0]` picks the phase; the rest is a sequence of length-prefixed (u16 BE) uploads fed to
/// an aggregator collecting that phase, closing the phase after each one (errors ignored).
pub fn aggregator(data: &[u8]) {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let phase = PHASES[usize::from(sel) % PHASES.len()];
    let Ok(mut agg) = f.aggregator_at(phase) else {
        return;
    };
    while rest.len() >= 3 {
        let from = SiteId(u16::from(rest[0] % 8));
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let msg = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let _ = agg.receive_bytes(from, msg);
        if rest.first().is_some_and(|b| b & 1 == 1) {
            let _ = agg.close_phase();
        }
    }
}

/// `data[0]` picks the site and phase; the rest is a sequence of length-prefixed downloads.
pub fn site(data: &[u8]) {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let id = SiteId(u16::from(sel % 4));
    let phase = PHASES[usize::from(sel / 4) % PHASES.len()];
    let Ok(mut site) = f.site_at(id, phase) else {
        return;
    };
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let msg = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let _ = site.answer_bytes(msg);
    }
}

/// Differential check of the aggregator's packed-domain sum: `data[0]` picks B (1..=32),
/// `data[1..3]` the length (mod 1024), and the rest is cut into packed vectors (padding bits
/// cleared) whose [`PackedSum`](amalgam_proto::packed_sum::PackedSum) must equal the sum of
/// their strictly unpacked elements. Panics on any difference.
pub fn packed_sum(data: &[u8]) {
    use amalgam_proto::packed_sum::PackedSum;
    use amalgam_proto::packing::{packed_len, unpack};

    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let bits = sel % 32 + 1;
    let len = usize::from(u16::from_be_bytes(*len)) % 1024;
    let bytes = packed_len(len, bits);
    let used = (len * usize::from(bits)) % 8;
    let vectors: Vec<Vec<u8>> = rest
        .chunks_exact(bytes.max(1))
        .take(64)
        .map(|c| {
            let mut v = c[..bytes].to_vec();
            if let (Some(last), true) = (v.last_mut(), used != 0) {
                *last &= (1u8 << used) - 1;
            }
            v
        })
        .collect();
    let mask = (1u64 << bits) - 1;
    let mut want = vec![0u64; len];
    let mut sum = PackedSum::new(bits, len);
    sum.clear(len);
    for v in &vectors {
        let elements = match unpack(v, len, bits) {
            Ok(e) => e,
            Err(e) => panic!("a vector with cleared padding was refused: {e}"),
        };
        for (w, x) in want.iter_mut().zip(elements) {
            *w = w.wrapping_add(x) & mask;
        }
        sum.add(v);
    }
    let mut got = vec![0u32; len];
    sum.unpack_into(&mut got);
    let got: Vec<u64> = got.into_iter().map(u64::from).collect();
    assert_eq!(got, want, "packed sum differs, B = {bits}, len = {len}");
}

/// The homomorphic fallback's round in its conformance vectors: 4 sites (m = 2), a committee
/// (c, t_c, Q, c_d) = (5, 3, 4, 2), b = 16, d = 5, round 7, all keys from fixed bytes.
pub fn he_setup() -> Option<&'static amalgam_he::RoundSetup> {
    use amalgam_he::decryptor::member_secrets_from_bytes;
    use amalgam_he::{Committee, KaheParams, RoundSetup, SiteDirectory};
    static SETUP: OnceLock<Option<amalgam_he::RoundSetup>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            let sites =
                SiteDirectory::new((0..4u8).map(|i| he_site_key(i).verifying_key()).collect())
                    .ok()?;
            let members = (0..5u8)
                .map(|j| {
                    let (a, b) = he_member_bytes(j);
                    member_secrets_from_bytes(a, b).certify(1)
                })
                .collect();
            let committee = Committee::new(members, 3, 4, 2).ok()?;
            let params = KaheParams::new(16, 4, 5).ok()?;
            RoundSetup::new(params, sites, committee, 2, 7, vec![HE_MODEL]).ok()
        })
        .as_ref()
}

/// The model the HE vectors' uploads were trained on: (round it was published in, digest).
pub const HE_MODEL: (u64, [u8; 32]) = (6, [0x3d; 32]);

/// Site `i`'s identity key in the HE vectors (test key: fixed bytes).
pub fn he_site_key(i: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x10 + i; 32])
}

/// Committee member `j`'s identity and box secret bytes in the HE vectors (test keys).
pub fn he_member_bytes(j: u8) -> ([u8; 32], [u8; 32]) {
    ([0x20 + j; 32], [0x30 + j; 32])
}

/// Every decoder of the homomorphic fallback on arbitrary bytes.
pub fn he_decoders(data: &[u8]) {
    use amalgam_he::{
        CohortStatement, KaheParams, PieceSumRelease, SignedUpload, StatementSignature, UploadView,
    };

    let _ = KaheParams::from_bytes(data, &());
    let _ = amalgam_he::MemberRoundRecord::from_bytes(data);
    let _ = amalgam_he::SiteRoundLog::from_bytes(data);
    let _ = CohortStatement::from_bytes(data, &());
    let _ = StatementSignature::from_bytes(data, &());
    let Some(setup) = he_setup() else {
        return;
    };
    let _ = SignedUpload::from_bytes(data, setup);
    let _ = PieceSumRelease::from_bytes(data, setup);
    for member in 0..setup.committee().size() {
        let _ = UploadView::from_bytes(data, setup, member);
    }
    let _ = amalgam_he::SiteRound::from_bytes(data, setup);
    let _ = amalgam_he::HeAggregator::restore(data, setup.clone());
    let (a, b) = he_member_bytes(0);
    let _ = amalgam_he::Decryptor::restore(
        data,
        setup.clone(),
        0,
        amalgam_he::decryptor::member_secrets_from_bytes(a, b),
    );
}

/// The key the `ledger` fuzz target's audits verify against (the DP ledger tests' key).
pub fn ledger_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

/// The ε ledger's file parser, entry decoder, full audit (signatures, key rotations, policy,
/// chain, re-accounting of whatever parameters decode, anchors) and anchor parser on arbitrary
/// bytes.
pub fn ledger(data: &[u8]) {
    use amalgam_dp::ledger::audit::{Anchor, audit_bytes};
    use amalgam_dp::ledger::entry::EntryBody;
    use amalgam_dp::ledger::store::parse;

    let _ = parse(data);
    let _ = EntryBody::from_bytes(data);
    let anchor = Anchor {
        entries: 2,
        head: [0; 32],
    };
    let _ = audit_bytes(data, &ledger_key().verifying_key(), &[anchor]);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Anchor::parse(text);
    }
}
