//! Conformance test vectors, `protocol-spec/test-vectors/v2/*.json` (spec §12; v1 was
//! retired with wire version 1, see the change log in spec §13).
//!
//! * `every_vector_file_checks` reads every file in the folder (failing if there are none) and
//!   checks it against the implementation using only what the file says: round vectors are
//!   replayed byte for byte through fresh sites (from their RNG seeds) and a fresh aggregator;
//!   `*_bad_*` vectors rebuild the named party at the named phase from their base vector, feed
//!   the bad message and expect the named error code and sender, with the state unchanged.
//!   Files named `he_*` belong to the homomorphic fallback and are checked by `he_vectors.rs`.
//! * `vectors_are_current` regenerates all vectors in memory and compares them with the files.
//! * `generate_vectors` (ignored) rewrites the folder:
//!   `cargo test -p amalgam-tests --test conformance_vectors -- --ignored generate_vectors`

use std::collections::BTreeMap;
use std::path::PathBuf;

use amalgam_proto::codec::{Decode, Encode};
use amalgam_proto::crypto::{kdf, sign};
use amalgam_proto::messages::*;
use amalgam_proto::params::{
    AggregatorTrust, Colluders, Dropouts, InputBits, Manifest, MinCohort, NeighbourGraph,
    ParamsRequest, RoundParams, SiteCount, SiteId, SumBits, SumMode, Threshold, VectorLen,
};
use amalgam_proto::phase::Phase;
use amalgam_proto::roles::{AggregatorStep, Snapshot};
use amalgam_proto::sim::{self, Direction, SimConfig};
use amalgam_proto::site::RoundLog;
use amalgam_proto::{Aggregator, Error, Site};
use amalgam_tests::harness::{Answer, NOW, PHASES, RecordedRound};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{Value, json};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../protocol-spec/test-vectors/v2")
}

fn phase_name(p: Phase) -> String {
    p.to_string()
}

fn parse_phase(s: &str) -> Phase {
    match s {
        "AdvertiseKeys" => Phase::AdvertiseKeys,
        "ShareKeys" => Phase::ShareKeys,
        "MaskedInput" => Phase::MaskedInput,
        "ConsistencyCheck" => Phase::ConsistencyCheck,
        "Unmasking" => Phase::Unmasking,
        "Finished" => Phase::Finished,
        other => panic!("unknown phase {other}"),
    }
}

// ------------------------------------------------------------------------------------------
// Generation

fn params_json(p: &RoundParams) -> Value {
    let (graph, k) = match p.graph() {
        NeighbourGraph::Complete => ("complete", 0),
        NeighbourGraph::Harary { k } => ("harary", k),
    };
    json!({
        "n": p.sites().get(), "t": p.threshold().get(), "min_cohort": p.min_cohort().get(),
        "b": p.input_bits().get(), "B": p.sum_bits().get(),
        "sum_mode": match p.sum_mode() { SumMode::Exact => "exact", SumMode::Modular => "modular" },
        "d": p.vector_len().get(), "graph": graph, "k": k,
        "c": p.colluders().get(), "f": p.dropouts().get(),
        "trust": match p.trust() { AggregatorTrust::Curious => "curious", AggregatorTrust::Malicious => "malicious" },
    })
}

fn round_vector(name: &str, description: &str, r: &RecordedRound) -> Value {
    let p = &r.config.params;
    let n = p.n();
    let ids: Vec<SiteId> = (0..n as u16).map(SiteId).collect();
    let agg = r.aggregator_at(Phase::ShareKeys).ok();
    let expected = match &r.output {
        Ok(out) => json!({
            "contributors": out.contributors.iter().map(|s| s.0).collect::<Vec<_>>(),
            "dropped": out.dropped.iter().map(|s| s.0).collect::<Vec<_>>(),
            "sum": out.sum,
        }),
        Err(Error::NotEnoughSites { phase, needed, got }) => json!({
            "error": "not_enough_sites", "phase": phase_name(*phase), "needed": needed, "got": got,
        }),
        Err(e) => panic!("unexpected vector outcome {e:?}"),
    };
    json!({
        "name": name,
        "description": description,
        "version": 2,
        "kind": "round",
        "round": r.config.round,
        "params": params_json(p),
        "params_encoding": hex::encode(p.to_bytes()),
        "identity_secret_keys": ids.iter().map(|i| hex::encode(r.consortium.identity(*i).to_bytes())).collect::<Vec<_>>(),
        "manifest": r.consortium.manifest().keys().iter().map(|k| hex::encode(k.as_bytes())).collect::<Vec<_>>(),
        "manifest_digest": hex::encode(r.consortium.manifest().digest()),
        "site_rng_seeds": ids.iter().map(|i| hex::encode(sim::site_seed(&r.config.seed, *i))).collect::<Vec<_>>(),
        "inputs": r.config.inputs,
        "dropouts": r.config.dropouts.iter().map(|d| json!({"site": d.site.0, "before": phase_name(d.before)})).collect::<Vec<_>>(),
        "context_digest": hex::encode(r.consortium.manifest().digest()),
        "round_context": hex::encode(kdf::masking_round_context(&r.consortium.manifest().digest(), p, r.config.round)),
        "session_id": agg.and_then(|a| a.session_id()).map(hex::encode),
        "messages": r.transcript.iter().map(|e| json!({
            "phase": phase_name(e.phase),
            "direction": match e.direction { Direction::ToAggregator => "to_aggregator", Direction::ToSite => "to_site" },
            "site": e.site.0,
            "hex": hex::encode(&e.bytes),
        })).collect::<Vec<_>>(),
        "expected": expected,
    })
}

#[allow(clippy::too_many_arguments)]
fn reject_vector(
    name: &str,
    description: &str,
    base: &str,
    target: &str,
    phase: Phase,
    site: u16,
    first: bool,
    bytes: &[u8],
    error: &str,
    sender: &str,
) -> Value {
    json!({
        "name": name, "description": description, "version": 2, "kind": "reject", "base": base,
        "target": target, "phase": phase_name(phase), "site": site,
        "deliver_phase_uploads_first": first, "hex": hex::encode(bytes),
        "expected_error": error, "expected_sender": sender,
    })
}

fn params_vector(
    name: &str,
    description: &str,
    raw: [u32; 10],
    mode: &str,
    trust: &str,
    expected: &str,
) -> Value {
    json!({
        "name": name, "description": description, "version": 2, "kind": "params",
        "params": {"n": raw[0], "t": raw[1], "min_cohort": raw[2], "b": raw[3], "B": raw[4],
                   "sum_mode": mode, "d": raw[5], "graph": if raw[6] == 0 { "complete" } else { "harary" }, "k": raw[7],
                   "c": raw[8], "f": raw[9], "trust": trust},
        "expected": expected,
    })
}

fn up(r: &RecordedRound, phase: Phase, site: u16) -> &[u8] {
    &r.uploads(phase)
        .find(|e| e.site == SiteId(site))
        .unwrap()
        .bytes
}

fn down(r: &RecordedRound, phase: Phase, site: u16) -> &[u8] {
    &r.downloads(phase)
        .find(|e| e.site == SiteId(site))
        .unwrap()
        .bytes
}

fn generate() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut put = |v: Value| {
        let name = v["name"].as_str().unwrap().to_string();
        out.insert(format!("{name}.json"), v);
    };

    // --- round vectors
    // t = 4: c = 2 colluders, f = 1 dropout. B = 11, d·B = 99 bits: 5 padding bits.
    let p5 = RoundParams::exact(5, 4, 8, 9).unwrap();
    let base = RecordedRound::record(SimConfig::new(p5, 1, [0x01; 32]));
    let base_name = "round_complete_n5_no_dropout";
    put(round_vector(
        base_name,
        "n=5, t=4, c=2, f=1, b=8, B=11 (exact), d=9, complete graph, malicious-aggregator model, no dropout",
        &base,
    ));

    let p7 = RoundParams::exact(7, 5, 12, 20).unwrap();
    let r7 = RecordedRound::record(
        SimConfig::new(p7, 7, [0x07; 32])
            .drop_site(3, Phase::MaskedInput)
            .drop_site(5, Phase::Unmasking),
    );
    put(round_vector(
        "round_complete_n7_dropouts",
        "n=7, t=5, c=2, f=2, b=12, B=15, d=20; site 3 drops before MaskedInput (its s_sk is recovered), site 5 before Unmasking (its input still counts)",
        &r7,
    ));

    let ph = RoundParams::harary(8, 4, 4, 5, 1, 1, 10, 12).unwrap();
    let rh =
        RecordedRound::record(SimConfig::new(ph, 3, [0x08; 32]).drop_site(2, Phase::MaskedInput));
    put(round_vector(
        "round_harary_n8_k4_dropout",
        "SecAgg+ Harary graph k=4, n=8, t=4, c=1, f=1, min cohort 5, curious-aggregator model (the only one Harary runs in); site 2 drops before MaskedInput",
        &rh,
    ));

    let pm = RoundParams::modular(4, 3, 16, 10).unwrap();
    let rm = RecordedRound::record(
        SimConfig::new(pm, 11, [0x04; 32]).drop_site(0, Phase::ConsistencyCheck),
    );
    put(round_vector(
        "round_modular_n4_b16",
        "modular sums, B=b=16, d=10; site 0 drops before ConsistencyCheck (its input counts)",
        &rm,
    ));

    let pw = RoundParams::exact(3, 3, 40, 5).unwrap();
    let rw = RecordedRound::record(SimConfig::new(pw, 2, [0x03; 32]));
    put(round_vector(
        "round_wide_n3_b40",
        "u64 word path: n=3, t=3, c=2, f=0, b=40, B=42, d=5",
        &rw,
    ));

    let rf = RecordedRound::record(
        SimConfig::new(p5, 5, [0x05; 32])
            .drop_site(0, Phase::Unmasking)
            .drop_site(1, Phase::Unmasking)
            .drop_site(2, Phase::Unmasking),
    );
    put(round_vector(
        "round_bad_too_few_survivors",
        "three of five sites drop before Unmasking: only 2 < t=4 shares per secret, the round fails with needed/got and no sum",
        &rf,
    ));

    // --- reject vectors against the base round
    let pp = &base.config.params;
    let b = base_name.to_string() + ".json";
    let b = b.as_str();
    let session = base
        .aggregator_at(Phase::ShareKeys)
        .unwrap()
        .session_id()
        .unwrap();
    let ctx = kdf::masking_round_context(&base.consortium.manifest().digest(), pp, 1);
    let id = |i: u16| base.consortium.identity(SiteId(i));

    let adv1 = up(&base, Phase::AdvertiseKeys, 1).to_vec();
    let mut m = adv1.clone();
    let last = m.len() - 1;
    m[last] ^= 0x01;
    put(reject_vector(
        "advertise_bad_signature",
        "site 1's AdvertiseKeys with one signature bit flipped",
        b,
        "aggregator",
        Phase::AdvertiseKeys,
        1,
        false,
        &m,
        "peer.bad_signature",
        "site 1",
    ));
    let mut a = AdvertiseKeys::from_bytes(&adv1, pp).unwrap();
    a.signature = sign::sign_message(id(2), &ctx, &a.body());
    put(reject_vector(
        "advertise_bad_forged_identity",
        "site 1's AdvertiseKeys signed with site 2's identity key",
        b,
        "aggregator",
        Phase::AdvertiseKeys,
        1,
        false,
        &a.to_bytes(),
        "peer.bad_signature",
        "site 1",
    ));
    let mut m = adv1.clone();
    m.push(0);
    put(reject_vector(
        "advertise_bad_trailing_bytes",
        "AdvertiseKeys followed by one extra byte",
        b,
        "aggregator",
        Phase::AdvertiseKeys,
        1,
        false,
        &m,
        "decode.trailing_bytes",
        "site 1",
    ));
    let mut m = adv1.clone();
    m[2] = 1;
    put(reject_vector(
        "advertise_bad_wrong_version",
        "version byte 1: a wire-version-1 message is refused by a version-2 implementation",
        b,
        "aggregator",
        Phase::AdvertiseKeys,
        1,
        false,
        &m,
        "decode.unsupported_version",
        "site 1",
    ));
    let mut m = adv1.clone();
    m[0] = b'X';
    put(reject_vector(
        "advertise_bad_magic",
        "magic \"XG\"",
        b,
        "aggregator",
        Phase::AdvertiseKeys,
        1,
        false,
        &m,
        "decode.bad_magic",
        "site 1",
    ));
    let mut m = adv1.clone();
    m[3] = 0x3f;
    put(reject_vector(
        "message_bad_unknown_type",
        "message type 0x3f",
        b,
        "aggregator",
        Phase::AdvertiseKeys,
        1,
        false,
        &m,
        "decode.unknown_message_type",
        "site 1",
    ));
    let mut a = AdvertiseKeys::from_bytes(&adv1, pp).unwrap();
    a.sender = SiteId(9);
    a.signature = sign::sign_message(&SigningKey::from_bytes(&[0x99; 32]), &ctx, &a.body());
    put(reject_vector(
        "advertise_bad_unknown_identity",
        "AdvertiseKeys claiming manifest index 9 (n=5), signed by a key outside the manifest (Sybil)",
        b,
        "aggregator",
        Phase::AdvertiseKeys,
        1,
        false,
        &a.to_bytes(),
        "peer.unknown_identity",
        "unknown site index 9",
    ));
    let base2 = RecordedRound::record(SimConfig::new(p5, 2, [0x01; 32]));
    put(reject_vector(
        "advertise_bad_replayed_round",
        "site 1's genuine AdvertiseKeys from round 2 replayed into round 1",
        b,
        "aggregator",
        Phase::AdvertiseKeys,
        1,
        false,
        up(&base2, Phase::AdvertiseKeys, 1),
        "peer.wrong_round",
        "site 1",
    ));
    put(reject_vector(
        "advertise_bad_duplicate",
        "site 1's AdvertiseKeys delivered a second time",
        b,
        "aggregator",
        Phase::AdvertiseKeys,
        1,
        true,
        &adv1,
        "peer.duplicate",
        "site 1",
    ));

    let sk2 = up(&base, Phase::ShareKeys, 2).to_vec();
    let mut m = sk2.clone();
    // header 4 + round 8 + sender 2 + commitment 32 = 46: the share count.
    m[46..50].copy_from_slice(&u32::MAX.to_be_bytes());
    put(reject_vector(
        "sharekeys_bad_oversized_count",
        "ShareKeys declaring 2^32-1 shares (bound: n-1 = 4)",
        b,
        "aggregator",
        Phase::ShareKeys,
        2,
        false,
        &m,
        "decode.length_out_of_bounds",
        "site 2",
    ));
    let mut s = ShareKeys::from_bytes(&sk2, pp).unwrap();
    s.shares[2].0 = SiteId(2); // recipients 0,1,3,4 become 0,1,2,4
    s.signature = sign::sign_message(id(2), &session, &s.body());
    put(reject_vector(
        "sharekeys_bad_share_for_self",
        "site 2 sends an encrypted share addressed to itself (not a neighbour), validly signed",
        b,
        "aggregator",
        Phase::ShareKeys,
        2,
        false,
        &s.to_bytes(),
        "peer.not_neighbour",
        "site 2",
    ));

    let mi3 = up(&base, Phase::MaskedInput, 3).to_vec();
    let mut mi = MaskedInput::from_bytes(&mi3, pp).unwrap();
    let lastb = mi.packed.len() - 1;
    mi.packed[lastb] |= 0x80;
    mi.signature = sign::sign_message(id(3), &session, &mi.body());
    put(reject_vector(
        "maskedinput_bad_nonzero_padding",
        "packed masked input with a padding bit set (d·B = 99 bits, 13 bytes)",
        b,
        "aggregator",
        Phase::MaskedInput,
        3,
        false,
        &mi.to_bytes(),
        "decode.invalid_value",
        "site 3",
    ));
    let mut mi = MaskedInput::from_bytes(&mi3, pp).unwrap();
    mi.packed.push(0);
    put(reject_vector(
        "maskedinput_bad_wrong_length",
        "packed masked input one byte longer than ceil(d·B/8)",
        b,
        "aggregator",
        Phase::MaskedInput,
        3,
        false,
        &mi.to_bytes(),
        "decode.length_out_of_bounds",
        "site 3",
    ));
    let mut mi = MaskedInput::from_bytes(&mi3, pp).unwrap();
    mi.packed[0] ^= 0x01;
    put(reject_vector(
        "maskedinput_bad_tampered",
        "one payload bit flipped in transit",
        b,
        "aggregator",
        Phase::MaskedInput,
        3,
        false,
        &mi.to_bytes(),
        "peer.bad_signature",
        "site 3",
    ));

    let cs4 = up(&base, Phase::ConsistencyCheck, 4).to_vec();
    let mut c = ConsistencySignature::from_bytes(&cs4, pp).unwrap();
    c.signature = sign::sign_survivors(id(4), &session, &[SiteId(0), SiteId(4)]);
    put(reject_vector(
        "consistency_bad_signature",
        "site 4 signs a survivor set other than the one the aggregator holds",
        b,
        "aggregator",
        Phase::ConsistencyCheck,
        4,
        false,
        &c.to_bytes(),
        "peer.bad_signature",
        "site 4",
    ));

    let us0 = up(&base, Phase::Unmasking, 0).to_vec();
    let mut u = UnmaskShares::from_bytes(&us0, pp).unwrap();
    u.s_shares.push((SiteId(1), [0; 32]));
    u.signature = sign::sign_message(id(0), &session, &u.body());
    put(reject_vector(
        "unmaskshares_bad_both_shares",
        "site 0 reveals an s_sk share of survivor 1 besides its b share",
        b,
        "aggregator",
        Phase::Unmasking,
        0,
        false,
        &u.to_bytes(),
        "peer.invalid",
        "site 0",
    ));

    // --- site-side reject vectors
    let rs0 = down(&base, Phase::MaskedInput, 0).to_vec();
    let mut rs = RoutedShares::from_bytes(&rs0, pp).unwrap();
    let idx = rs.shares.iter().position(|(s, _)| *s == SiteId(2)).unwrap();
    rs.shares[idx].1[10] ^= 0x04;
    put(reject_vector(
        "routedshares_bad_flipped_bit",
        "one bit flipped in the ciphertext from site 2 to site 0",
        b,
        "site",
        Phase::MaskedInput,
        0,
        false,
        &rs.to_bytes(),
        "peer.share_authentication",
        "site 2",
    ));
    let rs1 = RoutedShares::from_bytes(down(&base, Phase::MaskedInput, 1), pp).unwrap();
    let mut rs = RoutedShares::from_bytes(&rs0, pp).unwrap();
    rs.shares[idx].1 = rs1.shares.iter().find(|(s, _)| *s == SiteId(2)).unwrap().1;
    put(reject_vector(
        "routedshares_bad_wrong_recipient",
        "site 2's ciphertext for site 1 delivered to site 0 (AAD binds the recipient)",
        b,
        "site",
        Phase::MaskedInput,
        0,
        false,
        &rs.to_bytes(),
        "peer.share_authentication",
        "site 2",
    ));
    put(reject_vector(
        "keysbroadcast_bad_replayed_round",
        "the round-2 KeysBroadcast delivered in round 1",
        b,
        "site",
        Phase::ShareKeys,
        0,
        false,
        down(&base2, Phase::ShareKeys, 0),
        "peer.wrong_round",
        "aggregator",
    ));
    let ss = SurvivorSet {
        round: 1,
        survivors: (1..5).map(SiteId).collect(),
    };
    put(reject_vector(
        "survivorset_bad_omits_self",
        "survivor set without the receiving site 0",
        b,
        "site",
        Phase::ConsistencyCheck,
        0,
        false,
        &ss.to_bytes(),
        "peer.invalid",
        "aggregator",
    ));
    let all: Vec<SiteId> = (0..5).map(SiteId).collect();
    let mut sigs: Vec<(SiteId, [u8; 64])> = (0..3)
        .map(|i| (SiteId(i), sign::sign_survivors(id(i), &session, &all)))
        .collect();
    sigs.push((SiteId(3), sign::sign_survivors(id(3), &session, &all[..4])));
    let ur = UnmaskRequest {
        round: 1,
        signatures: sigs,
    };
    put(reject_vector(
        "unmaskrequest_bad_equivocation",
        "site 3's consistency signature is over a different survivor set (the aggregator equivocated): site 0 aborts",
        b,
        "site",
        Phase::Unmasking,
        0,
        false,
        &ur.to_bytes(),
        "peer.inconsistent_survivors",
        "aggregator",
    ));
    let ToSite::UnmaskRequest(mut second) =
        ToSite::from_bytes(down(&base, Phase::Unmasking, 0), &p5).unwrap()
    else {
        panic!("recorded unmasking download is an UnmaskRequest")
    };
    second.signatures.pop();
    put(reject_vector(
        "unmaskrequest_bad_second_request",
        "a different UnmaskRequest (one signature fewer) after site 0 revealed its shares: a site answers one request per round (the identical one gets the identical upload)",
        b,
        "site",
        Phase::Finished,
        0,
        false,
        &ToSite::UnmaskRequest(second).to_bytes(),
        "peer.conflicting_redelivery",
        "aggregator",
    ));

    // --- parameter vectors (raw: n, t, m, b, B, d, graph, k, c, f)
    put(params_vector(
        "params_ok_complete",
        "n=10, t=7, c=3, f=3, exact B = b + ceil(log2 n), malicious aggregator",
        [10, 7, 7, 16, 20, 1000, 0, 0, 3, 3],
        "exact",
        "malicious",
        "ok",
    ));
    put(params_vector(
        "params_ok_harary_curious",
        "Harary k=4, n=12, t=4, c=1, f=1 under a curious aggregator",
        [12, 4, 6, 8, 12, 10, 1, 4, 1, 1],
        "exact",
        "curious",
        "ok",
    ));
    put(params_vector(
        "params_bad_threshold_half",
        "t = n/2 + 1 = 6 with c = 2: safety needs 2t > n + c = 12",
        [10, 6, 6, 16, 20, 1000, 0, 0, 2, 3],
        "exact",
        "malicious",
        "ThresholdTooLow",
    ));
    put(params_vector(
        "params_bad_no_colluder",
        "c = 0: a set that tolerates no colluding site is refused",
        [10, 6, 6, 16, 20, 1000, 0, 0, 0, 3],
        "exact",
        "malicious",
        "NoColluderTolerated",
    ));
    put(params_vector(
        "params_bad_threshold_not_live",
        "t = 7 with f = 4 dropouts: liveness needs t <= n - f = 6",
        [10, 7, 7, 16, 20, 1000, 0, 0, 1, 4],
        "exact",
        "malicious",
        "ThresholdNotLive",
    ));
    put(params_vector(
        "params_bad_harary_malicious",
        "Harary mode against a malicious aggregator is refused (use the complete graph)",
        [12, 4, 6, 8, 12, 10, 1, 4, 1, 1],
        "exact",
        "malicious",
        "HararyNeedsCuriousAggregator",
    ));
    put(params_vector(
        "params_bad_harary_colluders",
        "Harary k=4 tolerates at most k - 1 = 3 colluders; c = 4 (t = 5 = H) is refused",
        [12, 5, 6, 8, 12, 10, 1, 4, 4, 0],
        "exact",
        "curious",
        "HararyTooManyColluders",
    ));
    put(params_vector(
        "params_bad_sum_bits_65",
        "B over 64",
        [10, 7, 7, 16, 65, 1000, 0, 0, 1, 3],
        "exact",
        "malicious",
        "SumBits",
    ));
    put(params_vector(
        "params_bad_exact_may_wrap",
        "b + ceil(log2 n) = 20 > B = 19 with exact sums",
        [10, 7, 7, 16, 19, 1000, 0, 0, 1, 3],
        "exact",
        "malicious",
        "ExactSumMayWrap",
    ));
    put(params_vector(
        "params_bad_sum_below_input",
        "B < b",
        [10, 7, 7, 16, 15, 1000, 0, 0, 1, 3],
        "modular",
        "malicious",
        "SumBitsBelowInputBits",
    ));
    put(params_vector(
        "params_bad_cohort_below_threshold",
        "minimum cohort 6 < t = 7",
        [10, 7, 6, 16, 20, 1000, 0, 0, 1, 3],
        "exact",
        "malicious",
        "MinCohortBelowThreshold",
    ));
    put(params_vector(
        "params_bad_harary_threshold",
        "Harary k=4: t=6 exceeds the k+1=5 share holders",
        [12, 6, 6, 8, 12, 10, 1, 4, 1, 0],
        "exact",
        "curious",
        "ThresholdAboveHolders",
    ));
    put(params_vector(
        "params_bad_harary_odd_degree",
        "Harary degree must be even",
        [12, 3, 3, 8, 12, 10, 1, 3, 1, 0],
        "exact",
        "curious",
        "HararyDegree",
    ));
    put(params_vector(
        "params_bad_vector_len",
        "d above 2^24",
        [10, 7, 7, 16, 20, 16_777_217, 0, 0, 1, 3],
        "exact",
        "malicious",
        "VectorLen",
    ));
    out
}

fn encode_file(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

#[test]
#[ignore = "rewrites protocol-spec/test-vectors/v2"]
fn generate_vectors() {
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    for (name, v) in generate() {
        std::fs::write(d.join(name), encode_file(&v)).unwrap();
    }
}

#[test]
fn vectors_are_current() {
    for (name, v) in generate() {
        let on_disk = std::fs::read_to_string(dir().join(&name))
            .unwrap_or_else(|_| panic!("{name} missing: run the generator"));
        assert!(
            on_disk == encode_file(&v),
            "{name} differs from what the implementation generates"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Checking (from the files alone)

fn hexv(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn params_from(v: &Value) -> Result<RoundParams, amalgam_proto::ParamError> {
    let n = |k: &str| u(&v[k]);
    RoundParams::new(ParamsRequest {
        sites: SiteCount::new(n("n") as u16)?,
        threshold: Threshold::new(n("t") as u16)?,
        min_cohort: MinCohort::new(n("min_cohort") as u16)?,
        input_bits: InputBits::new(n("b") as u8)?,
        sum_bits: SumBits::new(n("B") as u8)?,
        sum_mode: if v["sum_mode"] == "exact" {
            SumMode::Exact
        } else {
            SumMode::Modular
        },
        vector_len: VectorLen::new(n("d") as u32)?,
        graph: if v["graph"] == "complete" {
            NeighbourGraph::Complete
        } else {
            NeighbourGraph::Harary { k: n("k") as u16 }
        },
        colluders: Colluders::new(n("c") as u16)?,
        dropouts: Dropouts::new(n("f") as u16),
        trust: if v["trust"] == "curious" {
            AggregatorTrust::Curious
        } else {
            AggregatorTrust::Malicious
        },
    })
}

struct Msg {
    phase: Phase,
    to_site: bool,
    site: SiteId,
    bytes: Vec<u8>,
}

/// A round vector, parsed.
struct Round {
    params: RoundParams,
    round: u64,
    manifest: Manifest,
    identities: Vec<SigningKey>,
    seeds: Vec<[u8; 32]>,
    inputs: Vec<Vec<u64>>,
    msgs: Vec<Msg>,
}

impl Round {
    fn parse(v: &Value) -> Self {
        let params = params_from(&v["params"]).unwrap();
        assert_eq!(
            params.to_bytes(),
            hexv(&v["params_encoding"]),
            "params encoding"
        );
        let identities: Vec<SigningKey> = v["identity_secret_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| SigningKey::from_bytes(&hexv(k).try_into().unwrap()))
            .collect();
        let manifest =
            Manifest::new(identities.iter().map(SigningKey::verifying_key).collect()).unwrap();
        let listed: Vec<Vec<u8>> = v["manifest"].as_array().unwrap().iter().map(hexv).collect();
        assert_eq!(
            listed,
            manifest
                .keys()
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect::<Vec<_>>()
        );
        assert_eq!(manifest.digest().to_vec(), hexv(&v["manifest_digest"]));
        let round = u(&v["round"]);
        assert_eq!(
            kdf::masking_round_context(
                &<[u8; 32]>::try_from(hexv(&v["context_digest"]).as_slice()).unwrap(),
                &params,
                round
            )
            .to_vec(),
            hexv(&v["round_context"])
        );
        Self {
            params,
            round,
            manifest,
            identities,
            seeds: v["site_rng_seeds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| hexv(s).try_into().unwrap())
                .collect(),
            inputs: v["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_array().unwrap().iter().map(u).collect())
                .collect(),
            msgs: v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Msg {
                    phase: parse_phase(m["phase"].as_str().unwrap()),
                    to_site: m["direction"] == "to_site",
                    site: SiteId(u(&m["site"]) as u16),
                    bytes: hexv(&m["hex"]),
                })
                .collect(),
        }
    }

    fn uploads(&self, phase: Phase) -> impl Iterator<Item = &Msg> {
        self.msgs
            .iter()
            .filter(move |m| !m.to_site && m.phase == phase)
    }

    fn aggregator_at(&self, phase: Phase, first: bool) -> Aggregator {
        let mut agg = Aggregator::new(self.params, self.manifest.clone(), self.round).unwrap();
        for p in PHASES.iter().copied().take_while(|p| *p < phase) {
            for m in self.uploads(p) {
                agg.receive_bytes(m.site, &m.bytes).unwrap();
            }
            agg.close_phase().unwrap();
        }
        if first {
            for m in self.uploads(phase) {
                agg.receive_bytes(m.site, &m.bytes).unwrap();
            }
        }
        agg
    }

    fn site_at(&self, id: SiteId, phase: Phase) -> Site {
        let mut site = Site::new(
            self.params,
            self.manifest.clone(),
            self.round,
            self.identities[id.index()].clone(),
            sim::sim_timeout(),
            &mut RoundLog::new(),
        )
        .unwrap();
        let mut rng = ChaCha20Rng::from_seed(self.seeds[id.index()]);
        let out = site
            .start(self.inputs[id.index()].clone(), NOW, &mut rng)
            .unwrap();
        sim::persist_and_release(&site, out).unwrap();
        for m in self
            .msgs
            .iter()
            .filter(|m| m.to_site && m.site == id && m.phase < phase)
        {
            site.answer_bytes(&m.bytes).unwrap();
        }
        site
    }
}

/// Replays a round vector: every site (from its seed) must emit exactly the recorded uploads,
/// the aggregator exactly the recorded downloads, and the output must be the expected one.
fn check_round(v: &Value) {
    let r = Round::parse(v);
    let n = r.params.n();
    let mut sites: Vec<(Site, ChaCha20Rng)> = (0..n)
        .map(|i| {
            let s = Site::new(
                r.params,
                r.manifest.clone(),
                r.round,
                r.identities[i].clone(),
                sim::sim_timeout(),
                &mut RoundLog::new(),
            )
            .unwrap();
            (s, ChaCha20Rng::from_seed(r.seeds[i]))
        })
        .collect();
    let mut produced: Vec<(Phase, bool, SiteId, Vec<u8>)> = Vec::new();
    // Uploads the sites produce when fed the recorded downloads (sites that dropped are
    // exactly those with no recorded upload).
    for m in &r.msgs {
        let (site, rng) = &mut sites[m.site.index()];
        if m.to_site {
            produced.push((m.phase, true, m.site, m.bytes.clone()));
            let out = site.answer_bytes(&m.bytes).unwrap();
            produced.push((m.phase, false, m.site, out.to_bytes()));
        } else if m.phase == Phase::AdvertiseKeys {
            let out = site
                .start(r.inputs[m.site.index()].clone(), NOW, rng)
                .unwrap();
            let (out, _) = sim::persist_and_release(site, out).unwrap();
            produced.push((m.phase, false, m.site, out.to_bytes()));
        }
    }
    // Drop uploads that the recording did not deliver (dropouts happen after computing).
    let recorded: Vec<(Phase, bool, SiteId, Vec<u8>)> = r
        .msgs
        .iter()
        .map(|m| (m.phase, m.to_site, m.site, m.bytes.clone()))
        .collect();
    let produced: Vec<_> = produced
        .into_iter()
        .filter(|p| p.1 || recorded.contains(p))
        .collect();
    assert_eq!(
        produced, recorded,
        "sites reproduce the transcript byte for byte"
    );

    // The aggregator: recorded uploads in, recorded downloads out.
    let mut agg = Aggregator::new(r.params, r.manifest.clone(), r.round).unwrap();
    let mut outcome = None;
    for p in PHASES {
        for m in r.uploads(p) {
            agg.receive_bytes(m.site, &m.bytes).unwrap();
        }
        match agg.close_phase() {
            Ok(AggregatorStep::Send(list)) => {
                let next = agg.phase();
                let want: Vec<(SiteId, Vec<u8>)> = r
                    .msgs
                    .iter()
                    .filter(|m| m.to_site && m.phase == next)
                    .map(|m| (m.site, m.bytes.clone()))
                    .collect();
                let got: Vec<(SiteId, Vec<u8>)> = list
                    .iter()
                    .map(|(s, m)| (*s, m.to_bytes()))
                    .filter(|g| want.contains(g))
                    .collect();
                assert_eq!(got, want, "downloads opening {next}");
                if p == Phase::AdvertiseKeys {
                    assert_eq!(
                        agg.session_id().map(|s| s.to_vec()),
                        v["session_id"].as_str().map(|s| hex::decode(s).unwrap())
                    );
                }
            }
            Ok(AggregatorStep::Finished(out)) => {
                outcome = Some(Ok(out));
                break;
            }
            Err(e) => {
                outcome = Some(Err(e));
                break;
            }
        }
    }
    let exp = &v["expected"];
    match outcome.unwrap() {
        Ok(out) => {
            let ids = |k: &str| {
                exp[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| SiteId(u(x) as u16))
                    .collect::<Vec<_>>()
            };
            assert_eq!(out.contributors, ids("contributors"));
            assert_eq!(out.dropped, ids("dropped"));
            assert_eq!(
                out.sum,
                exp["sum"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(u)
                    .collect::<Vec<_>>()
            );
            // And it is the plaintext sum of the contributors' inputs.
            let mask = r.params.sum_bits().mask();
            for (j, s) in out.sum.iter().enumerate() {
                let want = out
                    .contributors
                    .iter()
                    .fold(0u64, |a, c| a.wrapping_add(r.inputs[c.index()][j]))
                    & mask;
                assert_eq!(*s, want);
            }
        }
        Err(Error::NotEnoughSites { phase, needed, got }) => {
            assert_eq!(exp["error"], "not_enough_sites");
            assert_eq!(phase_name(phase), exp["phase"].as_str().unwrap());
            assert_eq!(
                (needed as u64, got as u64),
                (u(&exp["needed"]), u(&exp["got"]))
            );
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn check_reject(v: &Value, files: &BTreeMap<String, Value>) {
    let base = Round::parse(&files[v["base"].as_str().unwrap()]);
    let phase = parse_phase(v["phase"].as_str().unwrap());
    let site = SiteId(u(&v["site"]) as u16);
    let bytes = hexv(&v["hex"]);
    let (err, unchanged) = if v["target"] == "aggregator" {
        let mut agg =
            base.aggregator_at(phase, v["deliver_phase_uploads_first"].as_bool().unwrap());
        let before = agg.snapshot();
        let e = agg.receive_bytes(site, &bytes).unwrap_err();
        (e, agg.snapshot() == before)
    } else {
        let mut s = base.site_at(site, phase);
        let before = s.snapshot();
        let e = s.handle_bytes(&bytes, NOW).unwrap_err();
        let aborted = s.phase() == Phase::Aborted;
        (e, aborted || s.snapshot() == before)
    };
    assert_eq!(err.code(), v["expected_error"].as_str().unwrap(), "{err}");
    assert_eq!(
        err.sender().map(|s| s.to_string()).as_deref(),
        v["expected_sender"].as_str(),
        "{err}"
    );
    assert!(unchanged, "a rejected message leaves the state unchanged");
}

fn check_params(v: &Value) {
    let res = params_from(&v["params"]);
    match (v["expected"].as_str().unwrap(), res) {
        ("ok", Ok(_)) => {}
        (want, Err(e)) => assert!(format!("{e:?}").starts_with(want), "{e:?} is not {want}"),
        (want, Ok(p)) => panic!("{p:?} accepted, expected {want}"),
    }
}

#[test]
fn every_vector_file_checks() {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir()).expect("vector folder exists") {
        let path = entry.unwrap().path();
        let fname = path.file_name().unwrap().to_string_lossy().to_string();
        // `he_*` vectors belong to the homomorphic fallback (he-fallback.md), checked by
        // tests/he_vectors.rs; every other file here is a masking-protocol vector.
        if path.extension().is_some_and(|e| e == "json") && !fname.starts_with("he_") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            files.insert(path.file_name().unwrap().to_string_lossy().to_string(), v);
        }
    }
    assert!(!files.is_empty(), "no test vectors found");
    assert!(
        files.keys().any(|k| k.starts_with("round_")),
        "no round vectors found"
    );
    assert!(
        files.keys().any(|k| k.contains("_bad_")),
        "negative vectors are first-class"
    );
    for (name, v) in &files {
        assert_eq!(u(&v["version"]), 2, "{name}");
        assert_eq!(format!("{}.json", v["name"].as_str().unwrap()), *name);
        match v["kind"].as_str().unwrap() {
            "round" => check_round(v),
            "reject" => check_reject(v, &files),
            "params" => check_params(v),
            k => panic!("{name}: unknown kind {k}"),
        }
    }
}
