//! A checkpoint must hold exactly the tensors its model card implies: crafted safetensors files
//! with unexpected, missing, reshaped or retyped tensors, trailing bytes, truncation, a lying
//! header or a pickle instead of safetensors are rejected with an error naming the file and the
//! tensor, never a panic.

use std::collections::HashMap;
use std::path::Path;

use amri_diffusion::checkpoint::{
    load_checkpoint, safetensors_index, Weights, CARD_FILE, EMA_FILE, OPTIM_FILE, WEIGHTS_FILE,
};
use amri_diffusion::precond::DenoiserConfig;
use amri_diffusion::train::{Objective, TrainConfig, Trainer};
use amri_diffusion::{DiffusionError, Result};
use candle_core::{DType, Device, Tensor};

fn io(path: &Path) -> impl Fn(std::io::Error) -> DiffusionError + '_ {
    move |source| DiffusionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn small_cfg() -> Result<DenoiserConfig> {
    let mut cfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
    cfg.unet.base_channels = 16;
    cfg.unet.channel_mult = vec![1, 2];
    cfg.unet.attention_levels = vec![1];
    cfg.unet.groups = 4;
    cfg.unet.attention_head_channels = 16;
    Ok(cfg)
}

/// A fresh, valid checkpoint folder copied to `dir`.
fn checkpoint(dir: &Path) -> Result<()> {
    let t = Trainer::new(&small_cfg()?, &TrainConfig::default(), &Device::Cpu)?;
    let card = t.card(Objective::AmbientPixel, Some("tiny"), None)?;
    t.save_checkpoint(dir, &card)
}

fn copy_checkpoint(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for f in [WEIGHTS_FILE, EMA_FILE, OPTIM_FILE, CARD_FILE] {
        std::fs::copy(from.join(f), to.join(f)).map_err(io(to))?;
    }
    Ok(())
}

fn edit_tensors(
    path: &Path,
    f: impl FnOnce(&mut HashMap<String, Tensor>) -> Result<()>,
) -> Result<()> {
    let mut ts = candle_core::safetensors::load(path, &Device::Cpu)?;
    f(&mut ts)?;
    candle_core::safetensors::save(&ts, path)?;
    Ok(())
}

/// The error message of loading `dir` with `which` weights (must fail).
fn load_err(dir: &Path, which: Weights) -> String {
    match load_checkpoint(dir, which, &Device::Cpu) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn resume_err(dir: &Path) -> String {
    match Trainer::resume(dir, &Device::Cpu) {
        Ok(_) => panic!("{} resumed although it is broken", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn mismatched_tensors_are_rejected_naming_file_and_tensor() -> Result<()> {
    let tmp = tempfile::tempdir().map_err(io(Path::new("tempdir")))?;
    let good = tmp.path().join("good");
    checkpoint(&good)?;
    // the untouched checkpoint loads and resumes, and its header indexes every variable
    load_checkpoint(&good, Weights::Ema, &Device::Cpu)?;
    Trainer::resume(&good, &Device::Cpu)?;
    let index = safetensors_index(&good.join(WEIGHTS_FILE))?;
    assert!(index.contains_key("unet.conv_in.weight"));
    assert_eq!(index["unet.conv_in.weight"].shape, vec![16, 3, 3, 3]);

    // an unexpected tensor
    let d = tmp.path().join("extra");
    copy_checkpoint(&good, &d)?;
    edit_tensors(&d.join(WEIGHTS_FILE), |ts| {
        ts.insert(
            "unet.backdoor.weight".into(),
            Tensor::zeros(4, DType::F32, &Device::Cpu)?,
        );
        Ok(())
    })?;
    let e = load_err(&d, Weights::Raw);
    assert!(
        e.contains(WEIGHTS_FILE) && e.contains("unexpected tensor unet.backdoor.weight"),
        "{e}"
    );
    assert!(resume_err(&d).contains("unet.backdoor.weight"));

    // a missing tensor
    let d = tmp.path().join("missing");
    copy_checkpoint(&good, &d)?;
    edit_tensors(&d.join(EMA_FILE), |ts| {
        ts.remove("unet.out_conv.weight");
        Ok(())
    })?;
    let e = load_err(&d, Weights::Ema);
    assert!(
        e.contains(EMA_FILE) && e.contains("lacks tensor unet.out_conv.weight"),
        "{e}"
    );
    assert!(resume_err(&d).contains("lacks tensor unet.out_conv.weight"));

    // another dtype with the right shape
    let d = tmp.path().join("dtype");
    copy_checkpoint(&good, &d)?;
    edit_tensors(&d.join(WEIGHTS_FILE), |ts| {
        let t = ts["unet.map0.bias"].to_dtype(DType::F64)?;
        ts.insert("unet.map0.bias".into(), t);
        Ok(())
    })?;
    let e = load_err(&d, Weights::Raw);
    assert!(e.contains("tensor unet.map0.bias is F64"), "{e}");

    // a card whose configuration implies other shapes than the weights have
    let d = tmp.path().join("card");
    copy_checkpoint(&good, &d)?;
    let card_path = d.join(CARD_FILE);
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&card_path).map_err(io(&card_path))?)?;
    card["denoiser"]["unet"]["base_channels"] = 8.into();
    card["denoiser"]["unet"]["attention_head_channels"] = 8.into();
    std::fs::write(&card_path, serde_json::to_vec(&card)?).map_err(io(&card_path))?;
    let e = load_err(&d, Weights::Ema);
    assert!(
        e.contains(EMA_FILE)
            && e.contains("tensor unet.conv_in.bias is F32 [16]")
            && e.contains("needs F32 [8]"),
        "{e}"
    );

    // optimiser state with a stray tensor: resume refuses, naming optim.safetensors
    let d = tmp.path().join("optim");
    copy_checkpoint(&good, &d)?;
    edit_tensors(&d.join(OPTIM_FILE), |ts| {
        ts.insert(
            "m.unet.nothing".into(),
            Tensor::zeros(2, DType::F32, &Device::Cpu)?,
        );
        Ok(())
    })?;
    let e = resume_err(&d);
    assert!(
        e.contains(OPTIM_FILE) && e.contains("m.unet.nothing"),
        "{e}"
    );
    Ok(())
}

#[test]
fn files_larger_or_smaller_than_declared_or_not_safetensors_are_rejected() -> Result<()> {
    let tmp = tempfile::tempdir().map_err(io(Path::new("tempdir")))?;
    let good = tmp.path().join("good");
    checkpoint(&good)?;
    let bytes = std::fs::read(good.join(WEIGHTS_FILE)).map_err(io(&good))?;

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0u8; 1000]);
    cases.push(("trailing", longer, "1000 bytes beyond its declared tensors"));
    cases.push(("truncated", bytes[..bytes.len() - 10].to_vec(), "truncated"));
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("huge-header", huge, "header length"));
    // a PyTorch pickle (protocol 4 opcodes) is not read, let alone executed
    let pickle = b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94.".to_vec();
    cases.push(("pickle", pickle, "not a safetensors file"));
    cases.push(("empty", Vec::new(), "too short"));
    // a header that declares a tensor bigger than its data offsets
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])) as usize;
    let header = String::from_utf8_lossy(&bytes[8..8 + n]).into_owned();
    let lying = header.replacen("[16,3,3,3]", "[16,3,3,4]", 1);
    assert_ne!(lying, header, "header layout changed: {header:.200}");
    let mut lie = bytes[..8].to_vec();
    lie.extend_from_slice(lying.as_bytes());
    lie.extend_from_slice(&bytes[8 + n..]);
    cases.push(("lying-shape", lie, "unet.conv_in.weight: data_offsets"));

    for (name, content, want) in cases {
        let d = tmp.path().join(name);
        copy_checkpoint(&good, &d)?;
        std::fs::write(d.join(WEIGHTS_FILE), &content).map_err(io(&d))?;
        let e = load_err(&d, Weights::Raw);
        assert!(e.contains(WEIGHTS_FILE) && e.contains(want), "{name}: {e}");
        assert!(
            safetensors_index(&d.join(WEIGHTS_FILE)).is_err(),
            "{name}: index accepted"
        );
    }
    Ok(())
}
