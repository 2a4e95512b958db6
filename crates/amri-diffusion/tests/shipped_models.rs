//! Every model shipped under `models/` loads: its card parses with a typed training record, the
//! card survives a write and read unchanged, and the prior loads for inference.

use std::path::PathBuf;

use amri_diffusion::checkpoint::{read_card, ModelCard, CARD_FILE};
use amri_diffusion::sample::Prior;
use amri_diffusion::{DiffusionError, Result};
use candle_core::Device;

fn shipped() -> Result<Vec<PathBuf>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let io = |source| DiffusionError::Io {
        path: root.clone(),
        source,
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(CARD_FILE).is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

#[test]
fn every_shipped_card_has_a_typed_training_record_and_loads() -> Result<()> {
    let dirs = shipped()?;
    assert!(!dirs.is_empty(), "no model under models/");
    for dir in dirs {
        let card = read_card(&dir)?;
        let record = card
            .record
            .as_ref()
            .ok_or_else(|| DiffusionError::Config(format!("{}: no record", dir.display())))?;
        assert!(!record.protocol.is_empty() && record.batch > 0 && record.slices > 0);
        // written again, the record has the bytes it was shipped with (the rest of a shipped
        // card may lack fields added since, e.g. train.consistency_weight)
        let written = serde_json::to_vec_pretty(&card)?;
        let path = dir.join(CARD_FILE);
        let shipped = std::fs::read(&path).map_err(|source| DiffusionError::Io { path, source })?;
        let record_bytes = |bytes: &[u8]| -> Result<Vec<u8>> {
            let v: serde_json::Value = serde_json::from_slice(bytes)?;
            Ok(serde_json::to_vec_pretty(&v["corruption"])?)
        };
        assert!(
            record_bytes(&written)? == record_bytes(&shipped)?,
            "{}: the training record's bytes changed",
            dir.display()
        );
        let again: ModelCard = serde_json::from_slice(&written)?;
        assert_eq!(again, card, "{}", dir.display());
        let prior = Prior::load(&dir, &Device::Cpu)?;
        assert_eq!(prior.acquisition(), Some(&record.acquisition));
    }
    Ok(())
}

#[test]
fn a_card_without_the_measured_normalisation_is_refused_for_inference() -> Result<()> {
    let src = shipped()?
        .into_iter()
        .next()
        .ok_or_else(|| DiffusionError::Config("no model under models/".into()))?;
    let tmp = tempfile::tempdir().map_err(|source| DiffusionError::Io {
        path: "tempdir".into(),
        source,
    })?;
    let io = |path: PathBuf| move |source| DiffusionError::Io { path, source };
    for f in [CARD_FILE, "ema.safetensors"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).map_err(io(src.join(f)))?;
    }
    Prior::load(tmp.path(), &Device::Cpu)?;
    // a card from before the measured rule: no `normalisation` key means the clean rule
    let card_path = tmp.path().join(CARD_FILE);
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&card_path).map_err(io(card_path.clone()))?)?;
    if let Some(m) = card.as_object_mut() {
        m.remove("normalisation");
    }
    std::fs::write(&card_path, serde_json::to_vec(&card)?).map_err(io(card_path.clone()))?;
    let e = Prior::load(tmp.path(), &Device::Cpu)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("clean images") && e.contains("retrain"), "{e}");
    Ok(())
}
