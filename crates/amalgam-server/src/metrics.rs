//! Prometheus metrics (prometheus-client), served on the separate metrics listener. No
//! per-site label unless the operator asks for it (`--metrics-site-labels`): which plant was
//! late is itself information.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label: a problem code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Stable problem code.
    pub reason: String,
}

/// Label: a phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// Phase URL segment.
    pub phase: String,
}

/// Label: a site (only with site labels enabled).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabel {
    /// Site index.
    pub site: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Rejected requests by problem code.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Sites that answered each closed phase of the latest round.
    pub survivors: Family<PhaseLabel, Gauge>,
    /// Round durations, seconds.
    pub round_seconds: Histogram,
    /// Request body bytes accepted.
    pub bytes_in: Counter,
    /// Response body bytes served.
    pub bytes_out: Counter,
    /// Accepted uploads per site (registered only with site labels).
    pub uploads_by_site: Option<Family<SiteLabel, Counter>>,
    registry: Registry,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(site_labels: bool) -> Self {
        let mut registry = Registry::with_prefix("amalgam");
        let rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "rejected_requests",
            "Refused requests by problem code",
            rejected.clone(),
        );
        let survivors = Family::<PhaseLabel, Gauge>::default();
        registry.register(
            "phase_survivors",
            "Sites that answered each closed phase",
            survivors.clone(),
        );
        let round_seconds = Histogram::new([10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0]);
        registry.register(
            "round_duration_seconds",
            "Round duration from open to end",
            round_seconds.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "request_bytes",
            "Accepted request body bytes",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "response_bytes",
            "Served response body bytes",
            bytes_out.clone(),
        );
        let uploads_by_site = site_labels.then(|| {
            let f = Family::<SiteLabel, Counter>::default();
            registry.register("uploads_by_site", "Accepted uploads per site", f.clone());
            f
        });
        Self {
            rejected,
            survivors,
            round_seconds,
            bytes_in,
            bytes_out,
            uploads_by_site,
            registry,
        }
    }

    /// Counts a refusal.
    pub fn reject(&self, code: amalgam_net::ProblemCode) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: code.as_str().to_owned(),
            })
            .inc();
    }

    /// Text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}
