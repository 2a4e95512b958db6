//! Checkpoints: the model card, the checkpoint folder layout, loading and resolving a run's
//! `latest` checkpoint, validation of safetensors files against the card, and the crash-safe
//! writes every checkpoint file goes through.
//!
//! This is all that inference ([`crate::sample`]) needs of a trained model; it does not depend on
//! the trainer ([`crate::train`]), which writes checkpoints through [`save_in_run`] and
//! [`write_file_atomic`].
//!
//! **Layout.** A checkpoint folder holds [`WEIGHTS_FILE`] (raw weights), [`EMA_FILE`],
//! [`OPTIM_FILE`] (optimiser state) and [`CARD_FILE`] (the [`ModelCard`], written last). A run
//! folder holds `ckpt-<step:08>/` folders ([`checkpoint_name`]) and the one-line pointer file
//! [`LATEST_FILE`] naming its newest complete checkpoint. [`save_in_run`] writes the new folder,
//! only then replaces `latest`, then removes older folders but the previous one: a kill at any
//! point leaves `latest` naming a complete checkpoint. [`resolve_checkpoint`] accepts either a
//! run folder (follows `latest`) or a checkpoint folder.
//!
//! **Durability.** Every file is written to a temporary file in its folder, flushed to disk
//! (`fsync`), renamed over its final name, and the folder is synced ([`write_file_atomic`]), so
//! after a crash or power loss a name holds either its old or its new complete contents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use amri_ops::simulate::Acquisition;
use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::data::TrainObjective;
use crate::error::{DiffusionError, Result};
use crate::precond::{denoiser, Denoiser, DenoiserConfig, SigmaSampler};

/// File name of the raw (optimiser) weights inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the EMA weights inside a checkpoint directory.
pub const EMA_FILE: &str = "ema.safetensors";
/// File name of the model card inside a checkpoint directory.
pub const CARD_FILE: &str = "model.json";
/// File name of the optimiser state ([`crate::optim::AdamW::save`]) inside a checkpoint directory.
pub const OPTIM_FILE: &str = "optim.safetensors";
/// Name of the pointer file in a run folder naming its newest complete checkpoint folder.
pub const LATEST_FILE: &str = "latest";

/// Optimisation hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// Steps of linear warm-up from `lr/warmup_steps` to `lr` (0: none).
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// EMA decay per step, in [0, 1) (0.999 is typical; 0 copies the weights).
    pub ema_decay: f64,
    /// Seed of σ, noise and data-order draws.
    pub seed: u64,
    /// Log-normal training noise levels.
    pub sigma: SigmaSampler,
    /// Variables whose name starts with any of these prefixes are frozen (not optimised), e.g.
    /// `["conv_in", "enc."]` for the U-Net encoder. Empty: train everything.
    #[serde(default)]
    pub freeze: Vec<String>,
    /// Loss weight of the samples A measured but Ã hid, relative to those Ã kept (noiseless
    /// ambient objectives; 1: the unweighted loss of Daras et al.). Any value > 0 leaves the
    /// minimiser `E[x0 | Ã x_t]` unchanged — per sample the weight is a function of the input
    /// mask Ã, so it scales each hidden sample's term by a constant — while larger values put
    /// more of the gradient on the hidden samples, the only ones that teach filling in.
    #[serde(default = "unit_weight")]
    pub hidden_weight: f64,
    /// Weight of the consistency loss below the data's noise level for noisy-data
    /// ([`crate::train::Batch::Noisy`]) training (0: off, σ drawn above σ_n only). When > 0, σ is drawn from
    /// the whole log-normal; samples with σ ≤ σ_n get [`crate::loss::consistency_pixel_loss`] /
    /// [`crate::loss::consistency_kspace_loss`] with this weight, the others the Tweedie loss.
    #[serde(default)]
    pub consistency_weight: f64,
    /// Low-rank adapters ([`crate::adapt`]): `Some` trains only adapters on a frozen base, whose
    /// merged weights the checkpoints hold. Absent (not written) for ordinary training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<crate::adapt::LoraConfig>,
}

fn unit_weight() -> f64 {
    1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            warmup_steps: 100,
            weight_decay: 0.0,
            grad_clip: Some(1.0),
            ema_decay: 0.999,
            seed: 0,
            sigma: SigmaSampler::default(),
            freeze: Vec::new(),
            hidden_weight: 1.0,
            consistency_weight: 0.0,
            lora: None,
        }
    }
}

/// Which loss a model was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// [`crate::loss::ambient_pixel_loss`].
    AmbientPixel,
    /// [`crate::loss::ambient_kspace_loss`].
    AmbientKspace,
    /// [`crate::loss::supervised_loss`].
    Supervised,
}

/// How the training intensities were normalised; recorded in every model card so inference can
/// apply the same scale to a user's scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntensityNorm {
    /// Each volume divided by the 99.5th percentile of its *clean* `|x|` (cards written before
    /// the measurement rule; an ambient user cannot reproduce this scale exactly).
    CleanPercentile,
    /// Each volume divided by [`crate::data::measurement_scale`] of its measured data: the
    /// 99.5th percentile of the zero-filled magnitude (RSS over coils of `|Fᴴ(M ⊙ y_c)|` for
    /// k-space, `|y|` on measured pixels for image-domain corruptions).
    MeasuredPercentile,
}

fn legacy_norm() -> IntensityNorm {
    IntensityNorm::CleanPercentile
}

/// Everything needed to rebuild and interpret a checkpoint; stored as `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Card format tag, `"amri-diffusion/1"`.
    pub format: String,
    /// Version of amri-diffusion that wrote the card.
    pub amri_version: String,
    /// U-Net preset name the model started from, if any (`"tiny"`, `"base"`).
    pub preset: Option<String>,
    /// Network and preconditioning (channels: 2 image (real, imag) + mask channels).
    pub denoiser: DenoiserConfig,
    /// Training loss.
    pub objective: Objective,
    /// What the run trained on (`corruption` in `model.json`): `None` for a card written without
    /// a record (an empty object). A record that is present but malformed is an error.
    #[serde(rename = "corruption", with = "record_or_empty")]
    pub record: Option<TrainingRecord>,
    /// Optimisation steps taken.
    pub steps: usize,
    /// Training seed.
    pub seed: u64,
    /// Optimisation hyper-parameters.
    pub train: TrainConfig,
    /// Intensity normalisation of the training data (absent in old cards: the clean rule);
    /// inference ([`crate::sample::Prior::load`]) accepts only the measured rule, the one it
    /// applies to a user's scan.
    #[serde(default = "legacy_norm")]
    pub normalisation: IntensityNorm,
}

/// The training record of a card: what an `amri train` / `amri finetune` run trained on, stored
/// under the card's `corruption` key. Inference draws training masks from its acquisition; a
/// resumed run checks its protocol, batch size and objective against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// Protocol name (a preset name or the `.toml` file's protocol name).
    pub protocol: String,
    /// The protocol's acquisition: the corruption model the training data were measured under.
    pub acquisition: Acquisition,
    /// Slices per mini-batch (part of the data order).
    pub batch: usize,
    /// Training objective (`ambient`, `supervised`, `tweedie` or `clean`).
    pub objective: TrainObjective,
    /// Number of training slices.
    pub slices: usize,
    /// Base checkpoint of a fine-tuned run (`None`: trained from scratch).
    #[serde(default)]
    pub base: Option<String>,
    /// The measured files of a run trained from measured data (`None`: the simulation route,
    /// image volumes under `protocol`); then `acquisition` only describes the data (median
    /// acceleration and calibration fraction) for drawing inference masks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<Vec<MeasuredInput>>,
    /// Per-example augmentation of the training stream (`crate::augment`; absent = off, as
    /// in cards written before it existed).
    #[serde(default, skip_serializing_if = "crate::augment::Augmentation::is_off")]
    pub augment: crate::augment::Augmentation,
    /// Simulation route: the orientations and pixel sizes every volume was viewed in
    /// (`crate::views`; absent: the volumes as stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views: Option<crate::views::Views>,
    /// How a fine-tuned run adapted its base (`None`: trained from scratch, or written before
    /// the record existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<crate::adapt::FinetuneRecord>,
    /// The training matrix sizes `[rows, cols]`, distinct, in the order the run's buckets were
    /// formed (`None` in cards written before it was recorded: read
    /// [`TrainingRecord::training_matrices`], which also falls back to the measured inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrices: Option<Vec<[usize; 2]>>,
}

impl TrainingRecord {
    /// The matrix sizes `[rows, cols]` the run trained at: the recorded `matrices`, else the
    /// distinct matrices of its measured inputs (in input order); empty when neither is known
    /// (a simulation-route card written before matrices were recorded).
    pub fn training_matrices(&self) -> Vec<[usize; 2]> {
        if let Some(m) = &self.matrices {
            return m.clone();
        }
        let mut out: Vec<[usize; 2]> = Vec::new();
        for f in self.measured.iter().flatten() {
            if !out.contains(&f.matrix) {
                out.push(f.matrix);
            }
        }
        out
    }
}

/// One measured training file of a [`TrainingRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredInput {
    /// The file as given on the command line.
    pub file: String,
    /// Slices (scans) it holds.
    pub slices: usize,
    /// Receive coils (1 for single-coil and image-domain data).
    pub coils: usize,
    /// Matrix `[rows, cols]`.
    pub matrix: [usize; 2],
}

/// (De)serialises [`ModelCard::record`]: `None` is written as `{}`; `{}`, `null` read as `None`;
/// anything else must be a whole [`TrainingRecord`], and an error says the record is malformed.
/// A record is written through a JSON value, as cards always were: keys in sorted order and `f32`
/// fields widened to `f64` (`0.0020000000949949026`, not `0.002`), so cards keep their bytes.
mod record_or_empty {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::TrainingRecord;

    pub(super) fn serialize<S: Serializer>(
        record: &Option<TrainingRecord>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match record {
            Some(r) => serde_json::to_value(r)
                .map_err(S::Error::custom)?
                .serialize(s),
            None => serde_json::Map::new().serialize(s),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<TrainingRecord>, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let empty = v.is_null() || v.as_object().is_some_and(|m| m.is_empty());
        if empty {
            return Ok(None);
        }
        serde_json::from_value(v).map(Some).map_err(|e| {
            D::Error::custom(format!(
                "the training record (`corruption`) is malformed: {e}"
            ))
        })
    }
}

/// The variables of `vm` as (name, variable), sorted by name.
pub(crate) fn sorted_vars(vm: &VarMap) -> Vec<(String, Var)> {
    let data = vm.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Which weights of a checkpoint to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// The optimiser's weights (`model.safetensors`).
    Raw,
    /// The EMA weights (`ema.safetensors`), normally used for inference.
    Ema,
}

/// Reads a checkpoint (a checkpoint folder, or a run folder whose `latest` names one): its card
/// and a [`Denoiser`] with the chosen weights on `dev`.
pub fn load_checkpoint(dir: &Path, which: Weights, dev: &Device) -> Result<(ModelCard, Denoiser)> {
    let dir = resolve_checkpoint(dir)?;
    let card = read_card(&dir)?;
    let mut vm = VarMap::new();
    let model = denoiser(
        &card.denoiser,
        VarBuilder::from_varmap(&vm, DType::F32, dev),
    )?;
    let file = dir.join(match which {
        Weights::Raw => WEIGHTS_FILE,
        Weights::Ema => EMA_FILE,
    });
    load_varmap(&mut vm, &file)?;
    Ok((card, model))
}

/// A "file not found" error naming `path`.
pub(crate) fn missing(path: &Path) -> DiffusionError {
    DiffusionError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
    }
}

/// Loads `file` into `vm` after checking it holds exactly `vm`'s variables.
pub(crate) fn load_varmap(vm: &mut VarMap, file: &Path) -> Result<()> {
    if !file.is_file() {
        return Err(missing(file));
    }
    check_tensors(file, &varmap_shapes(vm), "the model its card describes")?;
    Ok(vm.load(file)?)
}

/// Name → shape of every variable of `vm` (all `f32`).
pub(crate) fn varmap_shapes(vm: &VarMap) -> BTreeMap<String, (&'static str, Vec<usize>)> {
    sorted_vars(vm)
        .into_iter()
        .map(|(n, v)| (n, ("F32", v.dims().to_vec())))
        .collect()
}

/// Largest safetensors header accepted (bytes): far above any amri model's, far below memory.
const MAX_HEADER: u64 = 64 << 20;

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// One tensor declared in a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTensor {
    /// Element type as written in the header (`"F32"`, `"F64"`, …).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte range `[begin, end)` inside the data section.
    pub offsets: [u64; 2],
}

fn bad_file(path: &Path, what: String) -> DiffusionError {
    DiffusionError::Config(format!("{}: {what}", path.display()))
}

/// Reads and validates the header of the safetensors file `path` without loading its data:
/// the header length fits the file (and [`MAX_HEADER`]), it is a JSON object of tensors with a
/// known dtype, a shape and data offsets whose length equals `elements × dtype size`, the data
/// regions tile the data section without gaps or overlap, and the file is exactly as long as the
/// header declares (no bytes beyond the declared tensors, none missing). Returns the tensors by
/// name (`__metadata__` is skipped). Only the safetensors format is read: no pickle, no code.
pub fn safetensors_index(path: &Path) -> Result<BTreeMap<String, DeclaredTensor>> {
    use std::io::Read;
    let io = |source| DiffusionError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut n8 = [0u8; 8];
    if len < 8 {
        return Err(bad_file(
            path,
            format!("{len} bytes is too short for a safetensors file"),
        ));
    }
    f.read_exact(&mut n8).map_err(io)?;
    let n = u64::from_le_bytes(n8);
    if n > len - 8 || n > MAX_HEADER {
        return Err(bad_file(
            path,
            format!("not a safetensors file: header length {n} exceeds the file ({len} bytes)"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io)?;
    let json: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
        bad_file(
            path,
            format!("not a safetensors file: header is not JSON ({e})"),
        )
    })?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad_file(path, "safetensors header is not a JSON object".into()))?;
    let mut out = BTreeMap::new();
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| bad_file(path, format!("tensor {name}: {what}"));
        let dtype = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("no dtype"))?;
        let size = dtype_size(dtype).ok_or_else(|| bad(&format!("unknown dtype {dtype}")))?;
        let shape: Vec<usize> = t
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape is not a list of sizes"))?;
        let offs: Vec<u64> = t
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no data_offsets"))?
            .iter()
            .map(|d| d.as_u64())
            .collect::<Option<_>>()
            .ok_or_else(|| bad("data_offsets are not byte offsets"))?;
        let [b, e] = offs[..] else {
            return Err(bad("data_offsets must be [begin, end]"));
        };
        let want = shape
            .iter()
            .try_fold(size, |a, d| a.checked_mul(*d as u64))
            .ok_or_else(|| bad("shape overflows"))?;
        if e < b || e - b != want {
            return Err(bad(&format!(
                "data_offsets [{b}, {e}] hold {} bytes but shape {shape:?} of {dtype} needs {want}",
                e.saturating_sub(b)
            )));
        }
        out.insert(
            name.clone(),
            DeclaredTensor {
                dtype: dtype.to_owned(),
                shape,
                offsets: [b, e],
            },
        );
    }
    let mut regions: Vec<(u64, u64, &str)> = out
        .iter()
        .map(|(n, t)| (t.offsets[0], t.offsets[1], n.as_str()))
        .collect();
    regions.sort_unstable();
    let mut end = 0u64;
    for (b, e, name) in regions {
        if b != end {
            return Err(bad_file(
                path,
                format!("tensor {name}: data starts at byte {b}, expected {end} (gap or overlap)"),
            ));
        }
        end = e;
    }
    let data = len - 8 - n;
    if data > end {
        return Err(bad_file(
            path,
            format!(
                "{} bytes beyond its declared tensors (file {len} bytes, tensors end at {})",
                data - end,
                8 + n + end
            ),
        ));
    }
    if data < end {
        return Err(bad_file(
            path,
            format!("truncated: its tensors need {} more bytes", end - data),
        ));
    }
    Ok(out)
}

/// Checks that the safetensors file `path` holds exactly the tensors `expected` (name → (dtype,
/// shape)) of `what` (e.g. "the model its card describes"): every error names the file and the
/// first tensor that is unexpected, missing, or of another shape or dtype. See
/// [`safetensors_index`] for the file-level checks.
pub fn check_tensors(
    path: &Path,
    expected: &BTreeMap<String, (&str, Vec<usize>)>,
    what: &str,
) -> Result<()> {
    let found = safetensors_index(path)?;
    if let Some(name) = found.keys().find(|n| !expected.contains_key(*n)) {
        return Err(bad_file(
            path,
            format!("unexpected tensor {name}: not part of {what}"),
        ));
    }
    for (name, (dtype, shape)) in expected {
        let t = found
            .get(name)
            .ok_or_else(|| bad_file(path, format!("lacks tensor {name} of {what}")))?;
        if t.shape != *shape || t.dtype != *dtype {
            return Err(bad_file(
                path,
                format!(
                    "tensor {name} is {} {:?}, but {what} needs {dtype} {shape:?}",
                    t.dtype, t.shape
                ),
            ));
        }
    }
    Ok(())
}

/// Reads the model card (`model.json`) of a checkpoint folder.
pub fn read_card(dir: &Path) -> Result<ModelCard> {
    let card_path = dir.join(CARD_FILE);
    let bytes = std::fs::read(&card_path).map_err(|source| DiffusionError::Io {
        path: card_path.clone(),
        source,
    })?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The checkpoint folder `path` designates: the folder named by `path/latest` when that pointer
/// exists, else `path` itself when it holds a `model.json`; [`DiffusionError::Io`] otherwise.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    let pointer = path.join(LATEST_FILE);
    if pointer.is_file() {
        let name = std::fs::read_to_string(&pointer).map_err(|source| DiffusionError::Io {
            path: pointer.clone(),
            source,
        })?;
        let name = name.trim();
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(DiffusionError::Config(format!(
                "{}: not a checkpoint folder name: {name:?}",
                pointer.display()
            )));
        }
        return Ok(path.join(name));
    }
    if path.join(CARD_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    Err(DiffusionError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no checkpoint here (neither a `latest` pointer nor model.json)",
        ),
    })
}

/// Name of the checkpoint folder of step count `steps` inside a run folder.
pub fn checkpoint_name(steps: usize) -> String {
    format!("ckpt-{steps:08}")
}

/// Points the run folder `run` at a new checkpoint of step count `steps`: `write` fills
/// `run/ckpt-<steps>/` (the folder exists when it is called), then `run/latest` is replaced
/// atomically to name it, then older `ckpt-*` folders except the one `latest` named before are
/// removed. Returns the checkpoint folder. Safe against a kill at any point: `latest` always
/// names a complete checkpoint (or does not exist yet).
pub fn save_in_run(
    run: &Path,
    steps: usize,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let name = checkpoint_name(steps);
    let dir = run.join(&name);
    let previous = std::fs::read_to_string(run.join(LATEST_FILE))
        .ok()
        .map(|s| s.trim().to_owned());
    create_dir(&dir)?;
    write(&dir)?;
    write_atomic(&run.join(LATEST_FILE), format!("{name}\n").as_bytes())?;
    if let Ok(entries) = std::fs::read_dir(run) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("ckpt-") && n != name && Some(&n) != previous.as_ref() {
                // Best effort: a stale folder left behind is harmless.
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(dir)
}

/// Creates the folder `dir` and its parents if missing.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| DiffusionError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn tmp_path(p: &Path) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    p.with_file_name(name)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DiffusionError + '_ {
    move |source| DiffusionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the file `path` crash-safely: `fill` writes a temporary file in the same folder (its
/// path is passed, for writers such as candle's that take a path), which is flushed to disk
/// (`fsync`) and renamed over `path`; then the folder is synced so that the rename itself
/// survives a crash. A reader never sees a half-written file under `path`; when `fill` fails the
/// temporary file is removed and any earlier `path` is left as it was.
///
/// amri-io's `atomic` module does the same for the apps' outputs; amri-diffusion keeps its own
/// because amri-io would bring every file-format codec (DICOM with its C++ JPEG-LS build, HDF5,
/// zip) into the inference library, and because candle writes safetensors to a path, not to the
/// `Write` that amri-io's writer hands out.
pub fn write_file_atomic(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = tmp_path(path);
    let written = fill(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))
    });
    if let Err(e) = written {
        // Best effort: the error that matters is the write's.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(path);
    Ok(())
}

/// Syncs the folder holding `path`, so that a rename into it is durable. Best effort: some
/// file systems refuse to sync a folder, and the file itself is already on disk.
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Writes `bytes` to `path` crash-safely (see [`write_file_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file_atomic(path, |tmp| std::fs::write(tmp, bytes).map_err(io_err(tmp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card_json(record: serde_json::Value) -> Result<serde_json::Value> {
        let card = ModelCard {
            format: "amri-diffusion/1".into(),
            amri_version: "0".into(),
            preset: None,
            denoiser: DenoiserConfig::complex_preset("tiny", 0.5)?,
            objective: Objective::AmbientKspace,
            record: None,
            steps: 0,
            seed: 0,
            train: TrainConfig::default(),
            normalisation: IntensityNorm::MeasuredPercentile,
        };
        let mut v = serde_json::to_value(&card)?;
        v["corruption"] = record;
        Ok(v)
    }

    #[test]
    fn training_record_is_typed_and_a_malformed_one_is_an_error() -> Result<()> {
        let record = TrainingRecord {
            protocol: "p".into(),
            acquisition: serde_json::from_value(serde_json::json!({
                "corruption": {"type": "pixel", "p": 0.9}, "delta": 0.2
            }))?,
            batch: 8,
            objective: TrainObjective::Ambient,
            slices: 3,
            base: None,
            measured: None,
            augment: Default::default(),
            views: None,
            finetune: None,
            matrices: Some(vec![[64, 48]]),
        };
        let with = card_json(serde_json::to_value(&record)?)?;
        let card: ModelCard = serde_json::from_value(with.clone())?;
        assert_eq!(card.record.as_ref(), Some(&record));
        assert_eq!(serde_json::to_value(&card)?, with);
        // no record: written as {} and read back as None
        let none = card_json(serde_json::json!({}))?;
        let card: ModelCard = serde_json::from_value(none.clone())?;
        assert_eq!(card.record, None);
        assert_eq!(
            serde_json::to_value(&card)?["corruption"],
            serde_json::json!({})
        );
        // present but malformed (a field of the wrong type, or one missing): an error that says so
        for bad in [
            serde_json::json!({"protocol": 3}),
            serde_json::json!({"kind": "pixel", "p_keep": 0.7}),
        ] {
            let e = serde_json::from_value::<ModelCard>(card_json(bad)?)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("training record"), "{e}");
        }
        Ok(())
    }

    /// A checkpoint of a network with a space-to-depth stem rebuilds the same network from its
    /// card (same output on the same input), and a card that leaves the stem out of a stem
    /// network's weights is refused, naming the file, instead of building another network.
    #[test]
    fn a_space_to_depth_checkpoint_rebuilds_the_same_network() -> Result<()> {
        let dev = Device::Cpu;
        let d = tempfile::tempdir().map_err(io_err(Path::new("tempdir")))?;
        let mut cfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
        cfg.unet.space_to_depth = 2;
        let vm = VarMap::new();
        let model = denoiser(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        for (name, var) in sorted_vars(&vm) {
            if name.contains("conv1") || name.contains("proj") || name.contains("out_conv") {
                var.set(&candle_core::Tensor::randn(0f32, 0.1, var.shape(), &dev)?)?;
            }
        }
        let mut card: ModelCard = serde_json::from_value(card_json(serde_json::json!({}))?)?;
        card.denoiser = cfg;
        write_atomic(&d.path().join(CARD_FILE), &serde_json::to_vec(&card)?)?;
        vm.save(d.path().join(EMA_FILE))?;
        let (back, loaded) = load_checkpoint(d.path(), Weights::Ema, &dev)?;
        assert_eq!(back.denoiser.unet.space_to_depth, 2);
        let x = candle_core::Tensor::randn(0f32, 1., (2, 2, 32, 32), &dev)?;
        let m = candle_core::Tensor::ones((2, 1, 32, 32), DType::F32, &dev)?;
        let s = candle_core::Tensor::new(&[0.3f32, 1.1], &dev)?;
        let diff = (model.forward(&x, &m, &s)? - loaded.forward(&x, &m, &s)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        // the same weights under a card without the stem: conv_in's shape does not match
        card.denoiser.unet.space_to_depth = 1;
        write_atomic(&d.path().join(CARD_FILE), &serde_json::to_vec(&card)?)?;
        let e = load_checkpoint(d.path(), Weights::Ema, &dev)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(EMA_FILE) && e.contains("conv_in"), "{e}");
        Ok(())
    }

    #[test]
    fn atomic_write_replaces_whole_files_and_cleans_up_a_failed_one() -> Result<()> {
        let d = tempfile::tempdir().map_err(io_err(Path::new("tempdir")))?;
        let p = d.path().join("x.json");
        write_atomic(&p, b"old")?;
        let failed = write_file_atomic(&p, |tmp| {
            std::fs::write(tmp, b"half").map_err(io_err(tmp))?;
            Err(DiffusionError::Config("interrupted".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).map_err(io_err(&p))?, b"old");
        write_atomic(&p, b"new")?;
        assert_eq!(std::fs::read(&p).map_err(io_err(&p))?, b"new");
        let names = std::fs::read_dir(d.path())
            .map_err(io_err(d.path()))?
            .count();
        assert_eq!(names, 1, "a temporary file was left behind");
        Ok(())
    }
}
