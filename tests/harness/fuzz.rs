//! Fuzz entry points: every decoder and every state-machine input. Each function must never
//! panic, whatever the bytes. The first byte of `data` selects a phase / site where needed.

use std::sync::OnceLock;

use amalgam_proto::codec::Decode;
use amalgam_proto::messages::{ToAggregator, ToSite};
use amalgam_proto::params::{Manifest, RoundParams, SiteId};
use amalgam_proto::phase::Phase;
use amalgam_proto::roles::Snapshot;
use amalgam_proto::sim::SimConfig;
use amalgam_proto::{Aggregator, Site, SiteRestore};

use super::{PHASES, RecordedRound};

/// The recorded round all fuzz targets start from (n = 5, t = 3, d = 16, one dropout).
pub fn fixture() -> &'static RecordedRound {
    static FIXTURE: OnceLock<RecordedRound> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        #[allow(clippy::expect_used)]
        let params = RoundParams::exact(5, 3, 12, 16).expect("valid parameters");
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
    let _ = Site::restore(data, &ctx);
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
    let Ok((mut site, mut rng)) = f.site_at(id, phase) else {
        return;
    };
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let msg = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let _ = site.handle_bytes(msg, &mut rng);
    }
}
