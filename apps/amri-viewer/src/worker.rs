//! Reconstructions on a background thread: simulate (when asked), estimate coil maps, run each
//! method, and report progress, results and errors through a channel. The UI polls
//! [`Worker::poll`] every frame and never blocks; [`Worker::cancel`] stops the solvers at their
//! next iteration.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use amri_core::{Affine, KSpace, Volume, C32};
use amri_diffusion::sample::Prior;
use amri_ops::simulate::Acquisition;
use amri_pipeline::{Overrides, Plan};
use amri_protocol::Method;
use amri_recon::app;
use ndarray::{s, Array3, Array4, Axis};

use crate::error::{Result, ViewerError};
use crate::study::ReconResult;

/// A reconstruction method the viewer can run: a classical method of `amri-recon`, or one of
/// the learned-prior methods of `amri-diffusion` (they need a model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReconMethod {
    /// A protocol method ([`Method::EVERY`]: zero-filled, cg-sense, l1-wavelet, tv, one-step,
    /// iterative).
    Classical(Method),
}

impl ReconMethod {
    /// Every method offered, in panel order: the classical ones, then one-step and iterative.
    pub fn all() -> Vec<ReconMethod> {
        Method::EVERY
            .into_iter()
            .map(ReconMethod::Classical)
            .collect()
    }

    /// The protocol method.
    pub fn method(self) -> Method {
        let ReconMethod::Classical(m) = self;
        m
    }

    /// Name shown on panels and checkboxes.
    pub fn name(self) -> &'static str {
        self.method().name()
    }

    /// Whether the method needs a learned prior (a model folder).
    pub fn is_prior(self) -> bool {
        self.method().is_prior()
    }

    /// Whether the method has a regularisation weight λ.
    pub fn has_lambda(self) -> bool {
        matches!(self.method(), Method::L1Wavelet | Method::Tv)
    }

    /// Whether the method iterates (iterations or sampler steps).
    pub fn iterates(self) -> bool {
        matches!(
            self.method(),
            Method::CgSense | Method::L1Wavelet | Method::Tv | Method::Iterative
        )
    }
}

/// Parameters of one method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MethodParams {
    /// Regularisation weight λ (BART `pics -r` scaling), when the method has one.
    pub lambda: f32,
    /// Iterations of iterative methods; sampler steps (network calls per sample) of
    /// `iterative`.
    pub iterations: usize,
    /// Posterior samples of `iterative` (their mean is the image, their spread the std map).
    pub samples: usize,
    /// Seed (wavelet cycle spinning, posterior sampling).
    pub seed: u64,
}

impl MethodParams {
    /// The defaults of `m`, which are the reconstruction plan's ([`amri_pipeline::Params`]):
    /// λ = 0.005 for l1-wavelet/TV, 0 for CG-SENSE; 100 iterations (30 for CG-SENSE); the
    /// posterior sampler's steps and samples for `iterative`.
    pub fn default_for(m: ReconMethod) -> Self {
        Self::of_plan(&Plan::for_method(m.method()))
    }

    /// The panel values of `plan`'s method (for `iterative`, `iterations` holds the sampler
    /// steps).
    pub fn of_plan(plan: &Plan) -> Self {
        let p = plan.params();
        MethodParams {
            lambda: p.lambda,
            iterations: if plan.method() == Method::Iterative {
                p.steps
            } else {
                p.iterations
            },
            samples: p.samples,
            seed: p.seed,
        }
    }

    /// The reconstruction plan of `method` with these values; `model` is the prior's folder
    /// for one-step and iterative.
    pub fn plan(&self, method: ReconMethod, model: Option<&Path>) -> Result<Plan> {
        let m = method.method();
        let o = Overrides {
            method: Some(m),
            seed: Some(self.seed),
            ..Overrides::default()
        };
        let o = match m {
            Method::Iterative => Overrides {
                steps: Some(self.iterations),
                samples: Some(self.samples),
                model: model.map(Path::to_path_buf),
                ..o
            },
            Method::OneStep => Overrides {
                model: model.map(Path::to_path_buf),
                ..o
            },
            Method::ZeroFilled | Method::CgSense | Method::L1Wavelet | Method::Tv => Overrides {
                lambda: Some(self.lambda),
                iterations: Some(self.iterations),
                ..o
            },
        };
        Ok(Plan::new(None, &o)?)
    }
}

/// A simulation to run before reconstructing.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// Magnitude image `[slice, row, col]`.
    pub image: Arc<Array3<f32>>,
    /// Its voxel → world affine.
    pub affine: Affine,
    /// How to acquire it.
    pub acquisition: Acquisition,
}

/// Where the measured data of a job comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Measured data already loaded (or simulated before).
    Measured(Box<KSpace>),
    /// Simulate from an image first.
    Simulate(Box<Simulation>),
}

/// One request: what to reconstruct and how.
#[derive(Clone, Debug)]
pub struct Job {
    /// The measured data.
    pub source: Source,
    /// Methods with their parameters, run in this order.
    pub methods: Vec<(ReconMethod, MethodParams)>,
    /// Reconstruct only this slice (fast); `None` = every slice.
    pub only_slice: Option<usize>,
    /// Learned prior (checkpoint or training-run folder) for one-step / iterative.
    pub model: Option<PathBuf>,
}

/// What the worker reports.
#[derive(Clone, Debug)]
pub enum Event {
    /// What it is doing now, in words.
    Status(String),
    /// Measured data simulated from the image, with the acquisition used.
    Simulated(Box<KSpace>, Acquisition),
    /// Coil maps `[slice, coil, row, col]` estimated for the whole volume (cache them).
    Maps(Array4<C32>),
    /// One finished reconstruction.
    Result(Box<ReconResult>),
    /// The job failed with this message.
    Failed(String),
    /// The job ended (always the last event).
    Finished {
        /// Stopped by [`Worker::cancel`].
        cancelled: bool,
        /// Wall time in seconds.
        seconds: f64,
    },
}

/// Handle of a running job.
pub struct Worker {
    rx: Receiver<Event>,
    cancel: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    finished: bool,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `job` on a new thread; `wake` is called after every event (e.g. to request a
    /// repaint).
    pub fn spawn(job: Job, wake: impl Fn() + Send + 'static) -> Worker {
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(1));
        let ctl = Control {
            tx,
            wake: Box::new(wake),
            cancel: cancel.clone(),
            done: done.clone(),
            total: total.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("amri-viewer-recon".into())
            .spawn(move || {
                let t = Instant::now();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job, &ctl)));
                let failure = match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(p) => Some(format!(
                        "the reconstruction failed: {}",
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "internal error".into())
                    )),
                };
                let cancelled = ctl.cancelled();
                if let Some(msg) = failure {
                    if !cancelled {
                        ctl.send(Event::Failed(msg));
                    }
                }
                ctl.send(Event::Finished {
                    cancelled,
                    seconds: t.elapsed().as_secs_f64(),
                });
            })
            .ok();
        let mut w = Worker {
            rx,
            cancel,
            done,
            total,
            finished: false,
            handle,
        };
        if w.handle.is_none() {
            w.finished = true;
        }
        w
    }

    /// Asks the job to stop at the next solver iteration; its partial results are dropped.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// True once cancel was asked.
    pub fn is_cancelling(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Fraction of the work done, in `[0, 1]`.
    pub fn progress(&self) -> f32 {
        let t = self.total.load(Ordering::Relaxed).max(1);
        (self.done.load(Ordering::Relaxed) as f32 / t as f32).clamp(0.0, 1.0)
    }

    /// Every event reported since the last call (never blocks).
    pub fn poll(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            if matches!(e, Event::Finished { .. }) {
                self.finished = true;
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
            }
            out.push(e);
        }
        if self.handle.as_ref().is_some_and(|h| h.is_finished()) && !self.finished {
            // The thread ended without its last event (it cannot, but never hang on it).
            while let Ok(e) = self.rx.try_recv() {
                out.push(e);
            }
            self.finished = true;
        }
        out
    }

    /// True when the job has ended and its last event was polled.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.cancel();
    }
}

struct Control {
    tx: Sender<Event>,
    wake: Box<dyn Fn() + Send>,
    cancel: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Control {
    fn send(&self, e: Event) {
        let _ = self.tx.send(e);
        (self.wake)();
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Simulates the measurement of `image` under `acquisition` (as `amri simulate`).
pub fn simulate(image: &Array3<f32>, affine: Affine, acquisition: &Acquisition) -> Result<KSpace> {
    let vol = Volume::new(image.clone().insert_axis(Axis(0)), affine);
    let mut k = amri_ops::simulate::simulate(&vol, 0, acquisition)?;
    k.attributes.insert("source".into(), "amri-viewer".into());
    Ok(k)
}

/// The measured data of one slice as a one-slice [`KSpace`].
pub fn slice_of(ks: &KSpace, k: usize) -> KSpace {
    let mut out = ks.clone();
    out.data = ks.data.slice(s![k..k + 1, .., .., ..]).to_owned();
    out.mask = ks
        .mask
        .as_ref()
        .map(|m| m.slice(s![k..k + 1, .., ..]).to_owned());
    out.reference = ks
        .reference
        .as_ref()
        .map(|m| m.slice(s![k..k + 1, .., ..]).to_owned());
    out.sensitivities = ks
        .sensitivities
        .as_ref()
        .map(|m| m.slice(s![k..k + 1, .., .., ..]).to_owned());
    out
}

fn run(job: Job, ctl: &Control) -> Result<()> {
    let mut ks = match job.source {
        Source::Measured(k) => *k,
        Source::Simulate(sim) => {
            ctl.send(Event::Status("simulating the acquisition".into()));
            let k = simulate(&sim.image, sim.affine, &sim.acquisition)?;
            ctl.send(Event::Simulated(Box::new(k.clone()), sim.acquisition));
            k
        }
    };
    let [slices, coils, rows, cols] = ks.shape4();
    if let Some(k) = job.only_slice {
        if k >= slices {
            return Err(ViewerError::msg(format!(
                "slice {k} is outside the data's {slices} slices"
            )));
        }
        ks = slice_of(&ks, k);
    }
    let n = ks.shape4()[0];
    let work: Vec<usize> = job
        .methods
        .iter()
        .map(|(m, p)| {
            if m.iterates() {
                n * p.iterations.max(1)
            } else {
                n
            }
        })
        .collect();
    ctl.total
        .store(work.iter().sum::<usize>().max(1), Ordering::Relaxed);
    // Coil maps (ESPIRiT) once, just before the first method that uses them, so that
    // zero-filled shows first.
    let maps_possible = coils > 1 && ks.domain() == amri_core::MeasuredDomain::Kspace;
    let prior = if job.methods.iter().any(|(m, _)| m.is_prior()) {
        let Some(path) = job.model.as_ref() else {
            return Err(ViewerError::msg(
                "one-step and iterative need a learned prior: give a model folder (a checkpoint or training run) in the Reconstruction panel",
            ));
        };
        ctl.send(Event::Status(format!(
            "loading the prior {}",
            path.display()
        )));
        let p = Prior::load(path, &candle_core::Device::Cpu).map_err(|e| {
            ViewerError::msg(format!("{}: cannot load the prior: {e}", path.display()))
        })?;
        Some(Arc::new(p))
    } else {
        None
    };
    let mut base = 0usize;
    for ((method, params), w) in job.methods.iter().zip(&work) {
        if ctl.cancelled() {
            break;
        }
        ctl.done.store(base, Ordering::Relaxed);
        if maps_possible && ks.sensitivities.is_none() && method.method() != Method::ZeroFilled {
            ctl.send(Event::Status("estimating coil maps (ESPIRiT)".into()));
            ks.sensitivities = app::resolve_maps(&ks, None)?;
            if let (None, Some(m)) = (job.only_slice, ks.sensitivities.as_ref()) {
                ctl.send(Event::Maps(m.clone()));
            }
            if ctl.cancelled() {
                break;
            }
        }
        ctl.send(Event::Status(format!("{} …", method.name())));
        let t = Instant::now();
        let mut plan = params.plan(*method, job.model.as_deref())?;
        if let (true, Some(p)) = (method.is_prior(), prior.as_ref()) {
            plan = plan.with_prior(Arc::clone(p));
        }
        let done = &ctl.done;
        let tick = || {
            done.fetch_add(1, Ordering::Relaxed);
        };
        let (img, std) = match plan.run(&ks, &tick, &ctl.cancel) {
            Ok(r) => (r.image, r.std),
            Err(_) if ctl.cancelled() => break,
            Err(e) => return Err(e.into()),
        };
        if ctl.cancelled() {
            break;
        }
        let seconds = t.elapsed().as_secs_f64();
        let expand = |a: Array3<f32>| match job.only_slice {
            None => a,
            Some(k) => {
                let mut full = Array3::zeros((slices, rows, cols));
                full.index_axis_mut(Axis(0), k)
                    .assign(&a.index_axis(Axis(0), 0));
                full
            }
        };
        let valid = match job.only_slice {
            None => vec![true; slices],
            Some(k) => (0..slices).map(|s| s == k).collect(),
        };
        let image = expand(img);
        let std = std.map(expand);
        let mut details = Vec::new();
        if method.has_lambda() || matches!(method, ReconMethod::Classical(Method::CgSense)) {
            details.push(format!("λ={}", params.lambda));
        }
        if method.method() == Method::Iterative {
            details.push(format!(
                "{} steps × {} samples",
                params.iterations, params.samples
            ));
        } else if method.iterates() {
            details.push(format!("{} it", params.iterations));
        }
        details.push(format!("{seconds:.1} s"));
        base += w;
        ctl.done.store(base, Ordering::Relaxed);
        ctl.send(Event::Result(Box::new(ReconResult {
            label: method.name().to_string(),
            image,
            valid,
            std,
            seconds,
            details: details.join(", "),
        })));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use amri_ops::corruption::{CorruptionSpec, KspacePattern};
    use std::time::Duration;

    fn phantom(slices: usize, n: usize) -> Array3<f32> {
        Array3::from_shape_fn((slices, n, n), |(_, i, j)| {
            let (y, x) = (i as f32 - n as f32 / 2.0, j as f32 - n as f32 / 2.0);
            if x * x + y * y < (n as f32 * 0.35).powi(2) {
                1.0 + 0.5 * ((i / 4 + j / 4) % 2) as f32
            } else {
                0.0
            }
        })
    }

    pub(crate) fn acquisition(acceleration: f64, coils: usize) -> Acquisition {
        Acquisition {
            corruption: CorruptionSpec::Kspace {
                pattern: KspacePattern::Equispaced,
                acceleration,
                center_fraction: 0.25,
                axis: 1,
            },
            delta: 0.1,
            further: Default::default(),
            further_box_size: None,
            coils,
            synthetic_phase: false,
            noise_level: 0.0,
            seed: 0,
            store_maps: false,
        }
    }

    /// How long a test waits before it calls the worker hung: far beyond any run here, so a
    /// loaded machine never fails a test; that a cancel stops the work is checked by progress.
    const HANG: Duration = Duration::from_secs(1800);

    fn wait(w: &mut Worker) -> Vec<Event> {
        let mut all = Vec::new();
        let t = Instant::now();
        while !w.is_finished() {
            all.extend(w.poll());
            assert!(t.elapsed() < HANG, "worker did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
        all
    }

    #[test]
    fn zero_filled_of_a_fully_sampled_single_coil_scan_is_the_image() {
        let img = phantom(2, 16);
        let job = Job {
            source: Source::Simulate(Box::new(Simulation {
                image: Arc::new(img.clone()),
                affine: Affine::IDENTITY,
                acquisition: acquisition(1.0, 1),
            })),
            methods: vec![(
                ReconMethod::Classical(Method::ZeroFilled),
                MethodParams::default_for(ReconMethod::Classical(Method::ZeroFilled)),
            )],
            only_slice: None,
            model: None,
        };
        let mut w = Worker::spawn(job, || {});
        let ev = wait(&mut w);
        let r = ev
            .iter()
            .find_map(|e| match e {
                Event::Result(r) => Some(r.clone()),
                _ => None,
            })
            .expect("a result");
        let err = (&r.image - &img)
            .mapv(f32::abs)
            .fold(0.0f32, |a, b| a.max(*b));
        assert!(err < 1e-4, "zero-filled of full data differs by {err}");
        assert!(ev.iter().any(|e| matches!(e, Event::Simulated(..))));
        assert!(matches!(
            ev.last(),
            Some(Event::Finished {
                cancelled: false,
                ..
            })
        ));
        assert_eq!(w.progress(), 1.0);
    }

    #[test]
    fn cancel_stops_a_long_reconstruction_and_drops_it() {
        let img = phantom(2, 32);
        let k = simulate(&img, Affine::IDENTITY, &acquisition(4.0, 1)).unwrap();
        let m = ReconMethod::Classical(Method::L1Wavelet);
        let job = Job {
            source: Source::Measured(Box::new(k)),
            methods: vec![(
                m,
                MethodParams {
                    lambda: 0.005,
                    iterations: 1_000_000,
                    samples: 1,
                    seed: 0,
                },
            )],
            only_slice: None,
            model: None,
        };
        let t = Instant::now();
        let mut w = Worker::spawn(job, || {});
        while w.progress() == 0.0 {
            std::thread::sleep(Duration::from_millis(2));
            assert!(t.elapsed() < HANG);
        }
        w.cancel();
        let ev = wait(&mut w);
        assert!(!ev.iter().any(|e| matches!(e, Event::Result(_))));
        assert!(!ev.iter().any(|e| matches!(e, Event::Failed(_))));
        assert!(matches!(
            ev.last(),
            Some(Event::Finished {
                cancelled: true,
                ..
            })
        ));
        assert!(w.progress() < 0.01);
    }

    #[test]
    fn single_slice_job_fills_one_slice_and_errors_are_reported() {
        let img = phantom(3, 16);
        let k = simulate(&img, Affine::IDENTITY, &acquisition(2.0, 1)).unwrap();
        let m = ReconMethod::Classical(Method::CgSense);
        let job = Job {
            source: Source::Measured(Box::new(k.clone())),
            methods: vec![(m, MethodParams::default_for(m))],
            only_slice: Some(1),
            model: None,
        };
        let mut w = Worker::spawn(job, || {});
        let ev = wait(&mut w);
        let r = ev
            .iter()
            .find_map(|e| match e {
                Event::Result(r) => Some(r.clone()),
                _ => None,
            })
            .expect("a result");
        assert_eq!(r.valid, vec![false, true, false]);
        assert_eq!(r.image.index_axis(Axis(0), 0).sum(), 0.0);
        assert!(r.image.index_axis(Axis(0), 1).sum() > 0.0);

        let job = Job {
            source: Source::Measured(Box::new(k)),
            methods: vec![(m, MethodParams::default_for(m))],
            only_slice: Some(7),
            model: None,
        };
        let mut w = Worker::spawn(job, || {});
        let ev = wait(&mut w);
        let msg = ev
            .iter()
            .find_map(|e| match e {
                Event::Failed(m) => Some(m.clone()),
                _ => None,
            })
            .expect("an error");
        assert!(msg.contains("slice 7"), "{msg}");
    }
}
