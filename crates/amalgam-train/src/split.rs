//! Seeded splits of one data set into a global test set and plants.
//!
//! The global test set is drawn first, stratified by primary failure mode, so that every method
//! is scored on the same rows and no test row ever reaches a plant. The remaining rows are dealt
//! to plants by product type or by failure mode (the non-IID settings a consortium meets), then
//! each plant keeps a held-out set from its own distribution and carves a validation set (for
//! decision thresholds and hyperparameters) from its training rows. The split seed is a public
//! experiment parameter and is unrelated to any differential-privacy randomness.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::{Mode, ProductType, Row};

/// How rows are dealt to plants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitKind {
    /// Each plant makes products of one type; plants per type in proportion to the type's rows.
    Type,
    /// Each plant has a major failure mode and receives `major_share` of that mode's failures.
    Mode,
    /// Each failure mode's failures go to the plants owning that mode only.
    ModeExclusive,
}

/// Split parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Number of plants (at least 1).
    pub plants: usize,
    /// How rows are dealt.
    pub kind: SplitKind,
    /// Share of a mode's failures given to its own plants under [`SplitKind::Mode`].
    pub major_share: f64,
    /// Fraction of all rows in the global test set.
    pub test_fraction: f64,
    /// Fraction of a plant's rows it holds out.
    pub held_out_fraction: f64,
    /// Fraction of a plant's remaining rows used for validation.
    pub validation_fraction: f64,
    /// Split seed.
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            plants: 8,
            kind: SplitKind::Type,
            major_share: 0.85,
            test_fraction: 0.2,
            held_out_fraction: 0.2,
            validation_fraction: 0.15,
            seed: 0,
        }
    }
}

/// One plant's rows (indices into the data set).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlantRows {
    /// Training rows.
    pub train: Vec<usize>,
    /// Validation rows (thresholds, hyperparameters).
    pub validation: Vec<usize>,
    /// Held-out rows from the plant's own distribution.
    pub held_out: Vec<usize>,
    /// Failure modes this plant owns under the mode splits (empty for [`SplitKind::Type`]).
    pub owned_modes: Vec<Mode>,
}

impl PlantRows {
    /// All rows of the plant.
    pub fn all(&self) -> impl Iterator<Item = usize> + '_ {
        self.train
            .iter()
            .chain(&self.validation)
            .chain(&self.held_out)
            .copied()
    }
}

/// A split of a data set.
#[derive(Debug, Clone, Serialize)]
pub struct Split {
    /// Global test rows.
    pub test: Vec<usize>,
    /// Plants, in order.
    pub plants: Vec<PlantRows>,
}

/// Why a split was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SplitError {
    /// `plants` is 0 or over 1000.
    #[error("plants must be 1..=1000, got {0}")]
    Plants(usize),
    /// A fraction is outside [0, 1).
    #[error("{0} must be in [0, 1)")]
    Fraction(&'static str),
}

/// Stratum of a row: its primary mode (HDF > PWF > OSF > TWF), else other failure, else none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stratum {
    /// The primary rule-following mode.
    Primary(Mode),
    /// A failure with no rule-following mode (random or unexplained).
    OtherFailure,
    /// No failure.
    None,
}

/// The primary failure mode of a row.
pub fn primary_mode(row: &Row) -> Option<Mode> {
    Mode::PRIORITY.into_iter().find(|m| row.has(*m))
}

/// The stratum of a row.
pub fn stratum(row: &Row) -> Stratum {
    match primary_mode(row) {
        Some(m) => Stratum::Primary(m),
        None if row.failure => Stratum::OtherFailure,
        None => Stratum::None,
    }
}

/// Uniform index below `n` (n > 0). The modulo bias (< n / 2^64) is irrelevant for a split.
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

fn shuffle(rng: &mut ChaCha8Rng, v: &mut [usize]) {
    for i in (1..v.len()).rev() {
        v.swap(i, below(rng, i + 1));
    }
}

/// Splits `idx` into (taken, rest) with `fraction` of each stratum taken (rounded).
fn stratified(
    rows: &[Row],
    idx: &[usize],
    fraction: f64,
    rng: &mut ChaCha8Rng,
) -> (Vec<usize>, Vec<usize>) {
    let mut groups: std::collections::BTreeMap<Stratum, Vec<usize>> = Default::default();
    for &i in idx {
        groups.entry(stratum(&rows[i])).or_default().push(i);
    }
    let (mut taken, mut rest) = (Vec::new(), Vec::new());
    for (_, mut g) in groups {
        shuffle(rng, &mut g);
        let k = (fraction * g.len() as f64).round() as usize;
        taken.extend_from_slice(&g[..k]);
        rest.extend_from_slice(&g[k..]);
    }
    taken.sort_unstable();
    rest.sort_unstable();
    (taken, rest)
}

/// Plants owning each rule-following mode (index into [`Mode::PRIORITY`]).
fn mode_owners(plants: usize) -> [Vec<usize>; 4] {
    let mut owners: [Vec<usize>; 4] = Default::default();
    for (k, o) in owners.iter_mut().enumerate() {
        if plants >= 4 {
            o.extend((0..plants).filter(|p| p % 4 == k));
        } else {
            o.push(k % plants);
        }
    }
    owners
}

/// Plants making each product type: proportional to the type's rows (largest remainder, at least
/// one each) when there are at least 3 plants, else type `t` goes to plant `t mod plants`.
fn type_homes(rows: &[Row], idx: &[usize], plants: usize) -> [Vec<usize>; 3] {
    let mut homes: [Vec<usize>; 3] = Default::default();
    if plants < 3 {
        for t in ProductType::ALL {
            homes[t.index()].push(t.index() % plants);
        }
        return homes;
    }
    let mut count = [0usize; 3];
    for &i in idx {
        count[rows[i].product_type.index()] += 1;
    }
    let total = count.iter().sum::<usize>().max(1) as f64;
    let spare = plants - 3;
    let quota: Vec<f64> = count
        .iter()
        .map(|&c| spare as f64 * c as f64 / total)
        .collect();
    let mut n: Vec<usize> = quota.iter().map(|q| 1 + q.floor() as usize).collect();
    let mut order: Vec<usize> = (0..3).collect();
    order.sort_by(|&a, &b| (quota[b] - quota[b].floor()).total_cmp(&(quota[a] - quota[a].floor())));
    for &t in order.iter().take(plants - n.iter().sum::<usize>()) {
        n[t] += 1;
    }
    let mut next = 0;
    for t in 0..3 {
        homes[t].extend(next..next + n[t]);
        next += n[t];
    }
    homes
}

/// Splits `rows` as configured. Deterministic in `config.seed`.
pub fn split(rows: &[Row], config: &SplitConfig) -> Result<Split, SplitError> {
    if config.plants == 0 || config.plants > 1000 {
        return Err(SplitError::Plants(config.plants));
    }
    for (name, f) in [
        ("test_fraction", config.test_fraction),
        ("held_out_fraction", config.held_out_fraction),
        ("validation_fraction", config.validation_fraction),
    ] {
        if !(0.0..1.0).contains(&f) {
            return Err(SplitError::Fraction(name));
        }
    }
    if !(0.0..=1.0).contains(&config.major_share) {
        return Err(SplitError::Fraction("major_share"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let all: Vec<usize> = (0..rows.len()).collect();
    let (test, pool) = stratified(rows, &all, config.test_fraction, &mut rng);
    let n = config.plants;
    let mut plants = vec![PlantRows::default(); n];
    let mut dealt: Vec<Vec<usize>> = vec![Vec::new(); n];
    let owners = mode_owners(n);
    let homes = type_homes(rows, &pool, n);
    if config.kind != SplitKind::Type {
        for (k, m) in Mode::PRIORITY.iter().enumerate() {
            for &p in &owners[k] {
                plants[p].owned_modes.push(*m);
            }
        }
    }
    for &i in &pool {
        let row = &rows[i];
        let p = match (config.kind, primary_mode(row)) {
            (SplitKind::Type, _) => {
                let h = &homes[row.product_type.index()];
                h[below(&mut rng, h.len())]
            }
            (_, None) => below(&mut rng, n),
            (SplitKind::ModeExclusive, Some(m)) => {
                let o = &owners[mode_index(m)];
                o[below(&mut rng, o.len())]
            }
            (SplitKind::Mode, Some(m)) => {
                let o = &owners[mode_index(m)];
                let others: Vec<usize> = (0..n).filter(|p| !o.contains(p)).collect();
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                if u < config.major_share || others.is_empty() {
                    o[below(&mut rng, o.len())]
                } else {
                    others[below(&mut rng, others.len())]
                }
            }
        };
        dealt[p].push(i);
    }
    for (plant, rows_p) in plants.iter_mut().zip(dealt) {
        let (held_out, rest) = stratified(rows, &rows_p, config.held_out_fraction, &mut rng);
        let (validation, train) = stratified(rows, &rest, config.validation_fraction, &mut rng);
        plant.held_out = held_out;
        plant.validation = validation;
        plant.train = train;
    }
    Ok(Split { test, plants })
}

fn mode_index(m: Mode) -> usize {
    Mode::PRIORITY.iter().position(|x| *x == m).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ai4i() -> Vec<Row> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ai4i2020.csv");
        crate::data::read_csv(&path).unwrap()
    }

    fn cfg(kind: SplitKind, plants: usize, seed: u64) -> SplitConfig {
        SplitConfig {
            kind,
            plants,
            seed,
            ..SplitConfig::default()
        }
    }

    #[test]
    fn every_row_in_exactly_one_place_and_no_test_row_in_a_plant() {
        let rows = ai4i();
        for kind in [SplitKind::Type, SplitKind::Mode, SplitKind::ModeExclusive] {
            let s = split(&rows, &cfg(kind, 8, 3)).unwrap();
            let mut seen = vec![0u8; rows.len()];
            for &i in s.test.iter().chain(
                s.plants
                    .iter()
                    .flat_map(|p| p.all().collect::<Vec<_>>())
                    .collect::<Vec<_>>()
                    .iter(),
            ) {
                seen[i] += 1;
            }
            assert!(seen.iter().all(|&c| c == 1), "{kind:?}");
            let test: std::collections::HashSet<usize> = s.test.iter().copied().collect();
            assert!(s.plants.iter().all(|p| p.all().all(|i| !test.contains(&i))));
        }
    }

    #[test]
    fn test_set_is_stratified_by_primary_mode() {
        let rows = ai4i();
        let s = split(&rows, &cfg(SplitKind::Mode, 8, 11)).unwrap();
        let count =
            |idx: &[usize], st: Stratum| idx.iter().filter(|&&i| stratum(&rows[i]) == st).count();
        let all: Vec<usize> = (0..rows.len()).collect();
        for st in [
            Stratum::Primary(Mode::Hdf),
            Stratum::Primary(Mode::Pwf),
            Stratum::Primary(Mode::Osf),
            Stratum::Primary(Mode::Twf),
            Stratum::OtherFailure,
            Stratum::None,
        ] {
            let want = (0.2 * count(&all, st) as f64).round() as usize;
            assert_eq!(count(&s.test, st), want, "{st:?}");
        }
    }

    #[test]
    fn mode_exclusive_gives_each_modes_failures_to_its_own_plants_only() {
        let rows = ai4i();
        for plants in [8, 5, 3, 1] {
            let s = split(&rows, &cfg(SplitKind::ModeExclusive, plants, 5)).unwrap();
            for (p, plant) in s.plants.iter().enumerate() {
                for i in plant.all() {
                    if let Some(m) = primary_mode(&rows[i]) {
                        assert!(plant.owned_modes.contains(&m), "plant {p} got {m:?}");
                    }
                }
            }
            // Every owned mode actually arrives at its plants (8 plants: two plants per mode).
            if plants == 8 {
                for plant in &s.plants {
                    let m = plant.owned_modes[0];
                    assert!(
                        plant
                            .all()
                            .filter(|&i| primary_mode(&rows[i]) == Some(m))
                            .count()
                            >= 10
                    );
                }
            }
        }
    }

    #[test]
    fn mode_split_gives_the_major_share_to_owners() {
        let rows = ai4i();
        let s = split(&rows, &cfg(SplitKind::Mode, 8, 9)).unwrap();
        let (mut own, mut total) = (0, 0);
        for plant in &s.plants {
            for i in plant.all() {
                if let Some(m) = primary_mode(&rows[i]) {
                    total += 1;
                    own += usize::from(plant.owned_modes.contains(&m));
                }
            }
        }
        let share = own as f64 / total as f64;
        assert!((0.78..0.92).contains(&share), "{share}");
    }

    #[test]
    fn type_split_keeps_each_type_at_its_home_plants_and_is_seeded() {
        let rows = ai4i();
        let s = split(&rows, &cfg(SplitKind::Type, 8, 1)).unwrap();
        for plant in &s.plants {
            let types: std::collections::HashSet<_> =
                plant.all().map(|i| rows[i].product_type).collect();
            assert_eq!(types.len(), 1);
            assert!(!plant.validation.is_empty() && !plant.held_out.is_empty());
        }
        let again = split(&rows, &cfg(SplitKind::Type, 8, 1)).unwrap();
        assert_eq!(s.test, again.test);
        let other = split(&rows, &cfg(SplitKind::Type, 8, 2)).unwrap();
        assert_ne!(s.test, other.test);
        assert_eq!(
            split(&rows, &cfg(SplitKind::Type, 0, 1)).unwrap_err(),
            SplitError::Plants(0)
        );
    }
}
