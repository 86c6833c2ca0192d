//! Attacks on the fallback, each written as the attacker's best strategy, each shown to fail.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use amalgam_he::field::{self, Q};
use amalgam_he::kahe::{self, KeyVector, public_mask};
use amalgam_he::params::N;
use amalgam_he::seed_box::{self, Binding, Seed};
use amalgam_he::upload::{UploadHeader, bodies_digest, piece_commitment, signed_message};
use amalgam_he::{
    Closing, CohortStatement, Decryptor, HeAggregator, HeError, KaheParams, PieceSumRelease,
    SignedUpload, StatementSignature,
};
use amalgam_proto::SiteId;
use amalgam_proto::codec::Encode;
use common::*;
use ed25519_dalek::Signer;
use tfhe::core_crypto::commons::math::ntt::ntt64::Ntt64;
use tfhe::core_crypto::prelude::{CiphertextModulus, Polynomial, PolynomialSize};
use x25519_dalek::{PublicKey as BoxPublic, StaticSecret};
use zeroize::Zeroizing;

/// A malicious site's upload built by hand: its own bodies and, per member, the seeds it puts
/// in that member's box, with commitments to `committed` seeds.
fn forge(
    w: &World,
    site: usize,
    bodies: Vec<u64>,
    box_seeds: &dyn Fn(usize, usize) -> [u8; 32],
    committed: &dyn Fn(usize) -> [u8; 32],
) -> SignedUpload {
    let setup = &w.setup;
    let ctx = setup.context();
    let c = setup.committee();
    let secret = StaticSecret::from([site as u8 + 99; 32]);
    let box_public = BoxPublic::from(&secret).to_bytes();
    let sid = SiteId(site as u16);
    let header = UploadHeader {
        site: sid,
        model_digest: MODEL.1,
        model_round: MODEL.0,
        box_public,
        commitments: (0..c.pieces())
            .map(|p| piece_commitment(ctx, sid, p, &committed(p)))
            .collect(),
    };
    let boxes = (0..c.size())
        .map(|m| {
            let pieces = c.held_by(m);
            let seeds: Vec<Seed> = pieces
                .iter()
                .map(|&p| Zeroizing::new(box_seeds(m, p)))
                .collect();
            let b = Binding {
                round_context: ctx,
                sender: sid,
                recipient: m,
                pieces: &pieces,
                sender_key: &box_public,
                recipient_key: &c.member(m).unwrap().box_key,
            };
            seed_box::seal(&secret, &b, &seeds)
        })
        .collect();
    let mut u = SignedUpload {
        header,
        boxes,
        bodies,
        signature: [0; 64],
    };
    let msg = signed_message(ctx, &u.header, &bodies_digest(&u.bodies), &u.box_digests());
    u.signature = w.identities[site].sign(&msg).to_bytes();
    u
}

/// The key of seeds `seed(p)` over all pieces.
fn key_of(w: &World, seed: &dyn Fn(usize) -> [u8; 32]) -> KeyVector {
    let mut k = KeyVector::zero();
    for p in 0..w.setup.committee().pieces() {
        k.add_assign(&KeyVector::expand(&seed(p)));
    }
    k
}

/// Runs the committee over the aggregator's closed cohort with members `online`.
fn release_all(w: &World, agg: &mut HeAggregator, online: &[usize]) -> Result<Vec<u64>, HeError> {
    let st = agg.close()?;
    let mut decs = w.decryptors();
    for d in decs.iter_mut() {
        for v in agg.views_for(d.member()) {
            d.admit(&v)?;
        }
    }
    let sigs: Vec<StatementSignature> = online
        .iter()
        .map(|&m| decs[m].sign(&st).map(|p| p.persisted()))
        .collect::<Result<_, _>>()?;
    for &m in online {
        agg.accept_release(&decs[m].release(&st, &sigs)?)?;
    }
    agg.finish()
}

#[test]
fn a_lone_malformed_upload_only_shifts_or_spoils_and_learns_no_key() {
    // v1's attack: a site adds key-dependent multiples of Δ to its ciphertext. Here keys are
    // fresh per round and per site; whatever the malicious site adds, the published output is a
    // function of the inputs and its own perturbation only — the same for any honest keys.
    let mut outputs = Vec::new();
    for seed in [10, 11] {
        let mut w = world(&SMALL, seed);
        let delta = w.setup.params().delta();
        let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
        for s in 0..3 {
            agg.receive(&w.upload(s)).unwrap();
        }
        let own = |p: usize| [p as u8 + 1; 32];
        let mut bodies = kahe::encrypt(
            w.setup.params(),
            w.setup.context(),
            &key_of(&w, &own),
            &vec![0; 300],
            &[5; 32],
        )
        .unwrap();
        bodies[3] = field::add(bodies[3], 7 * delta);
        agg.receive(&forge(&w, 3, bodies, &|_, p| own(p), &own))
            .unwrap();
        let got = release_all(&w, &mut agg, &[0, 1, 2, 3, 4]).unwrap();
        let mut want = w.expected_sum(&[0, 1, 2]);
        want[3] += 7;
        assert_eq!(got, want);
        outputs.push(got);
    }
    assert_eq!(
        outputs[0], outputs[1],
        "the output does not depend on the honest keys"
    );
    // A shift off the Δ grid (anything that could carry key bits) spoils the round instead.
    let mut w = world(&SMALL, 12);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for s in 0..3 {
        agg.receive(&w.upload(s)).unwrap();
    }
    let own = |p: usize| [p as u8 + 1; 32];
    let mut bodies = kahe::encrypt(
        w.setup.params(),
        w.setup.context(),
        &key_of(&w, &own),
        &vec![0; 300],
        &[5; 32],
    )
    .unwrap();
    for b in bodies.iter_mut().take(N) {
        *b = field::add(*b, Q / 3);
    }
    agg.receive(&forge(&w, 3, bodies, &|_, p| own(p), &own))
        .unwrap();
    assert_eq!(
        release_all(&w, &mut agg, &[0, 1, 2, 3, 4]),
        Err(HeError::SumInvalid)
    );
}

#[test]
fn a_cancelling_colluder_cannot_isolate_an_honest_input() {
    // The aggregator's colluder submits −c_v + Enc_{k_c}(0) so that the cohort {0, v, c} would
    // sum to site 0's input alone. It cannot cancel k_v (it never sees v's seeds), so the round
    // does not decode: nothing about x_0 is published.
    let mut w = world(&SMALL, 13);
    let u0 = w.upload(0);
    let uv = w.upload(1);
    let own = |p: usize| [p as u8 + 40; 32];
    let mut bodies = kahe::encrypt(
        w.setup.params(),
        w.setup.context(),
        &key_of(&w, &own),
        &vec![0; 300],
        &[6; 32],
    )
    .unwrap();
    for (b, &c) in bodies.iter_mut().zip(&uv.bodies) {
        *b = field::sub(*b, c);
    }
    let colluder = forge(&w, 2, bodies, &|_, p| own(p), &own);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for u in [&u0, &uv, &colluder] {
        agg.receive(u).unwrap();
    }
    assert_eq!(
        release_all(&w, &mut agg, &[0, 1, 2, 3, 4]),
        Err(HeError::SumInvalid)
    );
}

#[test]
fn a_copied_seed_box_does_not_open_under_another_sender() {
    // The colluder re-submits an honest site's bodies and boxes as its own (signed by itself).
    let mut w = world(&SMALL, 14);
    let honest = w.upload(0);
    let mut copy = honest.clone();
    copy.header.site = SiteId(2);
    copy.header.commitments = honest.header.commitments.clone();
    let msg = signed_message(
        w.setup.context(),
        &copy.header,
        &bodies_digest(&copy.bodies),
        &copy.box_digests(),
    );
    copy.signature = w.identities[2].sign(&msg).to_bytes();
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    agg.receive(&copy).unwrap(); // the aggregator cannot tell: it sees no seeds
    let mut decs = w.decryptors();
    for d in decs.iter_mut() {
        let v = &agg.views_for(d.member())[0];
        assert_eq!(d.admit(v), Err(HeError::BoxDoesNotOpen { site: 2 }));
        assert!(d.admitted().is_empty(), "nothing admitted on rejection");
    }
}

#[test]
fn holders_given_inconsistent_seeds_refuse_the_upload() {
    // The site gives member 0 the committed seed of piece p and member 1 another one, so that
    // the two holders would release different key pieces.
    let mut w = world(&SMALL, 15);
    let good = |p: usize| [p as u8 + 60; 32];
    let bodies = vec![0u64; w.setup.params().body_len()];
    let u = forge(
        &w,
        1,
        bodies,
        &|m, p| if m == 1 { [0xee; 32] } else { good(p) },
        &good,
    );
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    agg.receive(&w.upload(0)).unwrap();
    agg.receive(&u).unwrap();
    let mut decs = w.decryptors();
    let mut views = agg.views_for(1);
    let view = views.pop().unwrap();
    decs[1].admit(&views[0]).unwrap();
    let piece = w.setup.committee().held_by(1)[0];
    assert_eq!(
        decs[1].admit(&view),
        Err(HeError::CommitmentMismatch { site: 1, piece })
    );
    // Without member 1's admission it cannot sign a statement naming site 1.
    let st = agg.close().unwrap();
    assert_eq!(
        decs[1].sign(&st).unwrap_err(),
        HeError::UploadNotAdmitted { site: 1 }
    );
}

#[test]
fn a_seed_repeated_across_sites_is_refused_before_signing() {
    // A corrupt holder hands site 0's seed of piece p to a colluding site 1, which uses it as
    // its own (valid box, commitment under its own id). Honest holders of p see the repeat.
    let mut w = world(&SMALL, 16);
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    agg.receive(&w.upload(0)).unwrap();
    let mut decs = w.decryptors();
    for v in agg.views_for(0) {
        decs[0].admit(&v).unwrap();
    }
    // Member 0's first held piece; read site 0's seed from member 0 (the corrupt holder's view).
    let stolen = {
        let snap = decs[0].snapshot();
        // Layout: header 4, round 8, context 32, member 1, expired 1, count 4, site 2, digest 32.
        let at = 4 + 8 + 32 + 1 + 1 + 4 + 2 + 32;
        let mut s = [0u8; 32];
        s.copy_from_slice(&snap[at..at + 32]);
        s
    };
    let p0 = w.setup.committee().held_by(0)[0];
    let seeds = move |p: usize| if p == p0 { stolen } else { [p as u8 + 80; 32] };
    let bodies = vec![0u64; w.setup.params().body_len()];
    agg.receive(&forge(&w, 1, bodies, &|_, p| seeds(p), &seeds))
        .unwrap();
    let st = agg.close().unwrap();
    for v in agg.views_for(0) {
        decs[0].admit(&v).unwrap();
    }
    assert_eq!(
        decs[0].sign(&st).unwrap_err(),
        HeError::RepeatedSeed {
            first: 0,
            second: 1
        }
    );
    assert!(
        decs[0].signed_statement().is_none(),
        "no state change on refusal"
    );
}

/// A round with uploads from sites 0..4 admitted by every member; returns (statement S, S ∖ {v}).
fn two_cohorts(
    w: &mut World,
    decs: &mut [Decryptor],
) -> (HeAggregator, CohortStatement, CohortStatement) {
    let uploads: Vec<SignedUpload> = (0..4).map(|s| w.upload(s)).collect();
    two_cohorts_of(w, decs, &uploads)
}

/// The same for given uploads.
fn two_cohorts_of(
    w: &World,
    decs: &mut [Decryptor],
    uploads: &[SignedUpload],
) -> (HeAggregator, CohortStatement, CohortStatement) {
    let mut agg = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for u in uploads {
        agg.receive(u).unwrap();
    }
    for d in decs.iter_mut() {
        for v in agg.views_for(d.member()) {
            d.admit(&v).unwrap();
        }
    }
    let s = agg.close().unwrap();
    let mut smaller = s.clone();
    smaller.members.remove(1);
    (agg, s, smaller)
}

#[test]
fn a_second_cohort_for_the_same_round_is_never_signed() {
    let mut w = world(&SMALL, 17);
    let mut decs = w.decryptors();
    let (_, s, smaller) = two_cohorts(&mut w, &mut decs);
    decs[0].sign(&s).unwrap().persisted();
    assert_eq!(
        decs[0].sign(&smaller).unwrap_err(),
        HeError::OtherStatementSigned
    );
    // And no release for the other statement, whatever signatures come with it.
    let sigs: Vec<StatementSignature> = decs[1..]
        .iter_mut()
        .map(|d| d.sign(&smaller).unwrap().persisted())
        .collect();
    assert_eq!(
        decs[0].release(&smaller, &sigs).unwrap_err(),
        HeError::NotSigned
    );
}

#[test]
fn two_active_sets_with_corrupt_members_never_both_release_exhaustively() {
    // (5, 3, 4, 2): the aggregator shows S to some honest members and S ∖ {v} to others; the c_d
    // corrupt members sign both. Every assignment of the 3 honest members to {S, S∖{v}, none}.
    let mut w = world(&SMALL, 18);
    let corrupt = [3usize, 4];
    let honest = [0usize, 1, 2];
    for assignment in 0..27u32 {
        // Each assignment is an independent trial of the round (its own records).
        let mut decs = w.fresh_decryptors();
        let (_, s, smaller) = two_cohorts(&mut w, &mut decs);
        let mut sig_s = Vec::new();
        let mut sig_small = Vec::new();
        for (i, &m) in honest.iter().enumerate() {
            match assignment / 3u32.pow(i as u32) % 3 {
                0 => sig_s.push(decs[m].sign(&s).unwrap().persisted()),
                1 => sig_small.push(decs[m].sign(&smaller).unwrap().persisted()),
                _ => {}
            }
        }
        for &m in &corrupt {
            // A corrupt member signs both (a rolled-back or lying member behaves so).
            sig_s.push(decs[m].sign(&s).unwrap().persisted());
            sig_small.push(StatementSignature {
                member: m as u8,
                signature: corrupt_sign(&w, m, &smaller),
            });
        }
        let released = |st: &CohortStatement, sigs: &[StatementSignature]| {
            honest.iter().any(|&m| decs[m].release(st, sigs).is_ok())
        };
        assert!(
            !(released(&s, &sig_s) && released(&smaller, &sig_small)),
            "assignment {assignment}: both cohorts released"
        );
    }
}

/// A corrupt member's signature on any statement (it has its own identity key).
fn corrupt_sign(w: &World, m: usize, st: &CohortStatement) -> [u8; 64] {
    let digest = st.digest(w.setup.context());
    let mut msg = b"amalgam/v2/he-cohort-signature".to_vec();
    msg.extend_from_slice(&digest);
    w.secrets(m).identity.sign(&msg).to_bytes()
}

#[test]
fn the_attack_works_when_the_quorum_rule_is_broken() {
    // The same split with more corrupt members than the committee tolerates (3 at Q = 4, so
    // 2Q − c = 3 is not above 3): both cohorts release and S − (S ∖ {v}) reveals x_v exactly.
    // This is what the quorum rule prevents; it shows the exhaustive test above can fail.
    let mut w = world(&SMALL, 19);
    let uploads: Vec<SignedUpload> = (0..4).map(|s| w.upload(s)).collect();
    let mut decs = w.decryptors();
    let (mut agg_s, s, smaller) = two_cohorts_of(&w, &mut decs, &uploads);
    let mut agg_small = HeAggregator::new(w.setup.clone(), Closing::OnDeadline);
    for (i, u) in uploads.iter().enumerate() {
        if i != 1 {
            agg_small.receive(u).unwrap();
        }
    }
    assert_eq!(agg_small.close().unwrap(), smaller);
    // Corrupt members 2, 3, 4 run one twin per statement; honest 0 signs S, honest 1 signs S∖{v}.
    // A corrupt member ignores its round record, so its twins have records of their own.
    let mut twins_s = w.fresh_decryptors();
    let mut twins_small = w.fresh_decryptors();
    for t in twins_s.iter_mut().chain(twins_small.iter_mut()) {
        for v in agg_s.views_for(t.member()) {
            t.admit(&v).unwrap();
        }
    }
    let mut sig_s = vec![decs[0].sign(&s).unwrap().persisted()];
    let mut sig_small = vec![decs[1].sign(&smaller).unwrap().persisted()];
    for m in [2, 3, 4] {
        sig_s.push(twins_s[m].sign(&s).unwrap().persisted());
        sig_small.push(twins_small[m].sign(&smaller).unwrap().persisted());
    }
    agg_s
        .accept_release(&decs[0].release(&s, &sig_s).unwrap())
        .unwrap();
    agg_small
        .accept_release(&decs[1].release(&smaller, &sig_small).unwrap())
        .unwrap();
    for m in [2, 3, 4] {
        agg_s
            .accept_release(&twins_s[m].release(&s, &sig_s).unwrap())
            .unwrap();
        agg_small
            .accept_release(&twins_small[m].release(&smaller, &sig_small).unwrap())
            .unwrap();
    }
    let full = agg_s.finish().unwrap();
    let part = agg_small.finish().unwrap();
    let isolated: Vec<u64> = full.iter().zip(&part).map(|(a, b)| a - b).collect();
    assert_eq!(isolated, w.input(1), "site 1's input isolated");
    // Against a valid committee the very same corrupt set is refused at construction.
    assert!(matches!(
        amalgam_he::Committee::new((0..5).map(|m| w.secrets(m).certify(1)).collect(), 3, 4, 3),
        Err(HeError::CommitteeRule { .. })
    ));
}

#[test]
fn a_rolled_back_member_is_outvoted_and_a_restored_one_keeps_its_statement() {
    let mut w = world(&SMALL, 20);
    let mut decs = w.decryptors();
    let (_, s, smaller) = two_cohorts(&mut w, &mut decs);
    let before = decs[0].snapshot();
    let pending = decs[0].sign(&s).unwrap();
    let after = pending.state().to_vec();
    let _sig = pending.persisted();
    // Restored from the state persisted with the signature: same statement only.
    let restored = Decryptor::restore(&after, w.setup.clone(), 0, w.secrets(0)).unwrap();
    assert_eq!(restored.signed_statement(), Some(&s));
    let mut restored = restored;
    assert_eq!(
        restored.sign(&smaller).unwrap_err(),
        HeError::OtherStatementSigned
    );
    // Rolled back to before signing: it signs the other cohort, but honest members refuse it,
    // so at most c_d = 2 rolled-back members can never make Q = 4.
    let mut rolled = Decryptor::restore(&before, w.setup.clone(), 0, w.secrets(0)).unwrap();
    let mut sigs = vec![rolled.sign(&smaller).unwrap().persisted()];
    for d in &mut decs[1..] {
        d.sign(&s).unwrap().persisted();
        assert!(d.sign(&smaller).is_err());
    }
    sigs.push(StatementSignature {
        member: 1,
        signature: corrupt_sign(&w, 1, &smaller),
    });
    assert_eq!(
        rolled.release(&smaller, &sigs).unwrap_err(),
        HeError::NoQuorum { got: 2, quorum: 4 }
    );
}

fn inverse(a: u64) -> u64 {
    let (mut base, mut exp, mut acc) = (a, Q - 2, 1u64);
    while exp > 0 {
        if exp & 1 == 1 {
            acc = field::mul(acc, base);
        }
        base = field::mul(base, base);
        exp >>= 1;
    }
    acc
}

#[test]
fn a_lying_members_exact_shift_at_small_d_is_caught_by_the_check_chunk() {
    // A corrupt member chooses δ with NTT⁻¹(M_0 ⊙ δ) = −Δ·z, so chunk 0 decodes to Σx + z with
    // perfect residuals. With one data chunk, only the zero check chunk (masked by M_1) exposes it.
    let p = KaheParams::new(16, 4, 100).unwrap();
    let ctx = [3u8; 32];
    let key = KeyVector::expand(&[1; 32]);
    let x: Vec<u64> = (0..100).collect();
    let bodies = kahe::encrypt(&p, &ctx, &key, &x, &[2; 32]).unwrap();
    let delta = p.delta();
    let mut target = vec![0u64; N];
    target[5] = field::sub(0, field::mul(delta, 1000));
    let ntt = Ntt64::new(
        CiphertextModulus::<u64>::try_new(u128::from(Q)).unwrap(),
        PolynomialSize(N),
    );
    let mut t_ntt = vec![0u64; N];
    ntt.as_view().forward_normalized(
        Polynomial::from_container(&mut t_ntt[..]).as_mut_view(),
        Polynomial::from_container(&target[..]).as_view(),
    );
    let mut m0 = vec![0u64; N];
    public_mask(&ctx, 0, &mut m0);
    let shift: Vec<u64> = t_ntt
        .iter()
        .zip(&m0)
        .map(|(&t, &m)| field::mul(t, inverse(m)))
        .collect();
    // decode subtracts M ⊙ K; a key sum K + δ subtracts the extra NTT⁻¹(M_0 ⊙ δ) = −Δz, adding Δz.
    let mut lying = key.clone();
    lying.add_assign(&KeyVector::from_values(shift).unwrap());
    assert_eq!(
        kahe::decode_sum(&p, &ctx, 1, &bodies, &lying),
        Err(HeError::SumInvalid)
    );
    // The shift is exact on chunk 0: a 1-chunk decode (no check chunk) would have accepted it.
    let mut phase = bodies[..N].to_vec();
    let mut prod: Vec<u64> = m0
        .iter()
        .zip(lying.values())
        .map(|(&m, &k)| field::sub(0, field::mul(m, k)))
        .collect();
    ntt.as_view().add_backward(
        Polynomial::from_container(&mut phase[..]).as_mut_view(),
        Polynomial::from_container(&mut prod[..]).as_mut_view(),
    );
    let v5 = field::add(phase[5], delta / 2) / delta;
    assert_eq!(v5, 5 + 1000, "chunk 0 alone decodes the shifted value");
}

#[test]
fn masks_come_from_the_round_context_only() {
    // Nothing on the wire carries a mask: an upload is its fixed header, boxes, signature and
    // exactly chunks · N body words; masks of another round context do not decode it.
    let mut w = world(&SMALL, 21);
    let u = w.upload(0);
    let p = w.setup.params();
    let boxes: usize = (0..5)
        .map(|m| 4 + seed_box::box_len(w.setup.committee().held_by(m).len()))
        .sum();
    let fixed = 4 + 2 + 32 + 8 + 32 + 4 + 32 * w.setup.committee().pieces() + 4 + boxes + 64;
    assert_eq!(u.to_bytes().len(), fixed + 8 * p.body_len());
    let mut a = vec![0u64; N];
    let mut b = vec![0u64; N];
    public_mask(w.setup.context(), 0, &mut a);
    public_mask(&[0; 32], 0, &mut b);
    assert_ne!(a, b);
    assert!(a.iter().all(|&v| v < Q) && a.iter().any(|&v| v != 0));
}

#[test]
fn a_release_from_a_non_holder_or_for_another_statement_is_refused() {
    let mut w = world(&SMALL, 22);
    let mut decs = w.decryptors();
    let (mut agg, s, _) = two_cohorts(&mut w, &mut decs);
    let sigs: Vec<StatementSignature> = decs
        .iter_mut()
        .map(|d| d.sign(&s).unwrap().persisted())
        .collect();
    let r0 = decs[0].release(&s, &sigs).unwrap();
    // Member 1 relabels member 0's sums as its own: pieces it does not hold are refused.
    let not_held = (0..w.setup.committee().pieces())
        .find(|&p| !w.setup.committee().holds(1, p))
        .unwrap();
    let mut forged = decs[1].release(&s, &sigs).unwrap();
    forged.sums[0].0 = not_held as u16;
    assert!(agg.accept_release(&forged).is_err());
    // A lying holder: its sum for a shared piece differs from the honest one accepted first.
    agg.accept_release(&r0).unwrap();
    let honest1 = decs[1].release(&s, &sigs).unwrap();
    let shared = honest1
        .sums
        .iter()
        .position(|(p, _)| w.setup.committee().holds(0, usize::from(*p)))
        .unwrap();
    let mut sums = honest1.sums.clone();
    let mut v = sums[shared].1.values().to_vec();
    v[0] = field::add(v[0], 1);
    sums[shared].1 = KeyVector::from_values(v).unwrap();
    let liar = resign(&w, 1, honest1.statement_digest, sums);
    assert!(matches!(
        agg.accept_release(&liar),
        Err(HeError::InconsistentPieceSum { second: 1, .. })
    ));
}

fn resign(w: &World, m: usize, digest: [u8; 32], sums: Vec<(u16, KeyVector)>) -> PieceSumRelease {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"amalgam/v2/he-piece-sums");
    h.update(w.setup.context());
    h.update([m as u8]);
    h.update(digest);
    for (p, v) in &sums {
        h.update(p.to_be_bytes());
        for x in v.values() {
            h.update(x.to_be_bytes());
        }
    }
    let msg: [u8; 32] = h.finalize().into();
    PieceSumRelease {
        member: m as u8,
        statement_digest: digest,
        sums,
        signature: w.secrets(m).identity.sign(&msg).to_bytes(),
    }
}
