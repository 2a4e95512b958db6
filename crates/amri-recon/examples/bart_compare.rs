//! amri's l1-wavelet and TV reconstructions against `bart pics` on the same data, in one run.
//!
//! For one 256×256 slice of a NIfTI volume (default: the shipped Colin27 validation scan) it
//! simulates noiseless k-space of the image times a smooth phase, single-coil and with 8
//! synthetic coils (`amri_ops::coils::synthetic_maps`), under six masks (1-D random and
//! equispaced columns at R = 4 and 8, Poisson disc at R = 4 and 8), scales the data by BART's
//! `estimate_scaling` rule, writes `.cfl` files, runs
//! `bart pics -S -l1 -r λ -i N` and `bart pics -S -R T:3:0:λ -i N` and amri's equivalents
//! (same scaled data, same λ and iteration count, wavelet db2 like BART), and prints PSNR and
//! SSIM (fastMRI definitions, magnitude, against the fully sampled image) and wall time as a
//! Markdown table. BART is timed as a process (it reads and writes small files). amri's TV runs
//! twice per case, with its default TV (Neumann boundary) and with BART's periodic TV
//! (`TvDef::BART`), both compared with the one BART run; `--iters` is BART's `-i`, which for
//! ADMM counts CG steps (applications of `A^H A`), and amri's `TvConfig::iterations` counts the
//! same.
//!
//! ```text
//! cargo run --release -p amri-recon --example bart_compare -- \
//!     [--nifti sample-scans/colin27/t1_axial_val.nii.gz] [--slice 12] [--iters 100] \
//!     [--lambda-l1 0.005] [--lambda-tv 0.005] [--tv-solver admm|pdhg] [--bart bart] \\
//!     [--work /tmp/amri-bart]
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
use amri_recon::wavelet::Wavelet;
use ndarray::{Array2, Array3, Array4, Axis};

struct Args {
    nifti: PathBuf,
    slice: usize,
    iters: usize,
    lambda_l1: f32,
    lambda_tv: f32,
    tv_solver: TvSolver,
    bart: String,
    work: PathBuf,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        nifti: PathBuf::from("sample-scans/colin27/t1_axial_val.nii.gz"),
        slice: 12,
        iters: 100,
        lambda_l1: 0.005,
        lambda_tv: 0.005,
        tv_solver: TvSolver::Admm,
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
            "--lambda-tv" => a.lambda_tv = v.parse()?,
            "--tv-solver" => {
                a.tv_solver = match v.as_str() {
                    "admm" => TvSolver::Admm,
                    "pdhg" => TvSolver::Pdhg,
                    _ => return Err(format!("--tv-solver takes admm or pdhg, got {v}").into()),
                }
            }
            "--bart" => a.bart = v,
            "--work" => a.work = v.into(),
            _ => return Err(format!("unknown option {k}").into()),
        }
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

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.work)?;
    let vol = match amri_io::nifti::read(&args.nifti)? {
        amri_io::Scan::Image(v) => v,
        _ => return Err("expected a real-valued NIfTI image".into()),
    };
    let sl = vol.slice(0, args.slice).to_owned();
    let (rows, cols) = sl.dim();
    let max = sl
        .iter()
        .copied()
        .fold(0.0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let phase = smooth_phase(rows, cols, 7);
    let img: Array2<C32> =
        Array2::from_shape_fn((rows, cols), |(i, j)| phase[[i, j]] * (sl[[i, j]] / max));
    let reference = img.mapv(|v| v.norm());
    let fft = Fft2::new(rows, cols);
    let maps8 = synthetic_maps(8, rows, cols, Some(1));

    let mut masks: Vec<(String, Array2<f32>)> = Vec::new();
    for (name, pat) in [
        ("random", KspacePattern::Random),
        ("equispaced", KspacePattern::Equispaced),
    ] {
        for (r, cf) in [(4.0, 0.08), (8.0, 0.04)] {
            let m = cartesian_mask(rows, cols, 1, pat, r, cf, 42)?;
            masks.push((format!("1-D {name} R={r}"), m.mask));
        }
    }
    for r in [4.0, 8.0] {
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

    println!(
        "| coils | mask | method | BART PSNR | amri PSNR | BART SSIM | amri SSIM | BART time | amri time | amri/BART time |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for coils in [1usize, 8] {
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
            let ksp = args.work.join("ksp");
            let sens = args.work.join("sens");
            write_cfl(&ksp, coils, rows, cols, &scaled)?;
            write_cfl(&sens, coils, rows, cols, &maps)?;

            let mut ks = KSpace::new(Array4::from_shape_vec(
                (1, coils, rows, cols),
                data.clone(),
            )?);
            ks.mask = Some(mask.clone().insert_axis(Axis(0)));
            let maps4: Option<Array4<C32>> =
                (coils > 1).then(|| maps8.clone().insert_axis(Axis(0)));

            for method in ["l1-wavelet", "TV"] {
                let out = args.work.join("rec");
                let mut cmd = Command::new(&args.bart);
                cmd.arg("pics")
                    .arg("-S")
                    .arg("-i")
                    .arg(args.iters.to_string());
                if method == "TV" {
                    cmd.arg("-R").arg(format!("T:3:0:{}", args.lambda_tv));
                } else {
                    cmd.arg("-l1").arg("-r").arg(args.lambda_l1.to_string());
                }
                cmd.arg(&ksp).arg(&sens).arg(&out);
                let t0 = Instant::now();
                let st = cmd.output()?;
                let t_bart = t0.elapsed().as_secs_f64();
                if !st.status.success() {
                    return Err(
                        format!("bart failed: {}", String::from_utf8_lossy(&st.stderr)).into(),
                    );
                }
                let bart_img: Vec<C32> = read_cfl(&out)?.iter().map(|v| v * s).collect();

                let bm = magnitude(&bart_img, rows, cols);
                let (bart_psnr, bart_ssim) = (
                    psnr(reference.view(), bm.view())?,
                    ssim(reference.view(), bm.view())?,
                );
                // amri: l1-wavelet, or TV with its default definition (isotropic, Neumann) and
                // with BART's (isotropic, periodic), both by ADMM with BART's settings and the
                // same budget of A^H A applications as BART's `-i`.
                let variants: &[(&str, TvDef)] = if method == "TV" {
                    &[
                        ("TV", TvDef::default()),
                        ("TV, BART's periodic TV", TvDef::BART),
                    ]
                } else {
                    &[("l1-wavelet", TvDef::BART)]
                };
                for (label, def) in variants {
                    let t0 = Instant::now();
                    let rec = if method == "TV" {
                        let cfg = TvConfig {
                            lambda: args.lambda_tv,
                            iterations: args.iters,
                            scaling: DataScaling::Fixed(s),
                            tv: *def,
                            solver: args.tv_solver,
                            ..TvConfig::default()
                        };
                        tv_recon(&ks, maps4.as_ref(), &cfg)?
                    } else {
                        let cfg = L1WaveletConfig {
                            lambda: args.lambda_l1,
                            iterations: args.iters,
                            wavelet: Wavelet::Db2,
                            scaling: DataScaling::Fixed(s),
                            ..L1WaveletConfig::default()
                        };
                        l1_wavelet(&ks, maps4.as_ref(), &cfg)?
                    };
                    let t_amri = t0.elapsed().as_secs_f64();
                    let amri_img: Array3<C32> = rec.images;
                    let amri_slice: Vec<C32> = amri_img.iter().copied().collect();
                    let am = magnitude(&amri_slice, rows, cols);
                    println!(
                        "| {coils} | {mname} | {label} | {:.2} | {:.2} | {:.4} | {:.4} | {:.2} s | {:.2} s | {:.2} |",
                        bart_psnr,
                        psnr(reference.view(), am.view())?,
                        bart_ssim,
                        ssim(reference.view(), am.view())?,
                        t_bart,
                        t_amri,
                        t_amri / t_bart
                    );
                }
            }
        }
    }
    Ok(())
}
