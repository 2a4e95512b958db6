//! amri's l1-wavelet and TV reconstructions against `bart pics` on the same data, in one run.
//!
//! For one 256×256 slice of a NIfTI volume (default: the shipped Colin27 validation scan),
//! normalised to max 1, it simulates noiseless k-space of the image times a smooth phase
//! ("smooth phase") and of the real magnitude image itself ("real"), single-coil and with 8
//! synthetic coils (`amri_ops::coils::synthetic_maps`), under six masks (1-D random and
//! equispaced columns at R = 4 and 8, Poisson disc at R = 4 and 8), scales the data by BART's
//! `estimate_scaling` rule, writes `.cfl` files, runs `bart pics -S -l1 -r λ -i N` (for every λ
//! of `--lambdas-l1`) and `bart pics -S -R T:3:0:λ -i N` and amri's equivalents (same scaled
//! data, λ and iteration count), and prints PSNR and SSIM (fastMRI definitions, magnitude,
//! against the fully sampled image) and wall time as Markdown tables: one at `--lambda-l1` /
//! `--lambda-tv` with SSIM and times, one with the l1-wavelet PSNR over the λ grid.
//!
//! amri's l1-wavelet runs with its defaults (BART's transform, shifts and FISTA order, see
//! `amri_recon::app::l1_wavelet`; `--wavelet`, `--wavelet-def`, `--step`, `--bart-order`,
//! `--seed` change them), and in the first table also as before #19 (orthonormal Daubechies-4,
//! step 1, amri's FISTA order). BART is timed as a process (it reads and writes small files).
//! amri's TV runs twice per case, with its default TV (Neumann boundary) and with BART's periodic
//! TV (`TvDef::BART`), both compared with the one BART run; `--iters` is BART's `-i`, which for
//! ADMM counts CG steps (applications of `A^H A`), and amri's `TvConfig::iterations` counts the
//! same.
//!
//! ```text
//! cargo run --release -p amri-recon --example bart_compare -- \
//!     [--nifti sample-scans/colin27/t1_axial_val.nii.gz] [--slice 12] [--iters 100] \
//!     [--lambda-l1 0.005] [--lambdas-l1 0.001,0.005,0.01] [--lambda-tv 0.005] \
//!     [--phase smooth,zero] [--coils 1,8] [--masks rand4,rand8,equi4,equi8,pois4,pois8] \
//!     [--methods l1,tv] [--tv-solver admm|pdhg] [--bart bart] [--work /tmp/amri-bart]
//! ```

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use amri_core::fft::Fft2;
use amri_core::metrics::{psnr, ssim};
use amri_core::{KSpace, C32};
use amri_ops::coils::{smooth_phase, synthetic_maps};
use amri_ops::masks::poisson::{poisson_mask, PoissonParams};
use amri_ops::masks::{cartesian_mask, KspacePattern};
use amri_recon::app::{
    bart_scaling, l1_wavelet, tv_recon, DataScaling, L1WaveletConfig, TvConfig, TvSolver,
};
use amri_recon::tv::TvDef;
use amri_recon::wavelet::{Wavelet, WaveletDef};
use ndarray::{Array2, Array3, Array4, Axis};

struct Args {
    nifti: PathBuf,
    slice: usize,
    iters: usize,
    lambda_l1: f32,
    lambdas_l1: Vec<f32>,
    lambda_tv: f32,
    tv_solver: TvSolver,
    phases: Vec<Phase>,
    coils: Vec<usize>,
    masks: Option<Vec<String>>,
    methods: Vec<String>,
    wavelet: Wavelet,
    def: WaveletDef,
    step: f32,
    bart_order: bool,
    seed: u64,
    bart: String,
    work: PathBuf,
}

/// The image's phase: the smooth synthetic phase of the earlier comparison, or none (a real,
/// non-negative magnitude image).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Smooth,
    Zero,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Smooth => "smooth phase",
            Phase::Zero => "real",
        }
    }
}

fn list<T: std::str::FromStr>(v: &str, k: &str) -> Result<Vec<T>, Box<dyn Error>> {
    v.split(',')
        .map(|x| {
            x.trim()
                .parse::<T>()
                .map_err(|_| format!("{k}: cannot parse `{x}`").into())
        })
        .collect()
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        nifti: PathBuf::from("sample-scans/colin27/t1_axial_val.nii.gz"),
        slice: 12,
        iters: 100,
        lambda_l1: 0.005,
        lambdas_l1: vec![0.001, 0.005, 0.01],
        lambda_tv: 0.005,
        tv_solver: TvSolver::Admm,
        phases: vec![Phase::Smooth, Phase::Zero],
        coils: vec![1, 8],
        masks: None,
        methods: vec!["l1".into(), "tv".into()],
        wavelet: Wavelet::Db2,
        def: WaveletDef::Auto,
        step: 0.95,
        bart_order: true,
        seed: 0,
        bart: "bart".into(),
        work: std::env::temp_dir().join("amri-bart-compare"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--nifti" => a.nifti = v.into(),
            "--slice" => a.slice = v.parse()?,
            "--iters" => a.iters = v.parse()?,
            "--lambda-l1" => a.lambda_l1 = v.parse()?,
            "--lambdas-l1" => a.lambdas_l1 = list(&v, &k)?,
            "--lambda-tv" => a.lambda_tv = v.parse()?,
            "--tv-solver" => {
                a.tv_solver = match v.as_str() {
                    "admm" => TvSolver::Admm,
                    "pdhg" => TvSolver::Pdhg,
                    _ => return Err(format!("--tv-solver takes admm or pdhg, got {v}").into()),
                }
            }
            "--phase" => {
                a.phases = v
                    .split(',')
                    .map(|p| match p.trim() {
                        "smooth" => Ok(Phase::Smooth),
                        "zero" | "real" => Ok(Phase::Zero),
                        _ => Err(format!("--phase takes smooth, zero or both, got {p}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--coils" => a.coils = list(&v, &k)?,
            "--masks" => a.masks = Some(v.split(',').map(|m| m.trim().to_string()).collect()),
            "--methods" => a.methods = v.split(',').map(|m| m.trim().to_string()).collect(),
            "--wavelet" => a.wavelet = v.parse()?,
            "--wavelet-def" => a.def = v.parse()?,
            "--step" => a.step = v.parse()?,
            "--bart-order" => a.bart_order = v.parse()?,
            "--seed" => a.seed = v.parse()?,
            "--bart" => a.bart = v,
            "--work" => a.work = v.into(),
            _ => return Err(format!("unknown option {k}").into()),
        }
    }
    for c in &a.coils {
        if *c != 1 && *c != 8 {
            return Err(format!("--coils takes 1 and/or 8, got {c}").into());
        }
    }
    for m in &a.methods {
        if m != "l1" && m != "tv" {
            return Err(format!("--methods takes l1 and/or tv, got {m}").into());
        }
    }
    if !a.lambdas_l1.contains(&a.lambda_l1) && a.methods.iter().any(|m| m == "l1") {
        a.lambdas_l1.push(a.lambda_l1);
    }
    Ok(a)
}

/// Writes `[coil, row, col]` C-order data as a BART array `[col, row, 1, coil]` (same bytes).
fn write_cfl(
    stem: &Path,
    coils: usize,
    rows: usize,
    cols: usize,
    data: &[C32],
) -> Result<(), Box<dyn Error>> {
    amri_io::cfl::write_array(stem, &[cols, rows, 1, coils], data)?;
    Ok(())
}

fn read_cfl(stem: &Path) -> Result<Vec<C32>, Box<dyn Error>> {
    Ok(amri_io::cfl::read_array(stem)?.1)
}

fn magnitude(v: &[C32], rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_vec((rows, cols), v.iter().map(|x| x.norm()).collect())
        .unwrap_or_else(|_| Array2::zeros((rows, cols)))
}

/// One comparison: BART and amri on the same data, problem and λ.
struct Row {
    phase: Phase,
    coils: usize,
    mask: String,
    label: String,
    l1: bool,
    lambda: f32,
    bart_psnr: f64,
    amri_psnr: f64,
    bart_ssim: f64,
    amri_ssim: f64,
    t_bart: f64,
    t_amri: f64,
}

/// Runs `bart pics -S -i N <reg> ksp sens out` and returns the image (times `s`) and wall time.
fn run_bart(
    args: &Args,
    reg: &[String],
    s: f32,
    rows: usize,
    cols: usize,
) -> Result<(Array2<f32>, f64), Box<dyn Error>> {
    let (ksp, sens, out) = (
        args.work.join("ksp"),
        args.work.join("sens"),
        args.work.join("rec"),
    );
    let mut cmd = Command::new(&args.bart);
    cmd.arg("pics")
        .arg("-S")
        .arg("-i")
        .arg(args.iters.to_string())
        .args(reg)
        .arg(&ksp)
        .arg(&sens)
        .arg(&out);
    let t0 = Instant::now();
    let st = cmd.output()?;
    let t = t0.elapsed().as_secs_f64();
    if !st.status.success() {
        return Err(format!("bart failed: {}", String::from_utf8_lossy(&st.stderr)).into());
    }
    let img: Vec<C32> = read_cfl(&out)?.iter().map(|v| v * s).collect();
    Ok((magnitude(&img, rows, cols), t))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.work)?;
    let vol = match amri_io::nifti::read(&args.nifti)? {
        amri_io::Scan::Image(v) => v,
        _ => return Err("expected a real-valued NIfTI image".into()),
    };
    if args.slice >= vol.data.dim().1 {
        return Err(format!(
            "--slice {} is out of range: {} has {} slices",
            args.slice,
            args.nifti.display(),
            vol.data.dim().1
        )
        .into());
    }
    let sl = vol.slice(0, args.slice).to_owned();
    let (rows, cols) = sl.dim();
    let max = sl
        .iter()
        .copied()
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let fft = Fft2::new(rows, cols);
    let maps8 = synthetic_maps(8, rows, cols, Some(1));

    let mut masks: Vec<(String, Array2<f32>)> = Vec::new();
    let wanted = |key: &str| {
        args.masks
            .as_ref()
            .is_none_or(|m| m.iter().any(|k| k == key))
    };
    for (name, key, pat) in [
        ("random", "rand", KspacePattern::Random),
        ("equispaced", "equi", KspacePattern::Equispaced),
    ] {
        for (r, cf) in [(4.0, 0.08), (8.0, 0.04)] {
            if wanted(&format!("{key}{r}")) {
                let m = cartesian_mask(rows, cols, 1, pat, r, cf, 42)?;
                masks.push((format!("1-D {name} R={r}"), m.mask));
            }
        }
    }
    for r in [4.0, 8.0] {
        if wanted(&format!("pois{r}")) {
            let p = PoissonParams {
                acceleration: r,
                calib: [24, 24],
                ..PoissonParams::default()
            };
            masks.push((
                format!("Poisson R={r}"),
                poisson_mask(rows, cols, &p, 42)?.mask,
            ));
        }
    }

    let mut results: Vec<Row> = Vec::new();
    for &phase in &args.phases {
        let img: Array2<C32> = match phase {
            Phase::Smooth => {
                let ph = smooth_phase(rows, cols, 7);
                Array2::from_shape_fn((rows, cols), |(i, j)| ph[[i, j]] * (sl[[i, j]] / max))
            }
            Phase::Zero => sl.mapv(|v| C32::new(v / max, 0.0)),
        };
        let reference = img.mapv(|v| v.norm());
        for &coils in &args.coils {
            for (mname, mask) in &masks {
                // Simulate [coil, row, col] k-space.
                let mut data = vec![C32::new(0.0, 0.0); coils * rows * cols];
                for (c, chunk) in data.chunks_exact_mut(rows * cols).enumerate() {
                    for ((i, j), v) in img.indexed_iter() {
                        chunk[i * cols + j] = if coils == 1 { *v } else { v * maps8[[c, i, j]] };
                    }
                    fft.forward(chunk);
                    chunk
                        .iter_mut()
                        .zip(mask.iter())
                        .for_each(|(k, m)| *k *= *m);
                }
                let kview = ndarray::ArrayView3::from_shape((coils, rows, cols), &data)?;
                let s = bart_scaling(kview, mask.view());
                let scaled: Vec<C32> = data.iter().map(|v| v / s).collect();
                let maps: Vec<C32> = if coils == 1 {
                    vec![C32::new(1.0, 0.0); rows * cols]
                } else {
                    maps8.iter().copied().collect()
                };
                write_cfl(&args.work.join("ksp"), coils, rows, cols, &scaled)?;
                write_cfl(&args.work.join("sens"), coils, rows, cols, &maps)?;

                let mut ks = KSpace::new(Array4::from_shape_vec(
                    (1, coils, rows, cols),
                    data.clone(),
                )?);
                ks.mask = Some(mask.clone().insert_axis(Axis(0)));
                let maps4: Option<Array4<C32>> =
                    (coils > 1).then(|| maps8.clone().insert_axis(Axis(0)));
                let score = |rec: Array3<C32>| -> Result<(f64, f64), Box<dyn Error>> {
                    let v: Vec<C32> = rec.iter().copied().collect();
                    let am = magnitude(&v, rows, cols);
                    Ok((
                        psnr(reference.view(), am.view())?,
                        ssim(reference.view(), am.view())?,
                    ))
                };

                // (is l1, λ, BART's regulariser)
                let mut jobs: Vec<(bool, f32, Vec<String>)> = Vec::new();
                if args.methods.iter().any(|m| m == "l1") {
                    for &l in &args.lambdas_l1 {
                        jobs.push((true, l, vec!["-l1".into(), "-r".into(), l.to_string()]));
                    }
                }
                if args.methods.iter().any(|m| m == "tv") {
                    let l = args.lambda_tv;
                    jobs.push((false, l, vec!["-R".into(), format!("T:3:0:{l}")]));
                }
                for (l1, lambda, reg) in jobs {
                    let (bm, t_bart) = run_bart(&args, &reg, s, rows, cols)?;
                    let (bart_psnr, bart_ssim) = (
                        psnr(reference.view(), bm.view())?,
                        ssim(reference.view(), bm.view())?,
                    );
                    // amri: l1-wavelet, or TV with its default definition (isotropic, Neumann)
                    // and with BART's (isotropic, periodic), both by ADMM with BART's settings
                    // and the same budget of A^H A applications as BART's `-i`.
                    let variants: &[(&str, TvDef)] = if l1 && lambda == args.lambda_l1 {
                        &[
                            ("l1-wavelet", TvDef::BART),
                            ("l1-wavelet, before #19 (orthonormal db4)", TvDef::BART),
                        ]
                    } else if l1 {
                        &[("l1-wavelet", TvDef::BART)]
                    } else {
                        &[
                            ("TV", TvDef::default()),
                            ("TV, BART's periodic TV", TvDef::BART),
                        ]
                    };
                    for (label, def) in variants {
                        let t0 = Instant::now();
                        let rec = if l1 && label.contains("before") {
                            let cfg = L1WaveletConfig {
                                lambda,
                                iterations: args.iters,
                                wavelet: Wavelet::Db4,
                                def: WaveletDef::Orthonormal,
                                step: 1.0,
                                bart_order: false,
                                scaling: DataScaling::Fixed(s),
                                ..L1WaveletConfig::default()
                            };
                            l1_wavelet(&ks, maps4.as_ref(), &cfg)?
                        } else if l1 {
                            let cfg = L1WaveletConfig {
                                lambda,
                                iterations: args.iters,
                                wavelet: args.wavelet,
                                def: args.def,
                                step: args.step,
                                bart_order: args.bart_order,
                                seed: args.seed,
                                scaling: DataScaling::Fixed(s),
                                ..L1WaveletConfig::default()
                            };
                            l1_wavelet(&ks, maps4.as_ref(), &cfg)?
                        } else {
                            let cfg = TvConfig {
                                lambda,
                                iterations: args.iters,
                                scaling: DataScaling::Fixed(s),
                                tv: *def,
                                solver: args.tv_solver,
                                ..TvConfig::default()
                            };
                            tv_recon(&ks, maps4.as_ref(), &cfg)?
                        };
                        let t_amri = t0.elapsed().as_secs_f64();
                        let (amri_psnr, amri_ssim) = score(rec.images)?;
                        eprintln!(
                            "{} | {coils} | {mname} | {label} λ={lambda}: BART {bart_psnr:.2} dB, amri {amri_psnr:.2} dB",
                            phase.label()
                        );
                        results.push(Row {
                            phase,
                            coils,
                            mask: mname.clone(),
                            label: label.to_string(),
                            l1,
                            lambda,
                            bart_psnr,
                            amri_psnr,
                            bart_ssim,
                            amri_ssim,
                            t_bart,
                            t_amri,
                        });
                    }
                }
            }
        }
    }

    println!(
        "\n| image | coils | mask | method | BART PSNR | amri PSNR | BART SSIM | amri SSIM | BART time | amri time | amri/BART time |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in results
        .iter()
        .filter(|r| !r.l1 || r.lambda == args.lambda_l1)
    {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.4} | {:.4} | {:.2} s | {:.2} s | {:.2} |",
            r.phase.label(),
            r.coils,
            r.mask,
            r.label,
            r.bart_psnr,
            r.amri_psnr,
            r.bart_ssim,
            r.amri_ssim,
            r.t_bart,
            r.t_amri,
            r.t_amri / r.t_bart
        );
    }
    if args.methods.iter().any(|m| m == "l1") {
        // The λ grid: PSNR of BART / amri and the difference amri − BART, one column per λ.
        let mut lams = args.lambdas_l1.clone();
        lams.sort_by(|a, b| a.total_cmp(b));
        let head: Vec<String> = lams
            .iter()
            .map(|l| format!("λ = {l}: BART / amri (Δ dB)"))
            .collect();
        println!("\n| image | coils | mask | {} |", head.join(" | "));
        println!("| --- | --- | --- |{}", " --- |".repeat(lams.len()));
        let l1: Vec<&Row> = results
            .iter()
            .filter(|r| r.l1 && r.label == "l1-wavelet")
            .collect();
        let mut seen: Vec<(Phase, usize, String)> = Vec::new();
        for r in &l1 {
            let key = (r.phase, r.coils, r.mask.clone());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let cells: Vec<String> = lams
                .iter()
                .map(|l| {
                    l1.iter()
                        .find(|x| {
                            x.phase == r.phase
                                && x.coils == r.coils
                                && x.mask == r.mask
                                && x.lambda == *l
                        })
                        .map_or("–".into(), |x| {
                            format!(
                                "{:.2} / {:.2} ({:+.2})",
                                x.bart_psnr,
                                x.amri_psnr,
                                x.amri_psnr - x.bart_psnr
                            )
                        })
                })
                .collect();
            println!(
                "| {} | {} | {} | {} |",
                r.phase.label(),
                r.coils,
                r.mask,
                cells.join(" | ")
            );
        }
    }
    Ok(())
}
