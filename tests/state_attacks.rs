//! Attacks on persisted state (spec §8, threat-model.md "Persistence"): rolling a site back to
//! an older snapshot to make it answer a phase twice, reusing round ids, resuming after a
//! deadline, tampering with an aggregator snapshot, and aliasing X25519 keys. Each test plays
//! the attacker's best strategy against the real `Site` / `Aggregator` and asserts the
//! defence: refused with a specific error and no state change, or byte-identical output.

use amalgam_proto::codec::{Decode, Encode, Writer, msg_type};
use amalgam_proto::crypto::sign;
use amalgam_proto::messages::*;
use amalgam_proto::params::{RoundParams, SiteId};
use amalgam_proto::phase::Phase;
use amalgam_proto::roles::{AggregatorStep, Snapshot};
use amalgam_proto::sim::{self, SimConfig};
use amalgam_proto::site::{RoundLog, Timestamp};
use amalgam_proto::{Aggregator, Error, Misbehaviour, Misuse, Sender, Site};
use amalgam_tests::harness::{Answer, NOW, RecordedRound};

fn record(params: RoundParams) -> RecordedRound {
    RecordedRound::record(SimConfig::new(params, 1, [0x33; 32]))
}

fn download(r: &RecordedRound, phase: Phase, site: u16) -> ToSite {
    let env = r.downloads(phase).find(|e| e.site == SiteId(site)).unwrap();
    ToSite::from_bytes(&env.bytes, &r.config.params).unwrap()
}

fn upload(r: &RecordedRound, phase: Phase, site: u16) -> ToAggregator {
    let env = r.uploads(phase).find(|e| e.site == SiteId(site)).unwrap();
    ToAggregator::from_bytes(&env.bytes, &r.config.params).unwrap()
}

fn conflicting(e: &Error) -> bool {
    matches!(
        e,
        Error::PeerMisbehaved {
            sender: Sender::Aggregator,
            kind: Misbehaviour::ConflictingRedelivery { .. }
        }
    )
}

/// A time after every deadline a site set at [`NOW`].
fn too_late() -> Timestamp {
    Timestamp(NOW.0 + sim::SIM_TIMEOUT_MS)
}

fn restore(r: &RecordedRound, id: u16, bytes: &[u8], now: Timestamp, log: &mut RoundLog) -> Site {
    Site::restore(bytes, &r.restore_ctx(SiteId(id)), now, log).unwrap()
}

/// The four-masked-inputs attack (n = 4, t = 3): the aggregator shows site 0 the shares of
/// {1,2,3}, then of {2,3}, {1,3}, {1,2}, hoping for masked inputs of one x_0 under different
/// mask sets (their combination with the revealed b_0 gives x_0). Every second routing is
/// refused, on the live site and on its restored latest state; the first one re-delivered gets
/// the identical bytes; the pre-answer snapshot restored after its deadline is abandoned.
#[test]
fn rollback_from_awaiting_shares_gives_no_second_masked_input() {
    let r = record(RoundParams::exact(4, 3, 8, 16).unwrap());
    let mut site = r.site_at(SiteId(0), Phase::MaskedInput).unwrap();
    assert_eq!(site.state_name(), "AwaitingShares");
    let before = site.persisted().into_bytes();
    let ToSite::RoutedShares(all) = download(&r, Phase::MaskedInput, 0) else {
        panic!()
    };
    let subsets: Vec<ToSite> = [[2u16, 3], [1, 3], [1, 2]]
        .iter()
        .map(|keep| {
            let mut m = all.clone();
            m.shares.retain(|(from, _)| keep.contains(&from.0));
            ToSite::RoutedShares(m)
        })
        .collect();
    let first = site.answer(ToSite::RoutedShares(all.clone())).unwrap();
    assert!(matches!(first, ToAggregator::MaskedInput(_)));
    let latest = site.persisted();
    for other in &subsets {
        let e = site.answer(other.clone()).unwrap_err();
        assert!(conflicting(&e), "{e:?}");
        assert_eq!(site.persisted(), latest, "a refusal changes nothing");
    }
    assert_eq!(
        site.answer(ToSite::RoutedShares(all.clone()))
            .unwrap()
            .to_bytes(),
        first.to_bytes(),
        "a re-delivery gets the identical upload"
    );
    // The restored latest state behaves the same.
    let mut log = RoundLog::new();
    let mut restored = restore(&r, 0, latest.bytes(), NOW, &mut log);
    for other in &subsets {
        assert!(conflicting(&restored.answer(other.clone()).unwrap_err()));
    }
    assert_eq!(
        restored
            .answer(ToSite::RoutedShares(all.clone()))
            .unwrap()
            .to_bytes(),
        first.to_bytes()
    );
    // The pre-answer snapshot, restored once its deadline has passed, is abandoned.
    let mut log = RoundLog::new();
    let mut old = restore(&r, 0, &before, too_late(), &mut log);
    assert!(old.is_abandoned());
    assert_eq!(log.high_water(), Some(r.config.round));
    for other in &subsets {
        assert!(matches!(
            old.answer(other.clone()),
            Err(Error::RoundAbandoned { round: 1 })
        ));
    }
    // Remaining exposure, stated in the threat model: the same old snapshot restored *inside*
    // its deadline answers a second routing, so a service must never restore a site's state
    // directory while a round is open (the crate cannot tell an old copy from the latest).
    let mut inside = restore(&r, 0, &before, NOW, &mut RoundLog::new());
    let second = inside.answer(subsets[0].clone()).unwrap();
    assert_ne!(second.to_bytes(), first.to_bytes());
}

/// Re-handling one KeysBroadcast from a restored AwaitingKeys snapshot used to draw a fresh b
/// and fresh polynomials and encrypt them under the same key and zero nonce. Now the bytes are
/// identical: nothing new is encrypted under a used key. A different broadcast once answered
/// is refused.
#[test]
fn rollback_from_awaiting_keys_rehandles_byte_identically() {
    let r = record(RoundParams::exact(5, 4, 8, 16).unwrap());
    let mut site = r.site_at(SiteId(1), Phase::ShareKeys).unwrap();
    assert_eq!(site.state_name(), "AwaitingKeys");
    let before = site.persisted().into_bytes();
    let kb = download(&r, Phase::ShareKeys, 1);
    let first = site.answer(kb.clone()).unwrap();
    assert_eq!(
        first.to_bytes(),
        upload(&r, Phase::ShareKeys, 1).to_bytes(),
        "same as in the recorded round"
    );
    for _ in 0..3 {
        let mut again = restore(&r, 1, &before, NOW, &mut RoundLog::new());
        assert_eq!(
            again.answer(kb.clone()).unwrap().to_bytes(),
            first.to_bytes()
        );
    }
    let ToSite::KeysBroadcast(mut fewer) = kb.clone() else {
        panic!()
    };
    fewer.adverts.retain(|a| a.sender != SiteId(4));
    let latest = site.persisted();
    let e = site.answer(ToSite::KeysBroadcast(fewer)).unwrap_err();
    assert!(conflicting(&e), "{e:?}");
    assert_eq!(site.persisted(), latest);
}

/// A restored AwaitingSurvivors site used to sign a second survivor set. The latest state
/// refuses any other set; the old snapshot after its deadline is abandoned.
#[test]
fn rollback_from_awaiting_survivors_signs_one_set() {
    let r = record(RoundParams::exact(5, 4, 8, 16).unwrap());
    let mut site = r.site_at(SiteId(0), Phase::ConsistencyCheck).unwrap();
    assert_eq!(site.state_name(), "AwaitingSurvivors");
    let before = site.persisted().into_bytes();
    let set = |ids: &[u16]| {
        ToSite::SurvivorSet(SurvivorSet {
            round: 1,
            survivors: ids.iter().map(|&i| SiteId(i)).collect(),
        })
    };
    let first = site.answer(set(&[0, 1, 2, 3, 4])).unwrap();
    let latest = site.persisted();
    let mut restored = restore(&r, 0, latest.bytes(), NOW, &mut RoundLog::new());
    for s in [&mut site, &mut restored] {
        let e = s.answer(set(&[0, 1, 2, 3])).unwrap_err();
        assert!(conflicting(&e), "{e:?}");
        assert_eq!(
            s.answer(set(&[0, 1, 2, 3, 4])).unwrap().to_bytes(),
            first.to_bytes()
        );
    }
    let mut old = restore(&r, 0, &before, too_late(), &mut RoundLog::new());
    assert!(matches!(
        old.answer(set(&[0, 1, 2, 3])),
        Err(Error::RoundAbandoned { .. })
    ));
}

/// A deadline passing while the site runs abandons the round: the secrets go, nothing more
/// is answered, and the snapshot records it.
#[test]
fn deadline_passed_abandons_the_round() {
    let r = record(RoundParams::exact(5, 4, 8, 16).unwrap());
    let mut site = r.site_at(SiteId(2), Phase::MaskedInput).unwrap();
    let deadline = site.deadline().unwrap();
    assert_eq!(deadline, Timestamp(NOW.0 + sim::SIM_TIMEOUT_MS));
    let routed = download(&r, Phase::MaskedInput, 2);
    let e = site.handle(routed.clone(), deadline).unwrap_err();
    assert!(matches!(e, Error::RoundAbandoned { round: 1 }));
    assert!(site.is_abandoned() && site.is_done());
    assert!(site.resend().is_none());
    assert!(site.handle(routed.clone(), NOW).is_err(), "no going back");
    let snap = site.snapshot();
    let again = restore(&r, 2, snap.bytes(), NOW, &mut RoundLog::new());
    assert!(again.is_abandoned());
    // One millisecond earlier it would have answered.
    let mut live = r.site_at(SiteId(2), Phase::MaskedInput).unwrap();
    assert!(live.handle(routed, Timestamp(deadline.0 - 1)).is_ok());
}

/// Round ids are never reused: a new round at or below the high-water mark is refused, and
/// so is restoring a round the site has moved past.
#[test]
fn round_id_reuse_is_refused() {
    let r = record(RoundParams::exact(5, 4, 8, 16).unwrap());
    let p = r.config.params;
    let manifest = r.consortium.manifest().clone();
    let identity = r.consortium.identity(SiteId(0)).clone();
    let new = |round, log: &mut RoundLog| {
        Site::new(
            p,
            manifest.clone(),
            round,
            identity.clone(),
            sim::sim_timeout(),
            log,
        )
    };
    let mut log = RoundLog::new();
    new(7, &mut log).unwrap();
    assert_eq!(log.high_water(), Some(7));
    for reused in [7, 3] {
        assert!(matches!(
            new(reused, &mut log),
            Err(Error::Misuse(Misuse::RoundReused { high_water: 7, .. }))
        ));
    }
    assert_eq!(log, RoundLog::from_bytes(&log.to_bytes()).unwrap());
    new(8, &mut log).unwrap();
    // A snapshot of round 1 (the recording) after the site moved on to round 8.
    let snap = r.site_at(SiteId(0), Phase::MaskedInput).unwrap().snapshot();
    assert!(matches!(
        Site::restore(snap.bytes(), &r.restore_ctx(SiteId(0)), NOW, &mut log),
        Err(Error::Misuse(Misuse::RoundReused {
            round: 1,
            high_water: 8
        }))
    ));
}

/// An upload is released only against a snapshot of the state that produced it.
#[test]
fn uploads_leave_only_after_the_new_state_is_snapshotted() {
    let r = record(RoundParams::exact(5, 4, 8, 16).unwrap());
    let mut site = r.site_at(SiteId(0), Phase::MaskedInput).unwrap();
    let stale = site.snapshot();
    let out = site
        .handle(download(&r, Phase::MaskedInput, 0), NOW)
        .unwrap();
    assert!(matches!(
        out.release(&stale),
        Err(Error::Misuse(Misuse::NotPersisted))
    ));
    let out = site.resend().unwrap();
    let fresh = site.snapshot();
    assert!(matches!(
        out.release(&fresh),
        Ok(ToAggregator::MaskedInput(_))
    ));
}

/// An older snapshot of the same round (AwaitingShares after the site moved on to
/// AwaitingSurvivors) restored before its deadline would answer the masked-input phase again.
/// The round log records (round, step) of every stored snapshot and refuses it.
#[test]
fn older_snapshot_of_the_same_round_is_refused() {
    let r = record(RoundParams::exact(5, 4, 8, 16).unwrap());
    let mut log = RoundLog::new();
    let mut site = r.site_at(SiteId(0), Phase::MaskedInput).unwrap();
    let older = site.snapshot();
    log.record(&older).unwrap();
    let out = site
        .handle(download(&r, Phase::MaskedInput, 0), NOW)
        .unwrap();
    let newer = site.snapshot();
    log.record(&newer).unwrap();
    assert!(newer.step() > older.step());
    out.release(&newer).unwrap();
    let stored = RoundLog::from_bytes(&log.to_bytes()).unwrap();
    assert_eq!(stored, log);
    let mut attempt = stored;
    let e = Site::restore(older.bytes(), &r.restore_ctx(SiteId(0)), NOW, &mut attempt).unwrap_err();
    assert!(
        matches!(e, Error::Misuse(Misuse::StaleSnapshot { round: 1, .. })),
        "{e:?}"
    );
    assert_eq!(attempt, stored, "a refused restore changes nothing");
    // The latest state restores; recording an older step of the round keeps the later one.
    restore(&r, 0, newer.bytes(), NOW, &mut attempt);
    assert!(
        log.record(&older).is_ok(),
        "same round, older step: the step stays"
    );
    assert_eq!(log.step(), newer.step());
}

/// Two instances restored from the same bytes reach equal transition counts; the bare count
/// let one's snapshot release the other's upload. The per-instance tag refuses it.
#[test]
fn a_snapshot_releases_only_its_own_instances_upload() {
    let r = record(RoundParams::exact(5, 4, 8, 16).unwrap());
    let site = r.site_at(SiteId(0), Phase::MaskedInput).unwrap();
    let bytes = site.snapshot().into_bytes();
    let a = restore(&r, 0, &bytes, NOW, &mut RoundLog::new());
    let b = restore(&r, 0, &bytes, NOW, &mut RoundLog::new());
    assert_eq!(a.snapshot().bytes(), b.snapshot().bytes());
    assert!(matches!(
        b.resend().unwrap().release(&a.snapshot()),
        Err(Error::Misuse(Misuse::NotPersisted))
    ));
    assert!(b.resend().unwrap().release(&b.snapshot()).is_ok());
}

// --- the tampered aggregator snapshot -------------------------------------------------------

/// The stored parts of an aggregator snapshot, rebuilt from a recording, so that each can be
/// tampered with alone.
#[derive(Clone)]
struct Parts {
    phase: Phase,
    adverts: Vec<AdvertiseKeys>,
    session: [u8; 32],
    shares: Vec<ShareKeys>,
    masked: Vec<MaskedInput>,
    survivors: Vec<SiteId>,
    signatures: Vec<(SiteId, [u8; 64])>,
    responses: Vec<UnmaskShares>,
}

impl Parts {
    fn of(r: &RecordedRound, phase: Phase) -> Self {
        let p = &r.config.params;
        let all = |ph| {
            r.uploads(ph)
                .map(|e| ToAggregator::from_bytes(&e.bytes, p).unwrap())
        };
        let adverts = all(Phase::AdvertiseKeys)
            .map(|m| match m {
                ToAggregator::AdvertiseKeys(a) => a,
                _ => panic!(),
            })
            .collect();
        let shares = all(Phase::ShareKeys)
            .map(|m| match m {
                ToAggregator::ShareKeys(a) => a,
                _ => panic!(),
            })
            .collect();
        let masked: Vec<MaskedInput> = all(Phase::MaskedInput)
            .map(|m| match m {
                ToAggregator::MaskedInput(a) => a,
                _ => panic!(),
            })
            .collect();
        let signatures = all(Phase::ConsistencyCheck)
            .map(|m| match m {
                ToAggregator::ConsistencySignature(a) => (a.sender, a.signature),
                _ => panic!(),
            })
            .collect();
        let responses = all(Phase::Unmasking)
            .map(|m| match m {
                ToAggregator::UnmaskShares(a) => a,
                _ => panic!(),
            })
            .collect();
        Parts {
            phase,
            adverts,
            session: r
                .aggregator_at(Phase::ShareKeys)
                .unwrap()
                .session_id()
                .unwrap(),
            shares,
            survivors: masked.iter().map(|m| m.sender).collect(),
            masked,
            signatures,
            responses,
        }
    }

    /// The snapshot layout of spec §8.2.
    fn bytes(&self, r: &RecordedRound) -> Vec<u8> {
        let mut w = Writer::new();
        w.header(msg_type::AGGREGATOR_SNAPSHOT);
        r.config.params.encode(&mut w);
        w.bytes(&r.consortium.manifest().digest());
        // Context digest: the simulator binds the manifest digest (no model binding).
        w.bytes(&r.consortium.manifest().digest());
        w.u64(r.config.round);
        w.u8(self.phase.code());
        let list = |w: &mut Writer, ms: Vec<Vec<u8>>| {
            w.count(ms.len());
            for m in ms {
                w.bytes(&m);
            }
        };
        list(&mut w, self.adverts.iter().map(Encode::to_bytes).collect());
        w.bytes(&self.session);
        list(&mut w, self.shares.iter().map(Encode::to_bytes).collect());
        list(&mut w, self.masked.iter().map(Encode::to_bytes).collect());
        w.count(self.survivors.len());
        for s in &self.survivors {
            w.u16(s.0);
        }
        w.count(self.signatures.len());
        for (s, sig) in &self.signatures {
            w.u16(s.0);
            w.bytes(sig);
        }
        list(
            &mut w,
            self.responses.iter().map(Encode::to_bytes).collect(),
        );
        w.into_bytes()
    }
}

/// The old attack: a survivor's masked input removed from a snapshot made unmasking skip it
/// and finish with a wrong sum. Every stored field is now re-checked on restore; each
/// tampering below is refused, and the untampered parts restore and finish exactly.
#[test]
fn tampered_aggregator_snapshot_is_refused() {
    let r = record(RoundParams::exact(5, 4, 8, 16).unwrap());
    let m = r.consortium.manifest();
    let honest = Parts::of(&r, Phase::Unmasking);
    assert_eq!(
        honest.bytes(&r),
        {
            let mut agg = r.aggregator_at(Phase::Unmasking).unwrap();
            for e in r.uploads(Phase::Unmasking) {
                agg.receive_bytes(e.site, &e.bytes).unwrap();
            }
            agg.snapshot()
        },
        "the test's layout is the crate's"
    );
    let mut agg = Aggregator::restore(&honest.bytes(&r), m).unwrap();
    let AggregatorStep::Finished(out) = agg.close_phase().unwrap() else {
        panic!()
    };
    assert_eq!(out.sum, r.output.as_ref().unwrap().sum);

    let mut cases: Vec<(&str, Parts)> = Vec::new();
    let mut t = honest.clone();
    t.session[0] ^= 1;
    cases.push(("session id not the hash of the adverts", t));
    let mut t = honest.clone();
    t.adverts.remove(4);
    cases.push(("an advert removed", t));
    let mut t = honest.clone();
    t.adverts[2].signature[5] ^= 1;
    cases.push(("an advert's signature", t));
    let mut t = honest.clone();
    t.shares.remove(3);
    cases.push(("a ShareKeys removed (routing derived from the rest)", t));
    let mut t = honest.clone();
    t.shares[1].b_commitment[0] ^= 1;
    cases.push(("a b commitment changed", t));
    let mut t = honest.clone();
    t.masked.remove(2);
    cases.push(("a survivor's masked input removed (survivors ⊄ masked)", t));
    let mut t = honest.clone();
    t.masked[0].packed[0] ^= 1;
    cases.push(("a masked input changed", t));
    let mut t = honest.clone();
    t.survivors.pop();
    cases.push(("survivor set shrunk", t));
    let mut t = honest.clone();
    t.signatures[0].1[0] ^= 1;
    cases.push(("a consistency signature", t));
    let mut t = honest.clone();
    t.responses[1].b_shares[0].1[0] ^= 1;
    cases.push(("a revealed share changed", t));
    for (what, parts) in cases {
        let e = Aggregator::restore(&parts.bytes(&r), m).unwrap_err();
        assert!(
            matches!(e, Error::SnapshotRefused(_) | Error::Decode { .. }),
            "{what}: {e:?}"
        );
    }
    // A response from a site that never signed, re-signed by that site (a colluder): the
    // aggregator would not have accepted it, so the restore does not either.
    let mut t = Parts::of(&r, Phase::Unmasking);
    t.signatures.retain(|(s, _)| *s != SiteId(4));
    let e = Aggregator::restore(&t.bytes(&r), m).unwrap_err();
    assert!(
        matches!(&e, Error::SnapshotRefused(inner) if matches!(**inner, Error::PeerMisbehaved { kind: Misbehaviour::NotParticipant, .. })),
        "{e:?}"
    );
}

/// A finished aggregator snapshot was restored as stored: a flipped sum bit gave a wrong sum.
/// It now carries the Unmasking-phase uploads, and restore recomputes the output and compares:
/// every edit of the stored output (sum, contributors, dropped, blamed) is refused.
#[test]
fn tampered_finished_aggregator_snapshot_is_refused() {
    let r = record(RoundParams::exact(4, 3, 8, 16).unwrap());
    let m = r.consortium.manifest();
    let mut agg = r.aggregator_at(Phase::Unmasking).unwrap();
    for e in r.uploads(Phase::Unmasking) {
        agg.receive_bytes(e.site, &e.bytes).unwrap();
    }
    let AggregatorStep::Finished(honest) = agg.close_phase().unwrap() else {
        panic!("unmasking finishes the round")
    };
    let bytes = agg.snapshot();
    let restored = Aggregator::restore(&bytes, m).unwrap();
    assert_eq!(restored.output(), Some(&honest));
    assert_eq!(restored.snapshot(), bytes);
    // The output is the snapshot's tail: re-encode it with one edit at a time.
    let ids = |w: &mut Writer, v: &[SiteId]| {
        w.count(v.len());
        for i in v {
            w.u16(i.0);
        }
    };
    let encode = |o: &amalgam_proto::AggregateOutput| {
        let mut w = Writer::new();
        ids(&mut w, &o.contributors);
        ids(&mut w, &o.dropped);
        ids(&mut w, &o.blamed);
        w.count(o.sum.len());
        for x in &o.sum {
            w.u64(*x);
        }
        w.into_bytes()
    };
    let tail = encode(&honest);
    assert!(bytes.ends_with(&tail), "the test's layout is the crate's");
    let prefix = &bytes[..bytes.len() - tail.len()];
    let mut cases = Vec::new();
    let mut t = honest.clone();
    t.sum[15] ^= 1;
    cases.push(("a sum bit flipped", t));
    let mut t = honest.clone();
    t.contributors.pop();
    cases.push(("a contributor removed", t));
    let mut t = honest.clone();
    let moved = t.contributors.remove(0);
    t.dropped.insert(0, moved);
    cases.push(("a contributor moved to dropped", t));
    let mut t = honest.clone();
    t.blamed.push(SiteId(2));
    cases.push(("an honest revealer blamed", t));
    for (what, out) in cases {
        let mut tampered = prefix.to_vec();
        tampered.extend_from_slice(&encode(&out));
        let e = Aggregator::restore(&tampered, m).unwrap_err();
        assert!(matches!(e, Error::Decode { .. }), "{what}: {e:?}");
    }
}

// --- preallocation from untrusted counts ------------------------------------------------------

/// Records the largest single allocation made on a thread while `TRACK` is set on it.
struct PeakAlloc;
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
thread_local! {
    static TRACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
// SAFETY: forwards every call unchanged to the system allocator; only records sizes.
unsafe impl std::alloc::GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        if TRACK.with(|t| t.get()) {
            PEAK.fetch_max(l.size(), std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        // SAFETY: `p` came from `alloc` above with this layout.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}
#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// The largest single allocation `f` makes on this thread.
fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.store(0, std::sync::atomic::Ordering::Relaxed);
    TRACK.with(|t| t.set(true));
    let out = f();
    TRACK.with(|t| t.set(false));
    (out, PEAK.load(std::sync::atomic::Ordering::Relaxed))
}

/// A site snapshot of ~150 bytes declaring d = 2^24 made restore reserve 128 MiB for the input
/// before reading it. Every decoder now reserves only what the remaining bytes can hold.
#[test]
fn declared_counts_do_not_preallocate() {
    let r = record(RoundParams::exact(4, 3, 8, 16).unwrap());
    let huge = RoundParams::exact(4, 3, 8, 1 << 24).unwrap();
    let mut w = Writer::new();
    w.header(msg_type::SITE_SNAPSHOT);
    huge.encode(&mut w);
    w.bytes(&r.consortium.manifest().digest());
    w.bytes(&[0u8; 32]); // context digest
    w.u64(1); // round
    w.u16(0); // site
    w.u64(sim::SIM_TIMEOUT_MS);
    w.u8(1); // AwaitingKeys
    w.u64(u64::MAX); // deadline
    w.bytes(&[7u8; 32]); // round seed
    w.count(1 << 24); // input count, and no elements
    let bytes = w.into_bytes();
    assert!(bytes.len() < 200, "{} bytes", bytes.len());
    let (res, peak) = peak_alloc(|| {
        Site::restore(&bytes, &r.restore_ctx(SiteId(0)), NOW, &mut RoundLog::new()).map(|_| ())
    });
    assert!(matches!(res, Err(Error::Decode { .. })), "{res:?}");
    assert!(
        peak < 64 << 10,
        "restore reserved {peak} bytes for a {}-byte snapshot",
        bytes.len()
    );
    // The aggregator's finished output (sum.count = d) is bounded the same way.
    let mut w = Writer::new();
    w.header(msg_type::AGGREGATOR_SNAPSHOT);
    huge.encode(&mut w);
    w.bytes(&r.consortium.manifest().digest());
    w.bytes(&[0u8; 32]);
    w.u64(1);
    w.u8(Phase::Finished.code());
    w.count(0); // adverts
    w.bytes(&[0u8; 32]); // session id
    for _ in 0..8 {
        // shares, masked, survivors, signatures, responses, contributors, dropped, blamed
        w.count(0);
    }
    w.count(1 << 24); // sum.count = d, and no elements
    let bytes = w.into_bytes();
    let (res, peak) =
        peak_alloc(|| Aggregator::restore(&bytes, r.consortium.manifest()).map(|_| ()));
    assert!(res.is_err());
    assert!(peak < 64 << 10, "aggregator restore reserved {peak} bytes");
}

// --- key aliasing ---------------------------------------------------------------------------

/// X25519 ignores bit 255 of a public key, so `k` and `k | 2^255` are the same key. A site
/// advertising another site's key with bit 255 set (or its own c key as its s key) is refused
/// for key reuse, by the aggregator and by every site checking the broadcast.
#[test]
fn aliased_x25519_keys_are_key_reuse() {
    let r = record(RoundParams::exact(5, 4, 8, 16).unwrap());
    let id = |i: u16| r.consortium.identity(SiteId(i));
    let ToAggregator::AdvertiseKeys(a0) = upload(&r, Phase::AdvertiseKeys, 0) else {
        panic!()
    };
    let ToAggregator::AdvertiseKeys(a1) = upload(&r, Phase::AdvertiseKeys, 1) else {
        panic!()
    };
    // The round context the adverts are signed under.
    let ctx = amalgam_proto::crypto::kdf::masking_round_context(
        &r.consortium.manifest().digest(),
        &r.config.params,
        r.config.round,
    );
    let resign = |mut a: AdvertiseKeys, who: u16| {
        a.signature = sign::sign_message(id(who), &ctx, &a.body());
        a
    };
    let mut copied = a1.clone();
    copied.s_pk = a0.c_pk;
    copied.s_pk[31] |= 0x80;
    let copied = resign(copied, 1);
    let mut selfalias = a1.clone();
    selfalias.s_pk = selfalias.c_pk;
    selfalias.s_pk[31] |= 0x80;
    let selfalias = resign(selfalias, 1);
    for bad in [copied, selfalias] {
        let mut agg = r.aggregator_at(Phase::AdvertiseKeys).unwrap();
        agg.receive(ToAggregator::AdvertiseKeys(a0.clone()))
            .unwrap();
        let before = agg.snapshot();
        let e = agg
            .receive(ToAggregator::AdvertiseKeys(bad.clone()))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::PeerMisbehaved {
                    sender: Sender::Site(SiteId(1)),
                    kind: Misbehaviour::KeyReuse
                }
            ),
            "{e:?}"
        );
        assert_eq!(agg.snapshot(), before);
        // A malicious aggregator forwarding it anyway: site 2 refuses the broadcast.
        let ToSite::KeysBroadcast(mut kb) = download(&r, Phase::ShareKeys, 2) else {
            panic!()
        };
        kb.adverts[1] = bad;
        let mut site = r.site_at(SiteId(2), Phase::ShareKeys).unwrap();
        let e = site.answer(ToSite::KeysBroadcast(kb)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::PeerMisbehaved {
                    sender: Sender::Site(SiteId(1)),
                    kind: Misbehaviour::KeyReuse
                }
            ),
            "{e:?}"
        );
    }
}
