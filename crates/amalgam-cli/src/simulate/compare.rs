//! After the campaign: the federated model against the same model fine-tuned at each plant,
//! each plant's local-only model and the centralized model on the pooled training rows, all
//! with `amalgam_train::experiment`'s code and scored once on the same global test rows (the
//! threshold chosen on validation rows), and `report.json`.

use std::path::PathBuf;

use amalgam_consortium::DpBudget;
use amalgam_report::{
    Campaign, EpsilonRow, ModeFigure, ModelFigures, ModelKind, PrivacySetting, ProtocolFigures,
    SCHEMA, SimulationReport, TimeShare,
};
use amalgam_train::experiment::{
    Prepared, Scored, centralized, fine_tuned, local_only, score_federated,
};
use amalgam_train::model::Model;

use super::Options;
use super::campaign::{Outcome, Stats};
use super::setup::{Paths, Setup};
use crate::Failure;

/// The TorchScript export of the federated model, next to `report.json`.
const EXPORT: &str = "global_model.pt";

fn figures(kind: ModelKind, plant: Option<u16>, s: &Scored) -> ModelFigures {
    figures_of(kind, plant, "global", &s.test)
}

/// `test_set` is `global` (the consortium's test rows) or `plant` (the plant's held-out rows).
fn figures_of(
    kind: ModelKind,
    plant: Option<u16>,
    test_set: &str,
    t: &amalgam_train::metrics::Report,
) -> ModelFigures {
    ModelFigures {
        kind,
        plant,
        test_set: test_set.into(),
        rows: t.rows,
        failures: t.failures,
        threshold: f64::from(t.threshold),
        f1: t.f1,
        auprc: t.auprc,
        auroc: t.auroc,
        precision: t.precision,
        recall: t.recall,
        modes: t
            .modes
            .iter()
            .map(|m| ModeFigure {
                mode: m.mode.to_owned(),
                rows: m.rows,
                recall: m.recall,
                auroc: m.auroc,
            })
            .collect(),
    }
}

fn mean(v: &[&ModelFigures], f: impl Fn(&ModelFigures) -> f64) -> f64 {
    v.iter().map(|m| f(m)).sum::<f64>() / v.len().max(1) as f64
}

/// Plant `i`'s ε, recomputed by the offline audit (`amalgam ledger verify`'s) of its ledger
/// file under its identity key and checked against the anchor its last `stats` line printed:
/// the report's ε is the verified ledger's, not the site's word. `None`: ∞, no privacy.
fn verified_epsilon(
    paths: &Paths,
    s: &Setup,
    i: usize,
    st: &Stats,
) -> Result<Option<f64>, Failure> {
    use amalgam_dp::ledger::audit::{Anchor, audit_published};
    let file = paths
        .state(i)
        .join("agent")
        .join(amalgam_dp::ledger::ledger_file_name(
            amalgam_dp::ledger::PrivacyUnit::SiteUpdatePerRound,
        ));
    let bad =
        |why: String| Failure::failed(format!("plant {i}'s ledger {}: {why}", file.display()));
    let bytes = amalgam_dp::ledger::store::read_file(&file).map_err(|e| bad(e.to_string()))?;
    let mut head = [0u8; 32];
    hex::decode_to_slice(&st.head, &mut head).map_err(|_| bad("head is not hex".into()))?;
    let anchor = Anchor {
        entries: usize::try_from(st.entries).unwrap_or(usize::MAX),
        head,
    };
    let key = s.site_keys[i].verifying_key();
    let audit = audit_published(&bytes, &key, &[anchor], &[]).map_err(|e| bad(e.to_string()))?;
    if !audit.is_clean() {
        return Err(bad(format!(
            "{} finding(s): {:?}",
            audit.findings.len(),
            audit.findings
        )));
    }
    if audit.entries as u64 != st.entries || audit.head != st.head {
        return Err(bad("its head is not the one the site printed".into()));
    }
    Ok(audit
        .epsilon_total
        .is_finite()
        .then_some(audit.epsilon_total))
}

/// Trains and scores the comparison models, writes `report.json` and returns its path.
pub fn report(
    o: &Options,
    paths: &Paths,
    s: &Setup,
    c: Outcome,
    wall: f64,
) -> Result<PathBuf, Failure> {
    let err = |e: amalgam_train::model::ModelError| Failure::failed(e.to_string());
    eprintln!(
        "amalgam: scoring the federated model; training the fine-tuned, local-only and \
         centralized models for comparison"
    );
    let p = Prepared::new(&s.rows, &s.split, &o.recipe);
    let mut m = Model::new(&s.builtin.spec).map_err(err)?;
    let (best, best_round) = &c.best;
    let federated = score_federated(&p, &mut m, best, *best_round).map_err(err)?;
    let central = centralized(&p, &mut m, &s.initial, &o.recipe, o.seed).map_err(err)?;
    let mut models = vec![figures(ModelKind::Federated, None, &federated)];
    // Each plant's held-out rows are a second test set: every model a plant could use is
    // scored there once, at the threshold chosen on validation rows.
    let mut held_out = Vec::new();
    for k in 0..p.plants() {
        let plant = u16::try_from(k).ok();
        let ft = fine_tuned(&p, &mut m, best, k, &o.recipe, o.seed).map_err(err)?;
        models.push(figures(ModelKind::FineTuned, plant, &ft));
        let lo = local_only(&p, &mut m, &s.initial, k, &o.recipe, o.seed).map_err(err)?;
        models.push(figures(ModelKind::LocalOnly, plant, &lo));
        for (kind, scored) in [
            (ModelKind::Federated, &federated),
            (ModelKind::FineTuned, &ft),
            (ModelKind::LocalOnly, &lo),
            (ModelKind::Centralized, &central),
        ] {
            let r = p.on_held_out(&mut m, scored, k).map_err(err)?;
            held_out.push(figures_of(kind, plant, "plant", &r));
        }
    }
    models.push(figures(ModelKind::Centralized, None, &central));
    models.extend(held_out);
    for kind in [
        ModelKind::Federated,
        ModelKind::FineTuned,
        ModelKind::LocalOnly,
        ModelKind::Centralized,
    ] {
        let v: Vec<&ModelFigures> = models
            .iter()
            .filter(|f| f.kind == kind && f.test_set == "global")
            .collect();
        eprintln!(
            "{kind:?}{}: test F1 {:.3}, AUPRC {:.3}",
            if v.len() > 1 { " (mean of plants)" } else { "" },
            mean(&v, |f| f.f1),
            mean(&v, |f| f.auprc)
        );
    }

    let owned: Vec<Vec<String>> = s
        .split
        .plants
        .iter()
        .map(|pl| {
            pl.owned_modes
                .iter()
                .map(|m| m.name().to_string())
                .collect()
        })
        .collect();
    let unseen_modes = amalgam_report::unseen::rows(&owned, &models);
    if !unseen_modes.is_empty() {
        let n = unseen_modes.len() as f64;
        let m = |f: fn(&amalgam_report::unseen::UnseenModes) -> f64| {
            unseen_modes.iter().map(f).sum::<f64>() / n
        };
        eprintln!(
            "Modes a plant never saw ({} plants): recall federated {:.3}, fine-tuned {:.3}, \
             local-only {:.3}, centralized {:.3}",
            unseen_modes.len(),
            m(|u| u.federated),
            m(|u| u.fine_tuned),
            m(|u| u.local_only),
            m(|u| u.centralized)
        );
    }

    let manifest = &s.manifest;
    let dp = manifest.dp_policy();
    let (privacy, cap, delta) = match dp.budget {
        DpBudget::None => (PrivacySetting::None, None, None),
        DpBudget::Capped { epsilon_cap, delta } => (
            PrivacySetting::SiteLevel {
                clip: dp.clip.get(),
                sigma: dp.sigma.get(),
                delta: delta.get(),
                epsilon_cap: epsilon_cap.get(),
                accountant: "opendp zCDP (distributed discrete Gaussian), amalgam-dp ledger".into(),
            },
            Some(epsilon_cap.get()),
            Some(delta.get()),
        ),
    };
    let mut epsilon = Vec::new();
    for (i, st) in c.last.iter().enumerate() {
        let Some(st) = st else { continue };
        let spent = verified_epsilon(paths, s, i, st)?;
        epsilon.push(EpsilonRow {
            plant: u16::try_from(i).unwrap_or(u16::MAX),
            unit: "site-update-per-round".into(),
            spent,
            cap,
            delta,
            entries: st.entries,
            ledger_head: st.head.clone(),
        });
    }
    let record_level = match &o.record {
        Some(r) => {
            let declared: Vec<usize> = s.split.plants.iter().map(|p| p.train.len()).collect();
            super::record::rows(r, paths, s, &declared)?
        }
        None => Vec::new(),
    };
    // Each site measures its own stages (`site run`'s stats line); what is left of its
    // round is HTTP and waiting for the other parties.
    let time = c.time;
    let time_share = (time.total > 0.0).then(|| {
        let share = |s: f64| (s / time.total).clamp(0.0, 1.0);
        let (training, dp_encoding) = (share(time.train), share(time.encode));
        let (masking, persistence) = (share(time.mask), share(time.persist));
        TimeShare {
            training,
            dp_encoding,
            masking,
            persistence,
            http: (1.0 - training - dp_encoding - masking - persistence).max(0.0),
        }
    });
    let (t, colluders, f) = o.protocol;
    let report = SimulationReport {
        schema: SCHEMA.into(),
        campaign: Campaign {
            config_digest: o.config_digest.clone(),
            consortium_digest: hex::encode(manifest.consortium_digest()),
            model: format!("builtin:{}", s.builtin.name),
            parameters: s.initial.len() as u64,
            plants: o.plants,
            split: o.split_name.into(),
            split_seed: o.split_seed,
            init_seed: o.seed,
            rounds: o.rounds,
            dropout_rate: o.dropout_rate,
            bits: dp.bits.get(),
            weights: super::weights::describe(o.noised.as_ref(), o.sigma.is_some()),
            single_operator: true,
            wall_seconds: wall,
        },
        privacy,
        protocol: ProtocolFigures {
            threshold: t,
            colluders,
            dropouts: f,
            min_cohort: t,
        },
        rounds: c.rounds,
        models,
        epsilon,
        time_share,
        curve: o.curve.clone(),
        exports: vec![EXPORT.into()],
        record_level,
        record_curve: o.record_curve.clone(),
        unseen_modes,
    };
    std::fs::create_dir_all(&o.out)
        .map_err(|e| Failure::failed(format!("{}: {e}", o.out.display())))?;
    // The federated model as TorchScript: float32 [B, F] in the documented feature order in,
    // logits [B, 1] out (its threshold is the federated row's in the report).
    let export = o.out.join(EXPORT);
    amalgam_train::export::export_torchscript(&s.builtin.spec, best, &export)
        .map_err(|e| Failure::failed(format!("{}: {e}", export.display())))?;
    let path = o.out.join("report.json");
    amalgam_store::atomic_write(&path, report.to_json().as_bytes(), 0o644)
        .map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
    Ok(path)
}
