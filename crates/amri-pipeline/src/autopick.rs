//! Choosing a learned prior for measured data when none is named: where priors are looked for
//! ([`model_search_path`]), what a prior was trained for ([`PriorSummary`], from its model card),
//! what the data are ([`DataSummary`]), and the choice ([`pick_prior`]).
//!
//! **What fits.** A prior fits the data when
//! 1. its card can be used for inference (format `amri-diffusion/1`, 2 image + 1 mask channels,
//!    intensities scaled by the measured data);
//! 2. its training matrix `[rows, cols]` equals the data's (the network is convolutional, but a
//!    prior only learned anatomy at its training pixel size and field of view);
//! 3. it measured in the same domain (k-space, or the image domain of pixel/box masks);
//! 4. its corruption family is the data's: 1-D Cartesian lines, 2-D k-space points (Poisson),
//!    pixel masks, or boxes;
//! 5. for the iterative method, its training noise levels reach the card's σ_data (within two
//!    standard deviations of ln σ): the sampler starts at σ = 80 and draws the image's content at
//!    σ ≳ σ_data, which a prior trained only at small σ (a one-step prior) never learned.
//!
//! Among the priors that fit, the one whose training acceleration is closest to the data's
//! (smallest `|ln R_data − ln R_prior|`) is chosen; ties go to a prior trained on corrupted data
//! (ambient, Tweedie) over one trained on clean images (supervised, clean twin), then to the
//! folder name in order. K-space acceleration is `lines / measured lines` for line masks and
//! `samples / measured samples` otherwise (as training from measured files records it); a pixel
//! prior's is `1 / (1 − p)` for its hidden fraction `p`. The data's is the median over slices.
//!
//! **Training matrix of a card.** Cards record it (`corruption.matrices`) since this module was
//! written; cards of measured-data runs also list each input's matrix. Cards written before,
//! which keep their bytes, are recognised by the SHA-256 of their `model.json`
//! ([`LEGACY_MATRICES`]: the four shipped 64×64 Colin27 priors, whose READMEs give the matrix);
//! any other card without a matrix never fits, and the error says so.

use std::path::{Path, PathBuf};

use amri_core::{KSpace, MeasuredDomain};
use amri_diffusion::checkpoint::{
    read_card, resolve_checkpoint, IntensityNorm, ModelCard, CARD_FILE,
};
use amri_diffusion::data::TrainObjective;
use amri_ops::corruption::{CorruptionSpec, FurtherStructure, KspacePattern};
use amri_protocol::Method;
use ndarray::Axis;

/// Environment variable naming the folders priors are looked for in (a list, as `PATH`).
pub const MODELS_ENV: &str = "AMRI_MODELS";

/// Training matrices of model cards written before cards recorded one: SHA-256 of the
/// `model.json` bytes → `[rows, cols]` (the shipped `colin27-64-*` priors, trained at 64×64).
pub const LEGACY_MATRICES: &[(&str, [usize; 2])] = &[
    (
        "b12dfa06df7e7d4aed9a145ce65bb0525f9858764e16b32dcdc6b60ad1923bd4",
        [64, 64],
    ),
    (
        "bae668b208ea113a1b2162368c4d20dd5cf421e3e8d8d87517455c1a975c25e8",
        [64, 64],
    ),
    (
        "bc662a947c7cba133086523068d735bb354f3393722695703a24926332121da7",
        [64, 64],
    ),
    (
        "968f5122eab20e6b22140fdf2937a52f64aeb7db6c60730859c2964d39b1ec33",
        [64, 64],
    ),
];

/// The folders priors are looked for in, in order, and why each is there.
///
/// 1. `$AMRI_MODELS` (a list of folders, `:`-separated as `PATH`) when it is set and not
///    empty: then **only** those folders;
/// 2. otherwise the first of these that is a folder: `<prefix>/share/amri/models` and
///    `<prefix>/models`, where `<prefix>` is the folder above the one holding the running
///    executable (`<prefix>/bin/amri`), then the source tree's `models/` as it was when amri
///    was compiled.
pub fn model_search_path() -> Vec<(PathBuf, String)> {
    if let Some(v) = std::env::var_os(MODELS_ENV).filter(|v| !v.is_empty()) {
        return std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| (p, format!("${MODELS_ENV}")))
            .collect();
    }
    let mut candidates = Vec::new();
    if let Some(prefix) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().and_then(Path::parent).map(Path::to_path_buf))
    {
        candidates.push((
            prefix.join("share").join("amri").join("models"),
            "the install prefix".to_owned(),
        ));
        candidates.push((prefix.join("models"), "the install prefix".to_owned()));
    }
    candidates.push((
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"),
        "the source tree".to_owned(),
    ));
    candidates
        .into_iter()
        .find(|(p, _)| p.is_dir())
        .map(|(p, why)| (p.canonicalize().unwrap_or(p), why))
        .into_iter()
        .collect()
}

/// Measurement domain of data or of a prior's training corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickDomain {
    /// Centred k-space.
    Kspace,
    /// A corrupted image with a pixel mask.
    Image,
    /// Gaussian random projections (no prior takes them).
    Projection,
}

impl std::fmt::Display for PickDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PickDomain::Kspace => "k-space",
            PickDomain::Image => "image-domain",
            PickDomain::Projection => "projection",
        })
    }
}

/// Shape of a sampling pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// 1-D Cartesian lines (whole phase-encode lines measured or not).
    Lines,
    /// 2-D k-space points (Poisson disc, variable density).
    Points,
    /// Image pixels hidden independently.
    Pixels,
    /// Rectangular boxes hidden from an image.
    Boxes,
    /// Gaussian projections.
    Projections,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Lines => "1-D line mask",
            Family::Points => "2-D point mask",
            Family::Pixels => "pixel mask",
            Family::Boxes => "box mask",
            Family::Projections => "Gaussian projections",
        })
    }
}

/// What measured data are, as far as choosing a prior goes.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSummary {
    /// Measurement domain.
    pub domain: PickDomain,
    /// Matrix `[rows, cols]`.
    pub matrix: [usize; 2],
    /// Sampling family (image-domain masks are read as pixel masks).
    pub family: Family,
    /// Median acceleration over slices (1 for data without a mask).
    pub acceleration: f64,
    /// Receive coils.
    pub coils: usize,
}

impl DataSummary {
    /// The summary of `ks` (the `domain` attribute, the shape and the mask).
    pub fn of(ks: &KSpace) -> DataSummary {
        let [slices, coils, rows, cols] = ks.shape4();
        let domain = match ks.domain() {
            MeasuredDomain::Image => PickDomain::Image,
            MeasuredDomain::Projection => PickDomain::Projection,
            _ => PickDomain::Kspace,
        };
        let mut family = match domain {
            PickDomain::Kspace => Family::Lines,
            PickDomain::Image => Family::Pixels,
            PickDomain::Projection => Family::Projections,
        };
        let mut acc = Vec::with_capacity(slices);
        if let Some(mask) = &ks.mask {
            for m in mask.axis_iter(Axis(0)) {
                let m = m.to_owned();
                let total = m.len() as f64;
                let kept = m.iter().filter(|v| **v != 0.0).count() as f64;
                let r = match (domain, FurtherStructure::of_kspace_mask(&m)) {
                    (PickDomain::Kspace, FurtherStructure::Lines { axis }) => {
                        let lines = m
                            .axis_iter(Axis(axis))
                            .filter(|l| l.iter().any(|v| *v != 0.0))
                            .count() as f64;
                        m.len_of(Axis(axis)) as f64 / lines.max(1.0)
                    }
                    (PickDomain::Kspace, FurtherStructure::Points) => {
                        family = Family::Points;
                        total / kept.max(1.0)
                    }
                    _ => total / kept.max(1.0),
                };
                acc.push(r);
            }
        }
        acc.sort_by(f64::total_cmp);
        DataSummary {
            domain,
            matrix: [rows, cols],
            family,
            acceleration: acc.get(acc.len() / 2).copied().unwrap_or(1.0),
            coils,
        }
    }
}

impl std::fmt::Display for DataSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} data, {}×{}, {}, R = {:.1}, {} coil{}",
            self.domain,
            self.matrix[0],
            self.matrix[1],
            self.family,
            self.acceleration,
            self.coils,
            if self.coils == 1 { "" } else { "s" }
        )
    }
}

/// What a prior was trained for, read from its model card.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorSummary {
    /// Checkpoint folder.
    pub dir: PathBuf,
    /// Folder name (or the checkpoint's, for a run folder).
    pub name: String,
    /// Training matrices `[rows, cols]` (empty: not recorded).
    pub matrices: Vec<[usize; 2]>,
    /// Training corruption domain (`None`: the card records no training corruption).
    pub domain: Option<PickDomain>,
    /// Training corruption family.
    pub family: Option<Family>,
    /// Training acceleration (see the module docs).
    pub acceleration: Option<f64>,
    /// Training objective of the record (ambient, tweedie, supervised, clean).
    pub objective: Option<TrainObjective>,
    /// Why the card cannot be used for inference at all, if it cannot.
    pub unusable: Option<String>,
    /// The network's input needs multi-coil data (the SENSE input, `denoiser.input`).
    pub needs_coils: bool,
    /// The largest training noise level within two standard deviations of ln σ (normalised
    /// units).
    pub sigma_top: f64,
    /// The card's σ_data (normalised units).
    pub sigma_data: f64,
}

impl PriorSummary {
    /// Reads the card of the checkpoint (or run) folder `dir`.
    pub fn read(dir: &Path) -> std::result::Result<PriorSummary, String> {
        let ckpt = resolve_checkpoint(dir).map_err(|e| e.to_string())?;
        let card: ModelCard = read_card(&ckpt).map_err(|e| e.to_string())?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let mut matrices = card
            .record
            .as_ref()
            .map(|r| r.training_matrices())
            .unwrap_or_default();
        if matrices.is_empty() {
            if let Ok(bytes) = std::fs::read(ckpt.join(CARD_FILE)) {
                let sha = amri_diffusion::sample::sha256_hex(&bytes);
                matrices.extend(
                    LEGACY_MATRICES
                        .iter()
                        .filter(|(h, _)| *h == sha)
                        .map(|(_, m)| *m),
                );
            }
        }
        let unusable = if card.format != "amri-diffusion/1" {
            Some(format!("card format {:?}", card.format))
        } else if card.denoiser.image_channels != 2 || card.denoiser.mask_channels != 1 {
            Some("not a complex-image prior".to_owned())
        } else if card.normalisation != IntensityNorm::MeasuredPercentile {
            Some("trained on clean-image intensity scaling".to_owned())
        } else {
            None
        };
        let spec = card.record.as_ref().map(|r| &r.acquisition.corruption);
        let (domain, family, acceleration) = match spec {
            Some(CorruptionSpec::Kspace {
                pattern,
                acceleration,
                ..
            }) => (
                Some(PickDomain::Kspace),
                Some(if *pattern == KspacePattern::Poisson {
                    Family::Points
                } else {
                    Family::Lines
                }),
                Some(*acceleration),
            ),
            Some(CorruptionSpec::Pixel { p }) => (
                Some(PickDomain::Image),
                Some(Family::Pixels),
                Some(1.0 / (1.0 - p).max(1e-6)),
            ),
            Some(CorruptionSpec::Boxes { .. }) => {
                (Some(PickDomain::Image), Some(Family::Boxes), None)
            }
            Some(CorruptionSpec::GaussianCs { .. }) => (
                Some(PickDomain::Projection),
                Some(Family::Projections),
                None,
            ),
            None => (None, None, None),
        };
        Ok(PriorSummary {
            dir: ckpt,
            name,
            matrices,
            domain,
            family,
            acceleration,
            objective: card.record.as_ref().map(|r| r.objective),
            unusable,
            needs_coils: !card.denoiser.input.is_adjoint(),
            sigma_top: card.train.sigma.within_training(f64::MAX),
            sigma_data: card.denoiser.precond.sigma_data,
        })
    }

    /// Why this prior does not fit `data` for `method` (every reason), empty when it fits.
    pub fn misfits(&self, data: &DataSummary, method: Method) -> Vec<String> {
        let mut why = Vec::new();
        if let Some(u) = &self.unusable {
            why.push(format!("cannot be used for inference ({u})"));
        }
        match self.domain {
            None => why.push("its card records no training corruption".into()),
            Some(d) if d != data.domain => why.push(format!("trained on {d} data")),
            Some(_) => {}
        }
        if self.matrices.is_empty() {
            why.push("its card records no training matrix".into());
        } else if !self.matrices.contains(&data.matrix) {
            why.push(format!(
                "trained at {}, not {}×{}",
                self.matrices_text(),
                data.matrix[0],
                data.matrix[1]
            ));
        }
        if let Some(f) = self.family {
            if self.domain == Some(data.domain) && f != data.family {
                why.push(format!("trained on a {f}, not a {}", data.family));
            }
        }
        if self.needs_coils && data.coils < 2 {
            why.push("its network input is SENSE, which needs multi-coil data".into());
        }
        if method == Method::Iterative && self.sigma_top < self.sigma_data {
            why.push(format!(
                "trained only at σ ≤ {:.3} (a one-step prior), while the iterative sampler starts \
                 at σ = {}",
                self.sigma_top,
                amri_diffusion::sample::PosteriorConfig::default().sigma_max
            ));
        }
        why
    }

    fn matrices_text(&self) -> String {
        self.matrices
            .iter()
            .map(|[r, c]| format!("{r}×{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for PriorSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |o: Option<String>| o.unwrap_or_else(|| "?".into());
        write!(
            f,
            "{}: {} {}, {}, R = {}, objective {}",
            self.name,
            opt(self.domain.map(|d| d.to_string())),
            opt(self.family.map(|d| d.to_string())),
            if self.matrices.is_empty() {
                "matrix not recorded".to_owned()
            } else {
                self.matrices_text()
            },
            opt(self.acceleration.map(|a| format!("{a:.1}"))),
            opt(self.objective.map(|o| format!("{o:?}").to_lowercase()))
        )
    }
}

/// The chosen prior and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// Checkpoint folder to load.
    pub dir: PathBuf,
    /// One line: which prior, and why it was chosen over the others.
    pub reason: String,
}

/// Why no prior was chosen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickError {
    /// The search path holds no prior at all.
    #[error("no priors found: looked in {searched} (set $AMRI_MODELS to a folder of model folders, or give --model)")]
    NoPriors {
        /// The folders looked in, in words.
        searched: String,
    },
    /// Priors were found, none fits.
    #[error("no prior fits the data ({data}); give --model to use one anyway, or train one on these data (amri train). Priors found in {searched}:\n{listing}")]
    NoneFits {
        /// The data, in words.
        data: String,
        /// The folders looked in.
        searched: String,
        /// One line per prior: what it was trained for and why it does not fit.
        listing: String,
    },
}

/// The model folders in `dirs`: sub-folders holding a `model.json` or a run's `latest` pointer,
/// sorted by path (a folder in `dirs` that is itself a checkpoint counts too).
pub fn list_priors(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let is_model = |p: &Path| {
        p.join(CARD_FILE).is_file() || p.join(amri_diffusion::checkpoint::LATEST_FILE).is_file()
    };
    let mut out = Vec::new();
    for d in dirs {
        if is_model(d) {
            out.push(d.clone());
            continue;
        }
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && is_model(p))
            .collect();
        found.sort();
        out.extend(found);
    }
    out
}

/// Chooses the prior for `data` reconstructed with `method` among the model folders in `dirs`
/// (module docs); `dirs` comes from [`model_search_path`] or the caller.
pub fn pick_prior(
    data: &DataSummary,
    method: Method,
    dirs: &[PathBuf],
) -> std::result::Result<Pick, PickError> {
    let searched = if dirs.is_empty() {
        "no folder (none of the search path exists)".to_owned()
    } else {
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found = list_priors(dirs);
    if found.is_empty() {
        return Err(PickError::NoPriors { searched });
    }
    let mut listing = Vec::new();
    let mut fitting: Vec<(f64, u8, PriorSummary)> = Vec::new();
    for dir in &found {
        match PriorSummary::read(dir) {
            Err(e) => listing.push(format!("  {}: unreadable card ({e})", dir.display())),
            Ok(p) => {
                let why = p.misfits(data, method);
                if why.is_empty() {
                    let distance = p
                        .acceleration
                        .map(|a| (data.acceleration.ln() - a.ln()).abs())
                        .unwrap_or(f64::INFINITY);
                    let clean = u8::from(matches!(
                        p.objective,
                        Some(TrainObjective::Supervised | TrainObjective::Clean)
                    ));
                    listing.push(format!("  {p}: fits"));
                    fitting.push((distance, clean, p));
                } else {
                    listing.push(format!("  {p}: {}", why.join("; ")));
                }
            }
        }
    }
    fitting.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.name.cmp(&b.2.name))
    });
    let Some((_, _, best)) = fitting.first() else {
        return Err(PickError::NoneFits {
            data: data.to_string(),
            searched,
            listing: listing.join("\n"),
        });
    };
    let others = fitting.len() - 1;
    let reason = format!(
        "picked prior {} for {data}: it was trained at {} on {} {}{}{}",
        best.dir.display(),
        best.matrices_text(),
        best.domain.map(|d| d.to_string()).unwrap_or_default(),
        best.family.map(|d| d.to_string()).unwrap_or_default(),
        best.acceleration
            .map(|a| format!(" at R = {a:.1}"))
            .unwrap_or_default(),
        if others > 0 {
            format!(
                " (the closest acceleration of the {} that fit{})",
                fitting.len(),
                if best_is_clean_tiebreak(&fitting) {
                    "; trained on corrupted data, it wins the tie with a clean-trained prior"
                } else {
                    ""
                }
            )
        } else {
            " (the only one that fits)".to_owned()
        }
    );
    Ok(Pick {
        dir: best.dir.clone(),
        reason,
    })
}

/// Whether the first of the sorted fits won over an equally close clean-trained one.
fn best_is_clean_tiebreak(fitting: &[(f64, u8, PriorSummary)]) -> bool {
    match fitting {
        [a, b, ..] => a.0 == b.0 && a.1 < b.1,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amri_core::C32;
    use ndarray::{Array3, Array4};

    fn shipped() -> Vec<PathBuf> {
        vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")]
    }

    fn kspace(rows: usize, cols: usize, every: usize) -> KSpace {
        let mut ks = KSpace::new(Array4::from_elem((2, 1, rows, cols), C32::new(1.0, 0.0)));
        // lines: every `every`-th column measured, so R = every exactly (cols divisible)
        ks.mask = Some(Array3::from_shape_fn((2, rows, cols), |(_, _, c)| {
            f32::from(u8::from(c % every == 0))
        }));
        ks
    }

    #[test]
    fn data_summary_reads_domain_family_and_acceleration_from_the_mask() {
        let d = DataSummary::of(&kspace(64, 64, 4));
        assert_eq!(d.domain, PickDomain::Kspace);
        assert_eq!(d.family, Family::Lines);
        assert_eq!(d.matrix, [64, 64]);
        assert!((d.acceleration - 4.0).abs() < 1e-12);
        // scattered k-space points: 2-D, R = samples / measured
        let mut ks = kspace(8, 8, 1);
        ks.mask = Some(Array3::from_shape_fn((2, 8, 8), |(_, r, c)| {
            f32::from(u8::from((r + c) % 2 == 0))
        }));
        let d = DataSummary::of(&ks);
        assert_eq!((d.family, d.acceleration), (Family::Points, 2.0));
    }

    #[test]
    fn the_shipped_priors_have_known_matrices_and_the_closest_acceleration_wins() {
        let found = list_priors(&shipped());
        assert!(found.len() >= 4, "{found:?}");
        for f in &found {
            let p = PriorSummary::read(f).expect("readable card");
            assert!(p.matrices.contains(&[64, 64]), "{p}");
        }
        let pick = pick_prior(
            &DataSummary::of(&kspace(64, 64, 4)),
            Method::OneStep,
            &shipped(),
        )
        .expect("fits");
        assert!(pick.dir.ends_with("colin27-64-r4-ambient"), "{pick:?}");
        let e = pick_prior(
            &DataSummary::of(&kspace(128, 128, 4)),
            Method::OneStep,
            &shipped(),
        )
        .expect_err("no 128 prior");
        let msg = e.to_string();
        assert!(msg.contains("128×128") && msg.contains("64×64"), "{msg}");
    }

    #[test]
    fn a_sense_input_prior_fits_multicoil_data_only() {
        let mut p = PriorSummary {
            dir: PathBuf::from("m"),
            name: "m".into(),
            matrices: vec![[64, 64]],
            domain: Some(PickDomain::Kspace),
            family: Some(Family::Lines),
            acceleration: Some(4.0),
            objective: Some(TrainObjective::Ambient),
            unusable: None,
            needs_coils: true,
            sigma_top: 3.3,
            sigma_data: 0.5,
        };
        let mut d = DataSummary::of(&kspace(64, 64, 4));
        assert_eq!(d.coils, 1);
        let why = p.misfits(&d, Method::OneStep);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("multi-coil"), "{why:?}");
        d.coils = 8;
        assert!(p.misfits(&d, Method::OneStep).is_empty());
        // the adjoint input takes single-coil data
        d.coils = 1;
        p.needs_coils = false;
        assert!(p.misfits(&d, Method::OneStep).is_empty());
        assert!(p.misfits(&d, Method::Iterative).is_empty());
    }

    #[test]
    fn a_one_step_prior_fits_one_step_only() {
        // the shipped R=4 card with other training noise levels
        let shipped =
            resolve_checkpoint(&shipped()[0].join("colin27-64-r4-ambient")).expect("ckpt");
        let text = std::fs::read_to_string(shipped.join(CARD_FILE)).expect("card");
        let dir = std::env::temp_dir().join(format!("amri-autopick-{}", std::process::id()));
        let card = |mean: f64, sd: f64| -> PriorSummary {
            let mut c: serde_json::Value = serde_json::from_str(&text).expect("json");
            c["train"]["sigma"] = serde_json::json!({ "p_mean": mean, "p_std": sd });
            let ckpt = dir.join(format!("m{mean}"));
            std::fs::create_dir_all(&ckpt).expect("mkdir");
            std::fs::write(ckpt.join(CARD_FILE), c.to_string()).expect("write");
            PriorSummary::read(&ckpt).expect("read")
        };
        let one = card(-5.0, 0.5);
        assert!((one.sigma_top - (-4.0f64).exp()).abs() < 1e-9);
        let full = card(-1.2, 1.2);
        assert!((full.sigma_top - 1.2f64.exp()).abs() < 1e-9);
        let d = DataSummary::of(&kspace(64, 64, 4));
        let why = |p: &PriorSummary, m| p.misfits(&d, m).join("; ");
        assert!(!why(&one, Method::OneStep).contains("one-step prior"));
        assert!(
            why(&one, Method::Iterative).contains("trained only at σ ≤ 0.018 (a one-step prior)")
        );
        assert!(!why(&full, Method::Iterative).contains("one-step prior"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
