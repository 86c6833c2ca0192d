//! Feature vectors, computed identically at every plant from public, fixed bounds.
//!
//! Standardization never uses statistics of a plant's data (those would differ between plants
//! and leak their distribution): each raw value is clipped to a fixed public bound and mapped
//! linearly onto [-1, 1]. The bounds are AI4I's documented physical ranges, rounded outward.
//! The optional physics features are the quantities the failure mechanisms depend on
//! (temperature difference, mechanical power, wear × torque); none of them encodes a threshold of
//! the data generator — the model has to learn where failures begin.

use serde::{Deserialize, Serialize};

use crate::data::{ProductType, Row};

/// Which features a model sees. Part of a model's identity: every plant uses the same set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSet {
    /// Add temperature difference, power and wear × torque.
    pub physics: bool,
}

impl Default for FeatureSet {
    fn default() -> Self {
        FeatureSet { physics: true }
    }
}

/// A scalar feature and its public bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Feature name (documentation and reports).
    pub name: &'static str,
    /// Lower end of the public range.
    pub lo: f64,
    /// Upper end of the public range.
    pub hi: f64,
}

/// Bounds of the five raw numeric AI4I columns (the file's range is inside each).
pub const RAW_BOUNDS: [Bound; 5] = [
    Bound {
        name: "air temperature [K]",
        lo: 295.0,
        hi: 305.0,
    },
    Bound {
        name: "process temperature [K]",
        lo: 305.0,
        hi: 315.0,
    },
    Bound {
        name: "rotational speed [rpm]",
        lo: 1_100.0,
        hi: 2_900.0,
    },
    Bound {
        name: "torque [Nm]",
        lo: 0.0,
        hi: 80.0,
    },
    Bound {
        name: "tool wear [min]",
        lo: 0.0,
        hi: 260.0,
    },
];

/// Bounds of the physics features.
pub const PHYSICS_BOUNDS: [Bound; 3] = [
    Bound {
        name: "process - air temperature [K]",
        lo: 5.0,
        hi: 15.0,
    },
    Bound {
        name: "power [W] = torque x speed x 2pi/60",
        lo: 0.0,
        hi: 15_000.0,
    },
    Bound {
        name: "tool wear x torque [min Nm]",
        lo: 0.0,
        hi: 20_000.0,
    },
];

impl FeatureSet {
    /// Length of the feature vector: 3 (Type one-hot) + 5 raw + 3 physics when enabled.
    pub fn dim(self) -> usize {
        3 + RAW_BOUNDS.len()
            + if self.physics {
                PHYSICS_BOUNDS.len()
            } else {
                0
            }
    }

    /// Appends the feature vector of `row` to `out`.
    pub fn push(self, row: &Row, out: &mut Vec<f32>) {
        for t in ProductType::ALL {
            out.push(if row.product_type == t { 1.0 } else { 0.0 });
        }
        let raw = [
            row.air_temp_k,
            row.process_temp_k,
            row.speed_rpm,
            row.torque_nm,
            row.wear_min,
        ];
        for (v, b) in raw.iter().zip(RAW_BOUNDS.iter()) {
            out.push(scale(*v, b));
        }
        if self.physics {
            let power = row.torque_nm * row.speed_rpm * std::f64::consts::TAU / 60.0;
            let phys = [
                row.process_temp_k - row.air_temp_k,
                power,
                row.wear_min * row.torque_nm,
            ];
            for (v, b) in phys.iter().zip(PHYSICS_BOUNDS.iter()) {
                out.push(scale(*v, b));
            }
        }
    }

    /// Row-major feature matrix of `rows`.
    pub fn matrix(self, rows: &[&Row]) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * self.dim());
        for r in rows {
            self.push(r, &mut out);
        }
        out
    }
}

/// Clips to the bound and maps it onto [-1, 1].
fn scale(v: f64, b: &Bound) -> f32 {
    let c = v.clamp(b.lo, b.hi);
    (2.0 * (c - b.lo) / (b.hi - b.lo) - 1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Row;

    fn row(t: ProductType, air: f64, proc_: f64, speed: f64, torque: f64, wear: f64) -> Row {
        Row {
            udi: 1,
            product_type: t,
            air_temp_k: air,
            process_temp_k: proc_,
            speed_rpm: speed,
            torque_nm: torque,
            wear_min: wear,
            failure: false,
            modes: 0,
        }
    }

    #[test]
    fn one_hot_scaling_physics_and_clipping() {
        let r = row(ProductType::M, 300.0, 310.0, 2_000.0, 40.0, 130.0);
        let mut v = Vec::new();
        FeatureSet { physics: true }.push(&r, &mut v);
        assert_eq!(v.len(), 11);
        assert_eq!(&v[..3], &[0.0, 1.0, 0.0]);
        assert_eq!(&v[3..8], &[0.0, 0.0, 0.0, 0.0, 0.0]);
        // dT = 10 K is the middle of [5, 15]; wear x torque = 5200 of [0, 20000].
        assert!((v[8] - 0.0).abs() < 1e-6);
        let power = 40.0 * 2_000.0 * std::f64::consts::TAU / 60.0;
        assert!((f64::from(v[9]) - (2.0 * power / 15_000.0 - 1.0)).abs() < 1e-6);
        assert!((f64::from(v[10]) - (2.0 * 5_200.0 / 20_000.0 - 1.0)).abs() < 1e-6);
        let wild = row(ProductType::L, 100.0, 500.0, 0.0, 999.0, 0.0);
        let mut w = Vec::new();
        FeatureSet { physics: false }.push(&wild, &mut w);
        assert_eq!(w, vec![1.0, 0.0, 0.0, -1.0, 1.0, -1.0, 1.0, -1.0]);
    }
}
