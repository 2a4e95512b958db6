//! A training run's folder beside its checkpoints: the rules a resumed run must follow
//! ([`check_run_folder`], [`resume_mismatch`], [`ignored_on_resume`]) and the loss log
//! `loss.csv`.
//!
//! **Resume.** A folder that holds a run (a `latest` file) is continued only on request, and
//! only a folder that holds one can be. A run continues bitwise only under the protocol, batch
//! size, objective and measured inputs its card's [`TrainingRecord`] names: the data stream
//! depends on all of them, so another value is an error ([`ResumeMismatch`], whose message names
//! the flag). The optimisation settings (seed, learning rate, warm-up, EMA, loss weights, preset,
//! preconditioning, frozen layers, base) are the checkpoint's: other values given for them are
//! ignored, and [`ignored_on_resume`] lists them for a warning. The messages name the flags of
//! `amri train` / `amri finetune`.
//!
//! The log has the header `step,loss,lr,grad_norm,seconds` and one row per optimisation step:
//! the 0-based step, the loss before the update, the learning rate, the global gradient norm
//! before clipping and the wall-clock seconds since the run started (summed over resumed
//! sessions, 3 decimals). A resumed run keeps the rows of the steps its checkpoint holds and
//! drops the others, which it retrains ([`read_loss_log`]).

use std::path::{Path, PathBuf};

use amri_ops::simulate::Acquisition;

use crate::checkpoint::{MeasuredInput, ModelCard, TrainingRecord, LATEST_FILE};
use crate::data::TrainObjective;
use crate::error::{DiffusionError, Result};
use crate::precond::PrecondKind;

/// Why a run folder cannot be used as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunFolderError {
    /// The folder already holds a run and `--resume` was not given.
    #[error("{} already holds a training run; pass --resume to continue it or choose another --out", .0.display())]
    Occupied(PathBuf),
    /// `--resume` was given but the folder holds no checkpoint.
    #[error("--resume: {} holds no checkpoint (no `latest` file)", .0.display())]
    NoCheckpoint(PathBuf),
}

/// Whether the run folder `out` can be used: a folder holding a run (its `latest` file) only
/// with `resume`, and `resume` only on a folder holding one.
pub fn check_run_folder(out: &Path, resume: bool) -> std::result::Result<(), RunFolderError> {
    let has_run = out.join(LATEST_FILE).is_file();
    if has_run && !resume {
        return Err(RunFolderError::Occupied(out.to_path_buf()));
    }
    if resume && !has_run {
        return Err(RunFolderError::NoCheckpoint(out.to_path_buf()));
    }
    Ok(())
}

/// A setting that differs from the one a run was trained with, so that the run could not
/// continue exactly; the message says which flag to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResumeMismatch {
    /// Another protocol (name or acquisition) than the run's.
    #[error("--resume: the run was trained under protocol {run:?}, not {given:?}")]
    Protocol {
        /// The run's protocol name.
        run: String,
        /// The protocol name given now.
        given: String,
    },
    /// Other settings of a run on measured files (the acquisition they describe differs:
    /// `--delta`, `--further` or the data).
    #[error(
        "--resume: the run was trained under {run:?}, not on these measured files with \
         {given:?} settings (--delta, --further or the data differ)"
    )]
    MeasuredSettings {
        /// The run's protocol name.
        run: String,
        /// The protocol name given now.
        given: String,
    },
    /// Another batch size than the run's (the data order depends on it).
    #[error(
        "--resume: the run used --batch {run}, not {given}; the data order depends on it, so \
         the run could not continue exactly (leave --batch out or give {run})"
    )]
    Batch {
        /// The run's batch size.
        run: usize,
        /// The batch size given now.
        given: usize,
    },
    /// Another training objective than the run's.
    #[error(
        "--resume: the run used --objective {run:?}, not {given:?}; leave --objective out or \
         give the same"
    )]
    Objective {
        /// The run's objective.
        run: TrainObjective,
        /// The objective given now.
        given: TrainObjective,
    },
    /// Other measured inputs (files, their order or sizes) than the run's, or measured files
    /// for a run on image volumes and the reverse.
    #[error(
        "--resume: the run was trained on other inputs ({}); give the same files in the same \
         order",
        describe_inputs(.run.as_deref())
    )]
    Inputs {
        /// The run's measured inputs (`None`: image volumes under a protocol).
        run: Option<Vec<MeasuredInput>>,
    },
}

/// The measured files of a record, for a message.
fn describe_inputs(inputs: Option<&[MeasuredInput]>) -> String {
    match inputs {
        None => "image volumes under a protocol".into(),
        Some(v) => v
            .iter()
            .map(|i| i.file.clone())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The first setting that keeps the run recorded in `record` from continuing exactly: the
/// protocol (`protocol` named, with `acquisition`) must be the run's
/// ([`ResumeMismatch::MeasuredSettings`] when the data now are `measured` files), a batch size or
/// objective given (`Some`) must equal the run's, and the `measured` inputs (`None`: image
/// volumes) must be the run's. `None` when the run can continue.
pub fn resume_mismatch(
    record: &TrainingRecord,
    protocol: &str,
    acquisition: &Acquisition,
    batch: Option<usize>,
    objective: Option<TrainObjective>,
    measured: Option<&[MeasuredInput]>,
) -> Option<ResumeMismatch> {
    if record.protocol != protocol || record.acquisition != *acquisition {
        let (run, given) = (record.protocol.clone(), protocol.to_owned());
        return Some(if measured.is_some() {
            ResumeMismatch::MeasuredSettings { run, given }
        } else {
            ResumeMismatch::Protocol { run, given }
        });
    }
    if let Some(given) = batch.filter(|b| *b != record.batch) {
        return Some(ResumeMismatch::Batch {
            run: record.batch,
            given,
        });
    }
    if let Some(given) = objective.filter(|o| *o != record.objective) {
        return Some(ResumeMismatch::Objective {
            run: record.objective,
            given,
        });
    }
    if record.measured.as_deref() != measured {
        return Some(ResumeMismatch::Inputs {
            run: record.measured.clone(),
        });
    }
    None
}

/// The optimisation settings given again on resume (`None`: not given), which the run takes
/// from its checkpoint instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResumeFlags {
    /// `--warmup` (learning-rate warm-up steps).
    pub warmup: Option<usize>,
    /// `--ema` (EMA decay per step).
    pub ema: Option<f64>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--consistency` (weight of the consistency loss).
    pub consistency: Option<f64>,
    /// `--hidden-weight` (loss weight of the hidden samples).
    pub hidden_weight: Option<f64>,
    /// `--sigma-log-mean` (mean of ln σ of the training noise levels).
    pub sigma_log_mean: Option<f64>,
    /// `--sigma-log-std` (standard deviation of ln σ).
    pub sigma_log_std: Option<f64>,
    /// `--sigma-mix` (the second log-normal of the training noise levels).
    pub sigma_mix: Option<crate::precond::SigmaMix>,
    /// `amri train --preset`.
    pub preset: Option<String>,
    /// `--lr` (peak learning rate).
    pub lr: Option<f64>,
    /// `amri train --precond`.
    pub precond: Option<PrecondKind>,
    /// `amri train --network-input`.
    pub network_input: Option<crate::sense_input::NetworkInput>,
    /// `amri train --space-to-depth`.
    pub space_to_depth: Option<usize>,
    /// `amri train --base-channels`.
    pub base_channels: Option<usize>,
    /// `amri finetune --freeze-down`: the parameter prefixes it freezes.
    pub freeze: Option<Vec<String>>,
    /// `amri finetune --base`: the base checkpoint as shown (compared with the record's base).
    pub base: Option<String>,
    /// `amri finetune --adapt/--rank/--alpha` when any is given: the adaptation and LoRA
    /// settings they ask for (compared with the record's `finetune.adapt` and the card's LoRA).
    pub adapt: Option<(crate::adapt::Adapt, Option<crate::adapt::LoraConfig>)>,
    /// `amri finetune --train-layers` when given: its value and the prefixes it freezes.
    pub train_layers: Option<(usize, Vec<String>)>,
}

/// A flag a resumed run does not honour: given with another value than the run's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredFlag {
    /// The flag, e.g. `--lr`.
    pub flag: &'static str,
    /// The value given now.
    pub given: String,
    /// The value the run continues with (its checkpoint's).
    pub used: String,
}

impl std::fmt::Display for IgnoredFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--resume: {} {} ignored; the run continues with its checkpoint's {} (exact resume)",
            self.flag, self.given, self.used
        )
    }
}

/// The flags of `flags` that the run of `card` / `record` does not honour on resume (given,
/// and different from the checkpoint's values), in the order `--warmup`, `--ema`, `--seed`,
/// `--consistency`, `--hidden-weight`, `--sigma-log-mean`, `--sigma-log-std`, `--preset`, `--lr`,
/// `--precond`, `--network-input`, `--space-to-depth`, `--base-channels`, `--freeze-down`,
/// `--base`, `--adapt`, `--train-layers`. A `base` given is compared with the record's base (none: `"none"`).
pub fn ignored_on_resume(
    flags: &ResumeFlags,
    card: &ModelCard,
    record: &TrainingRecord,
) -> Vec<IgnoredFlag> {
    let mut v = Vec::new();
    let mut push = |flag, given: String, used: String| v.push(IgnoredFlag { flag, given, used });
    let t = &card.train;
    if let Some(w) = flags.warmup.filter(|w| *w != t.warmup_steps) {
        push("--warmup", w.to_string(), t.warmup_steps.to_string());
    }
    if let Some(e) = flags.ema.filter(|e| *e != t.ema_decay) {
        push("--ema", e.to_string(), t.ema_decay.to_string());
    }
    if let Some(s) = flags.seed.filter(|s| *s != t.seed) {
        push("--seed", s.to_string(), t.seed.to_string());
    }
    if let Some(w) = flags.consistency.filter(|w| *w != t.consistency_weight) {
        push(
            "--consistency",
            w.to_string(),
            t.consistency_weight.to_string(),
        );
    }
    if let Some(w) = flags.hidden_weight.filter(|w| *w != t.hidden_weight) {
        push(
            "--hidden-weight",
            w.to_string(),
            t.hidden_weight.to_string(),
        );
    }
    if let Some(m) = flags.sigma_log_mean.filter(|m| *m != t.sigma.p_mean) {
        push(
            "--sigma-log-mean",
            m.to_string(),
            t.sigma.p_mean.to_string(),
        );
    }
    if let Some(s) = flags.sigma_log_std.filter(|s| *s != t.sigma.p_std) {
        push("--sigma-log-std", s.to_string(), t.sigma.p_std.to_string());
    }
    if let Some(m) = flags.sigma_mix.filter(|m| Some(*m) != t.sigma.mix) {
        push(
            "--sigma-mix",
            m.to_string(),
            t.sigma
                .mix
                .map_or_else(|| "none".to_string(), |u| u.to_string()),
        );
    }
    if let Some(p) = flags
        .preset
        .as_ref()
        .filter(|p| card.preset.as_deref() != Some(p.as_str()))
    {
        push("--preset", p.clone(), format!("{:?}", card.preset));
    }
    if let Some(lr) = flags.lr.filter(|lr| *lr != t.lr) {
        push("--lr", lr.to_string(), t.lr.to_string());
    }
    if let Some(k) = flags.precond.filter(|k| *k != card.denoiser.precond.kind) {
        push(
            "--precond",
            format!("{k:?}"),
            format!("{:?}", card.denoiser.precond.kind),
        );
    }
    if let Some(k) = flags.network_input.filter(|k| *k != card.denoiser.input) {
        push(
            "--network-input",
            k.to_string(),
            card.denoiser.input.to_string(),
        );
    }
    let unet = &card.denoiser.unet;
    if let Some(f) = flags.space_to_depth.filter(|f| *f != unet.space_to_depth) {
        push(
            "--space-to-depth",
            f.to_string(),
            unet.space_to_depth.to_string(),
        );
    }
    if let Some(c) = flags.base_channels.filter(|c| *c != unet.base_channels) {
        push(
            "--base-channels",
            c.to_string(),
            unet.base_channels.to_string(),
        );
    }
    if flags.freeze.as_ref().is_some_and(|f| t.freeze != *f) {
        push(
            "--freeze-down",
            "set".into(),
            format!("frozen prefixes {:?}", t.freeze),
        );
    }
    if let Some(b) = flags
        .base
        .as_ref()
        .filter(|b| record.base.as_deref() != Some(b.as_str()))
    {
        push(
            "--base",
            b.clone(),
            record.base.clone().unwrap_or_else(|| "none".into()),
        );
    }
    if let Some((adapt, lora)) = &flags.adapt {
        let run_adapt = record
            .finetune
            .as_ref()
            .map(|f| f.adapt)
            .unwrap_or(crate::adapt::Adapt::Full);
        if *adapt != run_adapt || t.lora != *lora {
            push(
                "--adapt",
                format!("{adapt:?} {lora:?}"),
                format!("{run_adapt:?} {:?}", t.lora),
            );
        }
    }
    if let Some((n, _)) = flags.train_layers.as_ref().filter(|(_, f)| t.freeze != *f) {
        push(
            "--train-layers",
            n.to_string(),
            format!("frozen prefixes {:?}", t.freeze),
        );
    }
    v
}

/// Name of the loss log in a run folder.
pub const LOSS_CSV: &str = "loss.csv";

/// Header line of the loss log.
const HEADER: &str = "step,loss,lr,grad_norm,seconds";

/// One row of the loss log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogRow {
    /// Optimisation step (0-based).
    pub step: usize,
    /// Loss before the update.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f32,
    /// Wall-clock seconds since the run started, summed over resumed sessions.
    pub seconds: f64,
}

/// The loss log's text for `rows` (header and one line per row).
pub fn format_loss_log(rows: &[LogRow]) -> String {
    let mut s = format!("{HEADER}\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{:.3}\n",
            r.step, r.loss, r.lr, r.grad_norm, r.seconds
        ));
    }
    s
}

/// The rows of the loss log text `text` (read from `path`, named in errors) with `step < upto`
/// (rows after a checkpoint are dropped: a resumed run retrains those steps). A row that is not
/// five numbers is an error naming the file and line.
pub fn parse_loss_log(text: &str, path: &Path, upto: usize) -> Result<Vec<LogRow>> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || {
            DiffusionError::Config(format!(
                "{}:{}: malformed row {line:?}",
                path.display(),
                n + 1
            ))
        };
        if f.len() != 5 {
            return Err(bad());
        }
        let row = LogRow {
            step: f[0].parse().map_err(|_| bad())?,
            loss: f[1].parse().map_err(|_| bad())?,
            lr: f[2].parse().map_err(|_| bad())?,
            grad_norm: f[3].parse().map_err(|_| bad())?,
            seconds: f[4].parse().map_err(|_| bad())?,
        };
        if row.step < upto {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The rows of the loss log at `path` with `step < upto` ([`parse_loss_log`]); a missing log
/// is empty.
pub fn read_loss_log(path: &Path, upto: usize) -> Result<Vec<LogRow>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_loss_log(&text, path, upto),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(DiffusionError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_resumes_only_under_its_own_protocol_batch_and_objective() -> Result<()> {
        let record = record()?;
        let acq = record.acquisition.clone();
        let amb = Some(TrainObjective::Ambient);
        assert_eq!(resume_mismatch(&record, "p", &acq, None, None, None), None);
        assert_eq!(
            resume_mismatch(&record, "p", &acq, Some(8), amb, None),
            None
        );
        let other = ResumeMismatch::Protocol {
            run: "p".into(),
            given: "q".into(),
        };
        assert_eq!(
            resume_mismatch(&record, "q", &acq, None, None, None),
            Some(other)
        );
        let mut changed = acq.clone();
        changed.delta = 0.3;
        assert!(matches!(
            resume_mismatch(&record, "p", &changed, None, None, None),
            Some(ResumeMismatch::Protocol { .. })
        ));
        assert_eq!(
            resume_mismatch(&record, "p", &acq, Some(2), amb, None),
            Some(ResumeMismatch::Batch { run: 8, given: 2 })
        );
        assert_eq!(
            resume_mismatch(
                &record,
                "p",
                &acq,
                None,
                Some(TrainObjective::Tweedie),
                None
            ),
            Some(ResumeMismatch::Objective {
                run: TrainObjective::Ambient,
                given: TrainObjective::Tweedie
            })
        );
        Ok(())
    }

    fn record() -> Result<TrainingRecord> {
        Ok(TrainingRecord {
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
            matrices: None,
        })
    }

    fn input(file: &str) -> MeasuredInput {
        MeasuredInput {
            file: file.into(),
            slices: 2,
            coils: 1,
            matrix: [8, 8],
        }
    }

    #[test]
    fn each_resume_mismatch_gives_its_message_and_a_match_passes() -> Result<()> {
        let rec = record()?;
        let acq = rec.acquisition.clone();
        let msg = |m: Option<ResumeMismatch>| m.map(|m| m.to_string());
        // a match passes, with or without the settings given again
        assert_eq!(resume_mismatch(&rec, "p", &acq, None, None, None), None);
        let amb = Some(TrainObjective::Ambient);
        assert_eq!(resume_mismatch(&rec, "p", &acq, Some(8), amb, None), None);
        assert_eq!(
            msg(resume_mismatch(&rec, "q", &acq, None, None, None)).as_deref(),
            Some(r#"--resume: the run was trained under protocol "p", not "q""#)
        );
        assert_eq!(
            msg(resume_mismatch(
                &rec,
                "measured",
                &acq,
                None,
                None,
                Some(&[input("a.npz")])
            ))
            .as_deref(),
            Some(
                r#"--resume: the run was trained under "p", not on these measured files with "measured" settings (--delta, --further or the data differ)"#
            )
        );
        assert_eq!(
            msg(resume_mismatch(&rec, "p", &acq, Some(4), None, None)).as_deref(),
            Some(
                "--resume: the run used --batch 8, not 4; the data order depends on it, so the \
                 run could not continue exactly (leave --batch out or give 8)"
            )
        );
        assert_eq!(
            msg(resume_mismatch(
                &rec,
                "p",
                &acq,
                None,
                Some(TrainObjective::Clean),
                None
            ))
            .as_deref(),
            Some(
                "--resume: the run used --objective Ambient, not Clean; leave --objective out or \
                 give the same"
            )
        );
        // measured inputs: the same files in the same order pass, others do not
        let mut measured = rec.clone();
        measured.protocol = "measured".into();
        measured.measured = Some(vec![input("a.npz"), input("b.npz")]);
        let same = [input("a.npz"), input("b.npz")];
        let swapped = [input("b.npz"), input("a.npz")];
        assert_eq!(
            resume_mismatch(&measured, "measured", &acq, None, None, Some(&same)),
            None
        );
        assert_eq!(
            msg(resume_mismatch(
                &measured,
                "measured",
                &acq,
                None,
                None,
                Some(&swapped)
            ))
            .as_deref(),
            Some(
                "--resume: the run was trained on other inputs (a.npz, b.npz); give the same \
                 files in the same order"
            )
        );
        assert_eq!(
            msg(resume_mismatch(&rec, "p", &acq, None, None, Some(&same))).as_deref(),
            Some(
                "--resume: the run was trained on other inputs (image volumes under a protocol); \
                 give the same files in the same order"
            )
        );
        Ok(())
    }

    #[test]
    fn flags_given_on_resume_with_other_values_are_listed_in_order() -> Result<()> {
        let mut rec = record()?;
        let card = ModelCard {
            format: "amri-diffusion/1".into(),
            amri_version: "0".into(),
            preset: Some("tiny".into()),
            denoiser: crate::precond::DenoiserConfig::complex_preset("tiny", 0.5)?,
            objective: crate::train::Objective::AmbientKspace,
            record: None,
            steps: 0,
            seed: 0,
            train: crate::checkpoint::TrainConfig::default(),
            normalisation: crate::checkpoint::IntensityNorm::MeasuredPercentile,
        };
        let t = &card.train;
        // nothing given, or every value equal to the checkpoint's: nothing ignored
        assert!(ignored_on_resume(&ResumeFlags::default(), &card, &rec).is_empty());
        let same = ResumeFlags {
            warmup: Some(t.warmup_steps),
            ema: Some(t.ema_decay),
            seed: Some(t.seed),
            consistency: Some(t.consistency_weight),
            hidden_weight: Some(t.hidden_weight),
            sigma_log_mean: Some(t.sigma.p_mean),
            sigma_log_std: Some(t.sigma.p_std),
            sigma_mix: t.sigma.mix,
            preset: Some("tiny".into()),
            lr: Some(t.lr),
            precond: Some(card.denoiser.precond.kind),
            network_input: Some(card.denoiser.input),
            space_to_depth: Some(card.denoiser.unet.space_to_depth),
            base_channels: Some(card.denoiser.unet.base_channels),
            freeze: Some(t.freeze.clone()),
            base: None,
            adapt: Some((crate::adapt::Adapt::Full, t.lora)),
            train_layers: Some((2, t.freeze.clone())),
        };
        assert!(ignored_on_resume(&same, &card, &rec).is_empty());
        // each differing flag once, in order, with the value given and the one used
        let other_kind = match card.denoiser.precond.kind {
            PrecondKind::Edm => PrecondKind::Ambient,
            _ => PrecondKind::Edm,
        };
        let differ = ResumeFlags {
            warmup: Some(t.warmup_steps + 1),
            ema: Some(0.5),
            seed: Some(t.seed + 7),
            consistency: Some(t.consistency_weight + 1.0),
            hidden_weight: Some(t.hidden_weight + 1.0),
            sigma_log_mean: Some(-2.5),
            sigma_log_std: Some(t.sigma.p_std + 0.5),
            sigma_mix: Some(crate::precond::SigmaMix {
                fraction: 0.5,
                p_mean: -5.0,
                p_std: 0.5,
            }),
            preset: Some("base".into()),
            lr: Some(t.lr * 2.0),
            precond: Some(other_kind),
            network_input: Some(crate::sense_input::NetworkInput::Sense {
                iterations: 3,
                lambda: 0.0,
            }),
            space_to_depth: Some(4),
            base_channels: Some(64),
            freeze: Some(vec!["enc.".into()]),
            base: Some("runs/base".into()),
            adapt: Some((crate::adapt::Adapt::LastLayers, t.lora)),
            train_layers: Some((1, vec!["enc.".into()])),
        };
        let got = ignored_on_resume(&differ, &card, &rec);
        let flags: Vec<&str> = got.iter().map(|f| f.flag).collect();
        assert_eq!(
            flags,
            [
                "--warmup",
                "--ema",
                "--seed",
                "--consistency",
                "--hidden-weight",
                "--sigma-log-mean",
                "--sigma-log-std",
                "--sigma-mix",
                "--preset",
                "--lr",
                "--precond",
                "--network-input",
                "--space-to-depth",
                "--base-channels",
                "--freeze-down",
                "--base",
                "--adapt",
                "--train-layers"
            ]
        );
        assert_eq!(got[1].given, "0.5");
        assert_eq!(got[1].used, t.ema_decay.to_string());
        assert_eq!(got[5].given, "-2.5");
        assert_eq!(got[5].used, "-1.2");
        assert_eq!(got[7].given, "0.5:-5:0.5");
        assert_eq!(got[7].used, "none");
        assert_eq!(got[8].used, r#"Some("tiny")"#);
        assert_eq!(got[11].given, "sense:3:0");
        assert_eq!(got[11].used, "adjoint");
        assert_eq!(got[12].used, "1");
        assert_eq!(got[13].given, "64");
        assert_eq!(got[15].used, "none");
        assert_eq!(
            got[2].to_string(),
            format!(
                "--resume: --seed {} ignored; the run continues with its checkpoint's {} (exact \
                 resume)",
                t.seed + 7,
                t.seed
            )
        );
        // a fine-tuned run's own base is honoured
        rec.base = Some("runs/base".into());
        let base_only = ResumeFlags {
            base: Some("runs/base".into()),
            ..Default::default()
        };
        assert!(ignored_on_resume(&base_only, &card, &rec).is_empty());
        Ok(())
    }

    #[test]
    fn a_run_folder_is_continued_only_on_request() -> Result<()> {
        let d = tempfile::tempdir().map_err(|source| DiffusionError::Io {
            path: "tempdir".into(),
            source,
        })?;
        let out = d.path();
        assert_eq!(check_run_folder(out, false), Ok(()));
        assert_eq!(
            check_run_folder(out, true).map_err(|e| e.to_string()),
            Err(format!(
                "--resume: {} holds no checkpoint (no `latest` file)",
                out.display()
            ))
        );
        std::fs::write(out.join(LATEST_FILE), "ckpt-1").map_err(|source| DiffusionError::Io {
            path: out.join(LATEST_FILE),
            source,
        })?;
        assert_eq!(check_run_folder(out, true), Ok(()));
        assert_eq!(
            check_run_folder(out, false).map_err(|e| e.to_string()),
            Err(format!(
                "{} already holds a training run; pass --resume to continue it or choose \
                 another --out",
                out.display()
            ))
        );
        Ok(())
    }

    #[test]
    fn loss_log_round_trips_and_drops_rows_past_the_checkpoint() -> Result<()> {
        let rows: Vec<LogRow> = (0..4)
            .map(|k| LogRow {
                step: k,
                loss: 0.5 / (k + 1) as f32,
                lr: 1e-3 * (k + 1) as f64,
                grad_norm: 0.25 * k as f32,
                seconds: 1.5 * k as f64,
            })
            .collect();
        let text = format_loss_log(&rows);
        assert!(text.starts_with("step,loss,lr,grad_norm,seconds\n0,0.5,0.001,0,0.000\n"));
        let p = Path::new("run/loss.csv");
        assert_eq!(parse_loss_log(&text, p, 10)?, rows);
        assert_eq!(parse_loss_log(&text, p, 2)?, rows[..2].to_vec());
        let e = parse_loss_log("h\n1,2,3\n", p, 10)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("run/loss.csv:2: malformed row"), "{e}");
        assert_eq!(
            read_loss_log(Path::new("/no/such/loss.csv"), 5)?,
            Vec::new()
        );
        Ok(())
    }
}
