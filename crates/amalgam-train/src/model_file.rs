//! A trained built-in model on disk: its spec, decision threshold and flat parameters (JSON).
//!
//! A model file is untrusted when read: bounded size, unknown fields refused, the format tag,
//! the spec's ranges, the parameter count and every value checked before a model is built.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{Model, ModelSpec};

/// The format tag.
pub const FORMAT: &str = "amalgam-model/1";
/// Largest accepted model file.
pub const MAX_MODEL_BYTES: u64 = 256 * 1024 * 1024;

/// The file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Architecture and features.
    pub spec: ModelSpec,
    /// Decision threshold on the failure probability, chosen on validation rows.
    pub threshold: f32,
    /// Parameters in flat order.
    pub params: Vec<f32>,
}

impl ModelFile {
    /// Captures a model.
    pub fn new(spec: &ModelSpec, model: &Model, threshold: f32) -> ModelFile {
        ModelFile {
            format: FORMAT.into(),
            spec: spec.clone(),
            threshold,
            params: model.flat(),
        }
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Reads and checks a file, and builds the model.
    pub fn load(path: &Path) -> Result<(ModelFile, Model), String> {
        let len = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .len();
        if len > MAX_MODEL_BYTES {
            return Err(format!("model file is {len} bytes, over {MAX_MODEL_BYTES}"));
        }
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&bytes)
    }

    /// Checks file bytes and builds the model.
    pub fn parse(bytes: &[u8]) -> Result<(ModelFile, Model), String> {
        let f: ModelFile = serde_json::from_slice(bytes).map_err(|e| format!("model file: {e}"))?;
        if f.format != FORMAT {
            return Err(format!(
                "model file format {:?}, expected {FORMAT:?}",
                f.format
            ));
        }
        if !(f.threshold.is_finite() && (0.0..=1.0).contains(&f.threshold)) {
            return Err(format!("threshold {} outside [0, 1]", f.threshold));
        }
        let mut m = Model::new(&f.spec).map_err(|e| e.to_string())?;
        m.set_from_flat(&f.params).map_err(|e| e.to_string())?;
        Ok((f, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureSet;
    use crate::model::Arch;

    #[test]
    fn round_trips_and_refuses_tampered_files() {
        let spec = ModelSpec {
            arch: Arch::Logistic,
            features: FeatureSet::default(),
        };
        let m = Model::new(&spec).unwrap();
        let f = ModelFile::new(&spec, &m, 0.3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        f.save(&path).unwrap();
        let (g, m2) = ModelFile::load(&path).unwrap();
        assert_eq!((g.threshold, m2.flat()), (0.3, m.flat()));
        let text = serde_json::to_string(&f).unwrap();
        let short = text.replace("\"params\":[", "\"params\":[1.0,");
        assert!(
            ModelFile::parse(short.as_bytes())
                .unwrap_err()
                .contains("flat vector has 13 values")
        );
        assert!(ModelFile::parse(text.replace(FORMAT, "x/2").as_bytes()).is_err());
        assert!(
            ModelFile::parse(
                text.replace("\"threshold\":0.3", "\"threshold\":7.0")
                    .as_bytes()
            )
            .is_err()
        );
        assert!(ModelFile::parse(text.replacen('{', "{\"extra\":1,", 1).as_bytes()).is_err());
    }
}
