//! A training run's folder beside its checkpoints: the rule a resumed run must follow
//! ([`resume_mismatch`]) and the loss log `loss.csv`.
//!
//! **Resume.** A run continues bitwise only under the protocol, batch size and objective its
//! card's [`TrainingRecord`] names: the data stream depends on all three. Settings given again
//! on resume must equal them (left out, the run's own are used).
//!
//! The log has the header `step,loss,lr,grad_norm,seconds` and one row per optimisation step:
//! the 0-based step, the loss before the update, the learning rate, the global gradient norm
//! before clipping and the wall-clock seconds since the run started (summed over resumed
//! sessions, 3 decimals). A resumed run keeps the rows of the steps its checkpoint holds and
//! drops the others, which it retrains ([`read_loss_log`]).

use std::path::Path;

use amri_ops::simulate::Acquisition;

use crate::checkpoint::TrainingRecord;
use crate::data::TrainObjective;
use crate::error::{DiffusionError, Result};

/// A setting that differs from the one a run was trained with, so that the run could not
/// continue exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeMismatch {
    /// Another protocol (name or acquisition) than the run's.
    Protocol {
        /// The run's protocol name.
        run: String,
        /// The protocol name given now.
        given: String,
    },
    /// Another batch size than the run's (the data order depends on it).
    Batch {
        /// The run's batch size.
        run: usize,
        /// The batch size given now.
        given: usize,
    },
    /// Another training objective than the run's.
    Objective {
        /// The run's objective.
        run: TrainObjective,
        /// The objective given now.
        given: TrainObjective,
    },
}

/// The first setting that keeps the run recorded in `record` from continuing exactly: the
/// protocol (`protocol` named, with `acquisition`) must be the run's, and a batch size or
/// objective given (`Some`) must equal the run's. `None` when the run can continue.
pub fn resume_mismatch(
    record: &TrainingRecord,
    protocol: &str,
    acquisition: &Acquisition,
    batch: Option<usize>,
    objective: Option<TrainObjective>,
) -> Option<ResumeMismatch> {
    if record.protocol != protocol || record.acquisition != *acquisition {
        return Some(ResumeMismatch::Protocol {
            run: record.protocol.clone(),
            given: protocol.to_owned(),
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
    None
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
        let acq: Acquisition = serde_json::from_value(serde_json::json!({
            "corruption": {"type": "pixel", "p": 0.9}, "delta": 0.2
        }))?;
        let record = TrainingRecord {
            protocol: "p".into(),
            acquisition: acq.clone(),
            batch: 8,
            objective: TrainObjective::Ambient,
            slices: 3,
            base: None,
            measured: None,
            augment: Default::default(),
            views: None,
            finetune: None,
            matrices: None,
        };
        let amb = Some(TrainObjective::Ambient);
        assert_eq!(resume_mismatch(&record, "p", &acq, None, None), None);
        assert_eq!(resume_mismatch(&record, "p", &acq, Some(8), amb), None);
        let other = ResumeMismatch::Protocol {
            run: "p".into(),
            given: "q".into(),
        };
        assert_eq!(resume_mismatch(&record, "q", &acq, None, None), Some(other));
        let mut changed = acq.clone();
        changed.delta = 0.3;
        assert!(matches!(
            resume_mismatch(&record, "p", &changed, None, None),
            Some(ResumeMismatch::Protocol { .. })
        ));
        assert_eq!(
            resume_mismatch(&record, "p", &acq, Some(2), amb),
            Some(ResumeMismatch::Batch { run: 8, given: 2 })
        );
        assert_eq!(
            resume_mismatch(&record, "p", &acq, None, Some(TrainObjective::Tweedie)),
            Some(ResumeMismatch::Objective {
                run: TrainObjective::Ambient,
                given: TrainObjective::Tweedie
            })
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
