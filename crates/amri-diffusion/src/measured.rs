//! Training data from measured files: the shape buckets every training run draws from.
//!
//! A user's data are measured scans ([`amri_core::KSpace`], as `amri recon` reads them): k-space
//! (single- or multi-coil) or corrupted images (`domain = image`), each slice with its own mask.
//! [`MeasuredFile::new`] takes one file's scans, **drops** its `reference` and stored coil maps
//! (no fully sampled image or true map is ever read on this path) and checks, before any
//! training step, everything that would otherwise stop a run midway: a missing or full mask, an
//! unusable domain, NaN/∞ values. [`TrainingData::from_measured`] groups files by matrix size
//! into **buckets** (one [`TrainingSet`] per `[rows, cols]`, built by
//! [`TrainingSet::from_measured`]: per-scan `A` from its own mask, coil maps by ESPIRiT from its
//! own calibration region, computed once and kept in memory, `Ã` from its own `A`, one scale per
//! file from its measured data) and also checks coil counts and calibration regions.
//!
//! **Buckets, not padding.** Zero-padding an image changes its k-space grid (the measured lines
//! would have to be interpolated), so scans are never padded or resampled: a batch is drawn
//! within one bucket. The bucket of step `t` is drawn with probability proportional to its number
//! of scans from `derive_seed(seed, t, TAG_BUCKET)`; within bucket `b` the batch is
//! [`crate::data::batch_indices`]`(n_b, batch, seed_b, t)` with `seed_b = seed` for the first
//! bucket and `derive_seed(seed, b, TAG_BUCKET_ORDER)` for the others. Everything is a pure function of
//! `(seed, t)`, so a resumed run continues exactly; with one bucket the stream is exactly the
//! single set's ([`TrainingSet::step_batch`]). Matrix sizes the U-Net cannot take (not multiples
//! of its size multiple) are an error ([`TrainingData::check_size_multiple`]), not padded.

use amri_core::KSpace;
use amri_ops::acquisition::Acquisition;
use amri_ops::corruption::{Corruption, CorruptionSpec, Domain, FurtherStructure, KspacePattern};
use candle_core::Device;
use ndarray::Axis;

use crate::batch::Batch;
use crate::checkpoint::Objective;
use crate::data::{acs_of_mask, batch_indices, FurtherParams, MeasuredScan, TrainingSet};
use crate::error::{DiffusionError, Result};
use crate::seed::{derive_seed, TAG_BUCKET, TAG_BUCKET_ORDER};

/// Peak training memory over the attention maps' own size (see
/// [`TrainingData::check_attention_memory`]).
pub const ATTENTION_PEAK_FACTOR: u64 = 4;

/// How a measured file is conditioned before it trains, as `amri recon` conditions data before
/// it reconstructs ([`prepare`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preparation {
    /// Prewhiten with the file's own noise samples ([`KSpace::noise`]) when it has them.
    pub prewhiten: bool,
    /// Compress to this many virtual coils by SVD (`bart cc -S -p N`); `None` keeps the coils,
    /// as does `N ≥` the file's coils.
    pub virtual_coils: Option<usize>,
}

/// Conditions a measured file for training, in `amri recon`'s order: prewhitening with its own
/// noise samples (when asked and present), then SVD coil compression; errors name `name`.
pub fn prepare(name: &str, mut k: KSpace, how: Preparation) -> Result<KSpace> {
    let err = |e: amri_ops::OpsError| DiffusionError::Config(format!("{name}: {e}"));
    if how.prewhiten && k.noise.is_some() && !k.attributes.contains_key("prewhitened") {
        amri_ops::whiten::prewhiten(&mut k, amri_ops::whiten::NoiseSource::Samples).map_err(err)?;
    }
    if let Some(n) = how.virtual_coils {
        if n == 0 {
            return Err(DiffusionError::Config(format!(
                "{name}: --coils 0: at least one virtual coil is needed"
            )));
        }
        if n < k.shape4()[1] {
            if k.domain() != Domain::Kspace {
                return Err(DiffusionError::Config(format!(
                    "{name}: coil compression applies to multi-coil k-space, not {:?} data",
                    k.domain()
                )));
            }
            k = amri_ops::cc::compress(&k, &amri_ops::cc::CcConfig::new(n)).map_err(err)?;
        }
    }
    Ok(k)
}

/// One measured file's scans (slices), ready for training: reference and stored maps dropped.
#[derive(Debug, Clone)]
pub struct MeasuredFile {
    /// The name errors use (the file path).
    pub name: String,
    /// Measured data `[slice, coil, row, col]` (centred k-space, or corrupted images).
    pub data: ndarray::Array4<amri_core::C32>,
    /// Mask `[slice, row, col]`, non-zero = measured.
    pub mask: ndarray::Array3<f32>,
    /// K-space or image domain.
    pub domain: Domain,
    /// Noise standard deviation per complex sample in the data's units, when the file says it
    /// (its `noise_sigma` attribute: `amri simulate` writes it, prewhitening sets it to 1).
    pub noise_sigma: Option<f32>,
}

impl MeasuredFile {
    /// Takes a file's measured data `k` for training, named `name` in every error: drops
    /// `k.reference` and `k.sensitivities` unread, and errors (naming the file) on a domain that
    /// cannot train (projections, unknown), a missing mask (fully sampled data or a file without
    /// its mask), a slice whose mask measures everything or nothing, and NaN/∞ data or mask.
    pub fn new(name: &str, k: KSpace) -> Result<Self> {
        let err = |msg: String| DiffusionError::Config(format!("{name}: {msg}"));
        let domain = k.domain();
        if domain == Domain::Projection {
            return Err(err(
                "holds Gaussian projections (domain = projection); the ambient objective \
                 trains on k-space or image-domain data only"
                    .into(),
            ));
        }
        let noise_sigma = k
            .noise_sigma
            .map(|v| v as f32)
            .filter(|v| v.is_finite() && *v > 0.0);
        let KSpace { data, mask, .. } = k; // reference and sensitivities dropped unread
        let Some(mask) = mask else {
            return Err(err(
                "has no sampling mask, so it reads as fully sampled; ambient training needs \
                 each scan's mask (an .npz bundle: add a `mask` array [slice, row, col] or \
                 [row, col], 1 = measured; .cfl: put `<name>_mask.cfl` beside it). Fully \
                 sampled data: reconstruct an image volume and train it with --protocol \
                 (simulation route)"
                    .into(),
            ));
        };
        let [s, c, r, cols] = {
            let d = data.shape();
            [d[0], d[1], d[2], d[3]]
        };
        if mask.dim() != (s, r, cols) {
            return Err(DiffusionError::Shape(format!(
                "{name}: mask {:?} does not match the data's [slice, row, col] [{s}, {r}, {cols}]",
                mask.shape()
            )));
        }
        let bad = data
            .iter()
            .filter(|v| !(v.re.is_finite() && v.im.is_finite()))
            .count();
        if bad > 0 || mask.iter().any(|v| !v.is_finite()) {
            return Err(err(format!(
                "{bad} of {} samples are NaN or infinite (or the mask is); training needs finite \
                 data",
                data.len()
            )));
        }
        if domain == Domain::Image && c != 1 {
            return Err(err(format!(
                "image-domain data with {c} coils; a corrupted image has one complex plane"
            )));
        }
        for (i, m) in mask.axis_iter(Axis(0)).enumerate() {
            let kept = m.iter().filter(|v| **v != 0.0).count();
            if kept == 0 {
                return Err(err(format!("slice {i}: the mask measures nothing")));
            }
            if domain == Domain::Kspace && c > 1 {
                let acs = crate::data::acs_of_mask(&m.to_owned());
                let side = |ax: usize| {
                    acs.axis_iter(Axis(ax))
                        .filter(|l| l.iter().any(|v| *v != 0.0))
                        .count()
                };
                let (h, w) = (side(0), side(1));
                if h < 3 || w < 3 {
                    return Err(err(format!(
                        "slice {i}: {c}-coil k-space without a calibration (ACS) region: the \
                         largest fully sampled block around the k-space centre is {h}×{w}, and \
                         coil maps need at least 3×3 (acquire or keep fully sampled centre \
                         lines)"
                    )));
                }
            }
            if kept == m.len() {
                return Err(err(format!(
                    "slice {i}: the mask is all ones (fully sampled); ambient training needs \
                     undersampled data with the mask it was sampled with. Fully sampled data: \
                     reconstruct an image volume and train it with --protocol (simulation route)"
                )));
            }
        }
        Ok(Self {
            name: name.to_owned(),
            data,
            mask,
            domain,
            noise_sigma,
        })
    }

    /// `(slices, coils, rows, cols)`.
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        self.data.dim()
    }
}

/// One matrix-size bucket: its set and the files (names) it holds.
#[derive(Debug, Clone)]
struct Bucket {
    set: TrainingSet,
    files: Vec<String>,
}

/// The training data of a run: one [`TrainingSet`] per matrix size (see the module docs).
#[derive(Debug, Clone)]
pub struct TrainingData {
    buckets: Vec<Bucket>,
    /// Per-example augmentation of [`TrainingData::step_batch`] (off by default).
    augment: crate::augment::Augmentation,
}

impl TrainingData {
    /// Data of a single set (the simulation route; its stream is the set's own).
    pub fn single(set: TrainingSet, files: Vec<String>) -> Self {
        Self {
            buckets: vec![Bucket { set, files }],
            augment: Default::default(),
        }
    }

    /// Data of several sets of different matrix sizes, one bucket each in the given order (the
    /// simulation route with several views, [`crate::views`]); the stream is the buckets' as for
    /// measured files. Errors on no sets, two sets of one shape or sets of different objectives
    /// or coil counts.
    pub fn from_sets(sets: Vec<(TrainingSet, Vec<String>)>) -> Result<Self> {
        let Some(first) = sets.first() else {
            return Err(DiffusionError::Config("no training data".into()));
        };
        let (objective, coils) = (first.0.objective(), first.0.coils());
        for (k, (set, files)) in sets.iter().enumerate() {
            if set.objective() != objective || set.coils() != coils {
                return Err(DiffusionError::Config(format!(
                    "{}: objective {:?} with {} coils differs from the first set's {objective:?} \
                     with {coils}",
                    files.join(", "),
                    set.objective(),
                    set.coils()
                )));
            }
            if sets[..k].iter().any(|(s, _)| s.shape() == set.shape()) {
                return Err(DiffusionError::Config(format!(
                    "{}: two sets of one matrix size {:?}; give each size one set",
                    files.join(", "),
                    set.shape()
                )));
            }
        }
        Ok(Self {
            buckets: sets
                .into_iter()
                .map(|(set, files)| Bucket { set, files })
                .collect(),
            augment: Default::default(),
        })
    }

    /// Training data from measured files (module docs): scans are numbered in input order
    /// (file by file, slice by slice; the number seeds each scan's `Ã`) and grouped into
    /// buckets by `[rows, cols]`, in order of first appearance. Errors name the file: mixed
    /// domains or coil counts across files, and everything [`TrainingSet::from_measured`]
    /// rejects (e.g. a multi-coil slice without a calibration region).
    pub fn from_measured(files: &[MeasuredFile], further: FurtherParams) -> Result<Self> {
        Self::from_measured_cached(files, further, None)
    }

    /// Training data for the noisy-data objective ([`crate::data::TrainObjective::Tweedie`])
    /// from measured files, each served with its own noise level [`MeasuredFile::noise_sigma`]
    /// (see [`TrainingSet::from_measured_cached`]); `sigma`, when given, overrides every file's.
    /// Errors name the first file whose noise level is unknown.
    pub fn from_measured_noisy(
        files: &[MeasuredFile],
        further: FurtherParams,
        sigma: Option<f32>,
    ) -> Result<Self> {
        let mut sig = Vec::with_capacity(files.len());
        for f in files {
            match sigma.or(f.noise_sigma) {
                Some(s) if s.is_finite() && s > 0.0 => sig.push(s),
                Some(s) => {
                    return Err(DiffusionError::Config(format!(
                        "{}: noise σ {s} is not a positive number",
                        f.name
                    )))
                }
                None => {
                    return Err(DiffusionError::Config(format!(
                        "{}: its noise level is unknown (no noise samples to prewhiten with, no noise_sigma attribute); the tweedie objective needs it: give --noise-sigma (σ per complex sample, in the file's units), or use --objective ambient",
                        f.name
                    )))
                }
            }
        }
        Self::build(files, further, None, Some(&sig))
    }

    /// [`TrainingData::from_measured`] with every multi-coil scan's ESPIRiT maps read from, or
    /// stored in, the on-disk `cache` ([`crate::maps_cache`]); the data are the same, bit for
    /// bit, with or without it.
    pub fn from_measured_cached(
        files: &[MeasuredFile],
        further: FurtherParams,
        cache: Option<&crate::maps_cache::MapsCache>,
    ) -> Result<Self> {
        Self::build(files, further, cache, None)
    }

    /// The buckets of `files`; `noise` (one σ per file) selects the noisy-data objective.
    fn build(
        files: &[MeasuredFile],
        further: FurtherParams,
        cache: Option<&crate::maps_cache::MapsCache>,
        noise: Option<&[f32]>,
    ) -> Result<Self> {
        let first = files
            .first()
            .ok_or_else(|| DiffusionError::Config("no measured training files".into()))?;
        let (_, coils, _, _) = first.dims();
        for f in files {
            if f.domain != first.domain {
                return Err(DiffusionError::Config(format!(
                    "{} holds {:?}-domain data but {} holds {:?}-domain data; one run trains on \
                     one domain",
                    f.name, f.domain, first.name, first.domain
                )));
            }
            if f.dims().1 != coils {
                return Err(DiffusionError::Config(format!(
                    "{} has {} coils but {} has {coils}; all files of a run need the same coil \
                     count (coil-compress them to one count first)",
                    f.name,
                    f.dims().1,
                    first.name
                )));
            }
        }
        // (shape, [(file index, first scan id)]) in order of first appearance
        type Members = Vec<(usize, u64)>;
        let mut groups: Vec<((usize, usize), Members)> = Vec::new();
        let mut next_id = 0u64;
        for (k, f) in files.iter().enumerate() {
            let (s, _, r, c) = f.dims();
            match groups.iter_mut().find(|g| g.0 == (r, c)) {
                Some(g) => g.1.push((k, next_id)),
                None => groups.push(((r, c), vec![(k, next_id)])),
            }
            next_id += s as u64;
        }
        let mut buckets = Vec::with_capacity(groups.len());
        for (_, members) in groups {
            let mut scans = Vec::new();
            let mut ranges = Vec::with_capacity(members.len());
            let mut owner = Vec::new();
            for &(k, id0) in &members {
                let f = &files[k];
                let start = scans.len();
                for (j, (d, m)) in f
                    .data
                    .axis_iter(Axis(0))
                    .zip(f.mask.axis_iter(Axis(0)))
                    .enumerate()
                {
                    scans.push(MeasuredScan {
                        id: id0 + j as u64,
                        domain: f.domain,
                        data: d.to_owned(),
                        mask: m.to_owned(),
                    });
                    owner.push((k, j));
                }
                ranges.push(start..scans.len());
            }
            let bucket_noise: Option<Vec<f32>> = noise.map(|n| {
                members
                    .iter()
                    .map(|(k, _)| n.get(*k).copied().unwrap_or(0.0))
                    .collect()
            });
            let set = TrainingSet::from_measured_cached(
                &scans,
                &ranges,
                further,
                cache,
                bucket_noise.as_deref(),
            )
            .map_err(|e| {
                // name the file the error is about ("file f: …" or "scan i …"), else the bucket's
                let msg = e.to_string();
                let leading = |prefix: &str| -> Option<usize> {
                    msg.strip_prefix(prefix)?
                        .split(|ch: char| !ch.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok()
                };
                let named = leading("file ")
                    .and_then(|f| members.get(f).map(|(k, _)| (*k, None)))
                    .or_else(|| {
                        leading("scan ").and_then(|i| owner.get(i).map(|(k, j)| (*k, Some(*j))))
                    });
                match named {
                    Some((k, Some(j))) => {
                        DiffusionError::Config(format!("{} (slice {j}): {msg}", files[k].name))
                    }
                    Some((k, None)) => DiffusionError::Config(format!("{}: {msg}", files[k].name)),
                    None => DiffusionError::Config(format!(
                        "{}: {msg}",
                        members
                            .iter()
                            .map(|(k, _)| files[*k].name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            })?;
            buckets.push(Bucket {
                set,
                files: members
                    .iter()
                    .map(|(k, _)| files[*k].name.clone())
                    .collect(),
            });
        }
        Ok(Self {
            buckets,
            augment: Default::default(),
        })
    }

    /// The same data with every example of [`TrainingData::step_batch`] augmented by `aug`
    /// ([`crate::augment`]: a pure function of `(seed, step, example)`; off = the plain stream).
    pub fn with_augmentation(mut self, aug: crate::augment::Augmentation) -> Self {
        self.augment = aug;
        self
    }

    /// The augmentation [`TrainingData::step_batch`] applies.
    pub fn augmentation(&self) -> &crate::augment::Augmentation {
        &self.augment
    }

    /// Total number of scans.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.set.len()).sum()
    }

    /// Whether there are no scans (never true for constructed data).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buckets' sets, in bucket order.
    pub fn sets(&self) -> impl Iterator<Item = &TrainingSet> {
        self.buckets.iter().map(|b| &b.set)
    }

    /// `(rows, cols, scans)` of every bucket, in bucket order.
    pub fn shapes(&self) -> Vec<(usize, usize, usize)> {
        self.buckets
            .iter()
            .map(|b| (b.set.shape().0, b.set.shape().1, b.set.len()))
            .collect()
    }

    /// The loss the batches are built for (one for all buckets).
    pub fn objective(&self) -> Objective {
        self.buckets
            .first()
            .map_or(Objective::AmbientKspace, |b| b.set.objective())
    }

    /// Receive coils of the batches.
    pub fn coils(&self) -> usize {
        self.buckets.first().map_or(1, |b| b.set.coils())
    }

    /// Errors, naming the files, if a bucket's `[rows, cols]` is not a multiple of `multiple`
    /// (the U-Net's [`crate::unet::UNetConfig::size_multiple`]); such scans are not padded.
    pub fn check_size_multiple(&self, multiple: usize) -> Result<()> {
        let m = multiple.max(1);
        for b in &self.buckets {
            let (r, c) = b.set.shape();
            if r % m != 0 || c % m != 0 {
                return Err(DiffusionError::Shape(format!(
                    "{}: matrix {r}×{c} is not a multiple of {m}, the network's size multiple; \
                     crop or zero-fill the k-space to a multiple of {m} in each direction before \
                     training (training never pads or resamples measured data)",
                    b.files.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Errors, naming the files, when a training step's attention maps for `batch` scans of a
    /// bucket would not fit in `available` bytes of memory: peak memory is about
    /// [`ATTENTION_PEAK_FACTOR`] × [`crate::unet::UNetConfig::attention_map_bytes`] (the maps,
    /// their softmax and gradients; measured: `tiny` at 256×256, batch 8, 4.3 GB of maps, held
    /// 18–20 GB). The message names the presets and batch sizes that fit.
    pub fn check_attention_memory(
        &self,
        unet: &crate::unet::UNetConfig,
        batch: usize,
        available: u64,
    ) -> Result<()> {
        for b in &self.buckets {
            let (r, c) = b.set.shape();
            let need = ATTENTION_PEAK_FACTOR * unet.attention_map_bytes(r, c, batch);
            if need > available {
                let gib = |v: u64| v as f64 / (1u64 << 30) as f64;
                return Err(DiffusionError::Config(format!(
                    "{}: at {r}×{c} with batch {batch} this network's self-attention needs about {:.1} GiB ({:.1} GiB of attention maps, quadratic in the image area) and {:.1} GiB are available; train with --preset clinical (a ×4 space-to-depth stem, made for 256×256 on a CPU) or a smaller --batch",
                    b.files.join(", "),
                    gib(need),
                    gib(need / ATTENTION_PEAK_FACTOR),
                    gib(available)
                )));
            }
        }
        Ok(())
    }

    /// An [`Acquisition`] that describes the measured data for the model card, which inference
    /// uses to draw the mask channels of its input: k-space line masks → the `random` Cartesian
    /// pattern along their axis, other k-space masks → `poisson`, with the median acceleration
    /// (samples or lines over measured ones) and the median calibration fraction of the scans;
    /// image-domain masks → `pixel` with the median hidden fraction. `further` gives `delta`,
    /// `further` and `seed`; coils are the data's; no synthetic phase or noise. A calibration
    /// fraction the mask rules reject for the first bucket's shape is recorded as 0.
    pub fn acquisition(&self, further: FurtherParams) -> Result<Acquisition> {
        let median = |mut v: Vec<f64>| -> f64 {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let (mut acc, mut cf, mut hidden) = (Vec::new(), Vec::new(), Vec::new());
        let mut structure = None;
        for set in self.sets() {
            for i in 0..set.len() {
                let (a, _) = set.masks(i, 0)?;
                let total = a.len() as f64;
                let kept = a.iter().filter(|v| **v != 0.0).count() as f64;
                hidden.push(1.0 - kept / total);
                let s = *structure.get_or_insert(FurtherStructure::of_kspace_mask(&a));
                let acs = acs_of_mask(&a);
                match s {
                    FurtherStructure::Lines { axis } => {
                        let lines = |m: &ndarray::Array2<f32>| {
                            m.axis_iter(Axis(axis))
                                .filter(|l| l.iter().any(|v| *v != 0.0))
                                .count() as f64
                        };
                        let n = a.len_of(Axis(axis)) as f64;
                        acc.push(n / lines(&a).max(1.0));
                        cf.push(lines(&acs) / n);
                    }
                    FurtherStructure::Points => {
                        acc.push(total / kept.max(1.0));
                        let rows = acs
                            .axis_iter(Axis(0))
                            .filter(|l| l.iter().any(|v| *v != 0.0))
                            .count() as f64;
                        cf.push(rows / a.nrows() as f64);
                    }
                }
            }
        }
        let corruption = |center_fraction: f64| match (self.objective(), structure) {
            (Objective::AmbientPixel, _) => CorruptionSpec::Pixel {
                p: median(hidden.clone()).clamp(0.0, 1.0),
            },
            (_, Some(FurtherStructure::Lines { axis })) => CorruptionSpec::Kspace {
                pattern: KspacePattern::Random,
                acceleration: median(acc.clone()).max(1.0),
                center_fraction,
                axis,
            },
            _ => CorruptionSpec::Kspace {
                pattern: KspacePattern::Poisson,
                acceleration: median(acc.clone()).max(1.0),
                center_fraction,
                axis: 1,
            },
        };
        let acq = |center_fraction: f64| Acquisition {
            corruption: corruption(center_fraction),
            delta: further.delta,
            further: further.mode,
            further_box_size: None,
            coils: self.coils(),
            synthetic_phase: false,
            noise_level: 0.0,
            seed: further.seed,
            store_maps: false,
        };
        let (r, c) = self
            .buckets
            .first()
            .map(|b| b.set.shape())
            .ok_or_else(|| DiffusionError::Config("no training data".into()))?;
        let valid = |a: &Acquisition| a.validate().is_ok() && Corruption::new(a, r, c).is_ok();
        let first = acq(median(cf.clone()).clamp(0.0, 1.0));
        if valid(&first) {
            return Ok(first);
        }
        let plain = acq(0.0);
        plain.validate()?;
        Ok(plain)
    }

    /// The bucket step `step` draws from (module docs).
    pub fn bucket_of_step(&self, seed: u64, step: u64) -> usize {
        if self.buckets.len() <= 1 {
            return 0;
        }
        let total = self.len() as u64;
        let mut u = derive_seed(seed, step, TAG_BUCKET) % total.max(1);
        for (b, bucket) in self.buckets.iter().enumerate() {
            let n = bucket.set.len() as u64;
            if u < n {
                return b;
            }
            u -= n;
        }
        self.buckets.len() - 1
    }

    /// The batch of training step `step` for batch size `batch` under `seed` (module docs).
    pub fn step_batch(&self, batch: usize, seed: u64, step: u64, dev: &Device) -> Result<Batch> {
        let b = self.bucket_of_step(seed, step);
        let bucket = self
            .buckets
            .get(b)
            .ok_or_else(|| DiffusionError::Config("no training data".into()))?;
        let seed_b = if b == 0 {
            seed
        } else {
            derive_seed(seed, b as u64, TAG_BUCKET_ORDER)
        };
        let idx = batch_indices(bucket.set.len(), batch, seed_b, step);
        let plain = bucket.set.batch(&idx, step, dev)?;
        crate::augment::augment_batch(plain, &self.augment, seed, step)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use amri_core::fft::fft2c;
    use amri_core::C32;
    use amri_ops::coils::synthetic_maps;
    use ndarray::{Array2, Array3, Array4};

    /// A smooth complex test object `[rows, cols]` (disc with a ramp and a phase).
    fn object(rows: usize, cols: usize, k: usize) -> Array2<C32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            let (u, v) = (i as f32 / rows as f32 - 0.5, j as f32 / cols as f32 - 0.5);
            let m = if u * u + v * v < 0.12 {
                1.0 + 0.3 * u + 0.1 * k as f32
            } else {
                0.05
            };
            C32::from_polar(m, 2.0 * v)
        })
    }

    /// A line mask `[rows, cols]` along columns: 8 centre lines plus every `step`th one from
    /// `offset` (each slice its own mask).
    fn lines(rows: usize, cols: usize, step: usize, offset: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(_, j)| {
            let centre = (cols / 2 - 4..cols / 2 + 4).contains(&j);
            f32::from(u8::from(centre || j % step == offset))
        })
    }

    /// Measured k-space of `slices` slices with `coils` coils, each slice its own line mask,
    /// unmeasured samples 0, and the given reference.
    fn kspace(rows: usize, cols: usize, slices: usize, coils: usize, reference: bool) -> KSpace {
        let maps = synthetic_maps(coils, rows, cols, Some(1));
        let mut data = Array4::zeros((slices, coils, rows, cols));
        let mut mask = Array3::zeros((slices, rows, cols));
        for s in 0..slices {
            let m = lines(rows, cols, 3 + s, s % 3);
            let x = object(rows, cols, s);
            for c in 0..coils {
                let sx = if coils == 1 {
                    x.clone()
                } else {
                    &x * &maps.index_axis(Axis(0), c)
                };
                let y = fft2c(&sx) * m.mapv(|v| C32::new(v, 0.0));
                data.slice_mut(ndarray::s![s, c, .., ..]).assign(&y);
            }
            mask.slice_mut(ndarray::s![s, .., ..]).assign(&m);
        }
        let mut k = KSpace::new(data);
        k.mask = Some(mask);
        if reference {
            // poisoned: training must never read it
            k.reference = Some(Array3::from_elem((slices, rows, cols), f32::NAN));
        }
        k
    }

    fn further() -> FurtherParams {
        FurtherParams {
            delta: 0.3,
            mode: amri_ops::corruption::FurtherMode::PerStep,
            seed: 9,
        }
    }

    fn batch_bits(b: &Batch) -> Vec<u32> {
        let ts: Vec<&candle_core::Tensor> = match b {
            Batch::AmbientKspace {
                y,
                mask_a,
                mask_tilde,
            } => vec![y, mask_a, mask_tilde],
            Batch::AmbientMulticoil {
                y,
                maps,
                mask_a,
                mask_tilde,
            } => {
                vec![y, maps, mask_a, mask_tilde]
            }
            Batch::AmbientPixel {
                x_a,
                mask_a,
                mask_tilde,
            } => vec![x_a, mask_a, mask_tilde],
            _ => panic!("unexpected batch"),
        };
        ts.iter()
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .map(f32::to_bits)
            .collect()
    }

    #[test]
    fn each_scan_trains_on_its_own_mask_and_a_poisoned_reference_is_never_read() {
        let with = MeasuredFile::new("with.npz", kspace(32, 32, 3, 1, true)).unwrap();
        let without = MeasuredFile::new("without.npz", kspace(32, 32, 3, 1, false)).unwrap();
        let a = TrainingData::from_measured(&[with], further()).unwrap();
        let b = TrainingData::from_measured(std::slice::from_ref(&without), further()).unwrap();
        let dev = Device::Cpu;
        for step in 0..4 {
            let (ba, bb) = (
                a.step_batch(2, 5, step, &dev).unwrap(),
                b.step_batch(2, 5, step, &dev).unwrap(),
            );
            assert_eq!(batch_bits(&ba), batch_bits(&bb), "step {step}");
        }
        let set = a.sets().next().unwrap();
        for i in 0..3 {
            let (ma, mt) = set.masks(i, 1).unwrap();
            // A is the file's own mask for that slice
            assert_eq!(ma, without.mask.index_axis(Axis(0), i));
            // Ã ⊆ A and keeps the 8 centre (ACS) lines
            assert!(mt.iter().zip(ma.iter()).all(|(t, a)| t <= a));
            assert!((12..20).all(|j| mt[[0, j]] == 1.0));
        }
        // the masks differ between slices, so each scan has its own A
        assert_ne!(set.masks(0, 0).unwrap().0, set.masks(1, 0).unwrap().0);
    }

    #[test]
    fn augmented_stream_is_the_plain_stream_augmented_per_example_and_off_is_unchanged() {
        use crate::augment::{apply_to_batch, Augmentation};
        let f = MeasuredFile::new("mc.npz", kspace(32, 32, 3, 4, false)).unwrap();
        let plain = TrainingData::from_measured(std::slice::from_ref(&f), further()).unwrap();
        let off = plain.clone().with_augmentation(Augmentation::default());
        let aug = Augmentation::parse("flip,transpose,intensity").unwrap();
        let on = plain.clone().with_augmentation(aug);
        let dev = Device::Cpu;
        let mut changed = 0;
        for step in 0..6 {
            let p = plain.step_batch(2, 11, step, &dev).unwrap();
            // off: bit for bit the stream without augmentation
            assert_eq!(
                batch_bits(&off.step_batch(2, 11, step, &dev).unwrap()),
                batch_bits(&p)
            );
            // on: the same scans and Ã, each example under its own (seed, step, example) draw
            let a = on.step_batch(2, 11, step, &dev).unwrap();
            let draws: Vec<_> = (0..2).map(|b| aug.draw(11, step, b, true)).collect();
            assert_eq!(
                batch_bits(&a),
                batch_bits(&apply_to_batch(&p, &draws).unwrap())
            );
            assert_eq!(
                batch_bits(&a),
                batch_bits(&on.step_batch(2, 11, step, &dev).unwrap())
            );
            changed += usize::from(batch_bits(&a) != batch_bits(&p));
        }
        assert!(changed > 0);
    }

    #[test]
    fn sets_of_several_sizes_become_buckets_and_a_repeated_size_is_refused() {
        let set = |r: usize| {
            let f = MeasuredFile::new("f.npz", kspace(r, 32, 2, 1, false)).unwrap();
            let d = TrainingData::from_measured(&[f], further()).unwrap();
            let first = d.sets().next().unwrap().clone();
            first
        };
        let d = TrainingData::from_sets(vec![
            (set(32), vec!["a [axial, 1 mm]".into()]),
            (set(16), vec!["a [axial, 2 mm]".into()]),
        ])
        .unwrap();
        assert_eq!(d.shapes(), vec![(32, 32, 2), (16, 32, 2)]);
        let e = TrainingData::from_sets(vec![
            (set(16), vec!["x".into()]),
            (set(16), vec!["y".into()]),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains('y') && e.contains("matrix size"), "{e}");
        assert!(TrainingData::from_sets(Vec::new()).is_err());
    }

    #[test]
    fn multicoil_scans_get_maps_from_their_own_calibration_lines() {
        let f = MeasuredFile::new("mc.npz", kspace(32, 32, 2, 4, false)).unwrap();
        let d = TrainingData::from_measured(&[f], further()).unwrap();
        assert_eq!(d.coils(), 4);
        match d.step_batch(2, 0, 0, &Device::Cpu).unwrap() {
            Batch::AmbientMulticoil { maps, .. } => {
                assert_eq!(maps.dims(), &[2, 4, 2, 32, 32]);
                // ESPIRiT maps without crop: unit norm over coils inside the object
                let m = maps.sqr().unwrap().sum(1).unwrap().sum(1).unwrap();
                let centre = m.get(0).unwrap().get(16).unwrap().get(16).unwrap();
                let n = centre.to_scalar::<f32>().unwrap();
                assert!((n - 1.0).abs() < 1e-3, "Σ|S_c|² = {n}");
            }
            _ => panic!("expected a multi-coil batch"),
        }
    }

    #[test]
    fn mixed_matrix_sizes_are_bucketed_and_the_bucket_is_a_function_of_seed_and_step() {
        let big = MeasuredFile::new("big.npz", kspace(32, 32, 3, 1, false)).unwrap();
        let small = MeasuredFile::new("small.npz", kspace(16, 32, 2, 1, false)).unwrap();
        let d = TrainingData::from_measured(&[big, small], further()).unwrap();
        assert_eq!(d.shapes(), vec![(32, 32, 3), (16, 32, 2)]);
        assert_eq!(d.len(), 5);
        let dev = Device::Cpu;
        let mut seen = [0usize; 2];
        for step in 0..40 {
            let b = d.bucket_of_step(7, step);
            seen[b] += 1;
            let batch = d.step_batch(2, 7, step, &dev).unwrap();
            let rows = if b == 0 { 32 } else { 16 };
            match &batch {
                Batch::AmbientKspace { y, .. } => assert_eq!(y.dims(), &[2, 2, rows, 32]),
                _ => panic!("expected a k-space batch"),
            }
            // pure: the same (seed, step) gives the same batch
            let again = d.step_batch(2, 7, step, &dev).unwrap();
            assert_eq!(batch_bits(&batch), batch_bits(&again));
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
        d.check_size_multiple(16).unwrap();
        let err = d.check_size_multiple(32).unwrap_err().to_string();
        assert!(err.contains("small.npz") && err.contains("16×32"), "{err}");
    }

    #[test]
    fn bad_measured_inputs_are_refused_naming_the_file() {
        let msg = |r: Result<MeasuredFile>| r.unwrap_err().to_string();
        let mut k = kspace(16, 16, 1, 1, false);
        k.mask = None;
        let e = msg(MeasuredFile::new("nomask.npz", k));
        assert!(e.contains("nomask.npz") && e.contains("mask"), "{e}");

        let mut k = kspace(16, 16, 1, 1, false);
        k.mask = Some(Array3::ones((1, 16, 16)));
        let e = msg(MeasuredFile::new("full.npz", k));
        assert!(e.contains("full.npz") && e.contains("fully sampled"), "{e}");

        let mut k = kspace(16, 16, 1, 1, false);
        k.data[[0, 0, 8, 8]] = C32::new(f32::NAN, 0.0);
        let e = msg(MeasuredFile::new("nan.npz", k));
        assert!(e.contains("nan.npz") && e.contains("NaN"), "{e}");

        let mut k = kspace(16, 16, 1, 1, false);
        k.domain = Some(Domain::Projection);
        let e = msg(MeasuredFile::new("proj.npz", k));
        assert!(e.contains("proj.npz") && e.contains("projection"), "{e}");

        // multi-coil without calibration lines: no centre line measured
        let mut k = kspace(16, 16, 1, 2, false);
        let m = Array2::from_shape_fn((16, 16), |(_, j)| f32::from(u8::from(j % 2 == 1)));
        k.mask = Some(m.clone().insert_axis(Axis(0)));
        let e = msg(MeasuredFile::new("noacs.npz", k));
        assert!(e.contains("noacs.npz") && e.contains("ACS"), "{e}");

        let a = MeasuredFile::new("one.npz", kspace(16, 16, 1, 1, false)).unwrap();
        let b = MeasuredFile::new("four.npz", kspace(16, 16, 1, 4, false)).unwrap();
        let e = TrainingData::from_measured(&[a, b], further())
            .unwrap_err()
            .to_string();
        assert!(e.contains("four.npz") && e.contains("coil"), "{e}");
    }

    #[test]
    fn each_file_is_normalised_by_its_own_measured_data() {
        // the same scans, one file 7× brighter: the same normalised batches (to rounding) and a
        // 7× scale, since each file's scale comes from its own measured data
        let a = kspace(32, 32, 2, 1, false);
        let mut b = a.clone();
        b.data.mapv_inplace(|v| v * 7.0);
        let fa = MeasuredFile::new("a.npz", a).unwrap();
        let fb = MeasuredFile::new("b.npz", b).unwrap();
        let da = TrainingData::from_measured(&[fa], further()).unwrap();
        let db = TrainingData::from_measured(&[fb], further()).unwrap();
        let (sa, sb) = (
            da.sets().next().unwrap().scales()[0],
            db.sets().next().unwrap().scales()[0],
        );
        assert!((sb / sa - 7.0).abs() < 1e-5, "{sa} {sb}");
        for i in 0..2 {
            let (ya, yb) = (
                da.sets().next().unwrap().measured(i).unwrap(),
                db.sets().next().unwrap().measured(i).unwrap(),
            );
            let peak = ya.iter().fold(0f32, |m, v| m.max(v.norm()));
            for (x, y) in ya.iter().zip(yb) {
                assert!((x - y).norm() <= 1e-5 * peak);
            }
        }
    }
}
