//! End-to-end tests of the learned-prior methods through the real binary: a tiny prior trained
//! for two steps on a synthetic 32×32 NIfTI volume, then `amri recon --method one-step` and
//! `iterative`, `amri memorization`, and clear errors for models that are not checkpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use amri_core::{Affine, Volume};
use amri_io::{Scan, WriteOptions};
use assert_cmd::Command;
use ndarray::{Array4, Axis};
use predicates::prelude::*;

fn amri() -> Command {
    Command::cargo_bin("amri").unwrap()
}

/// A 4-slice 32×32 phantom volume (ellipses of varying intensity) written as NIfTI.
fn volume(dir: &Path) -> PathBuf {
    let data = Array4::from_shape_fn((1, 4, 32, 32), |(_, s, i, j)| {
        let (y, x) = (i as f32 / 16.0 - 1.0, j as f32 / 16.0 - 1.0);
        let outer = (x * x / 0.8 + y * y / 0.6 < 1.0) as u8 as f32;
        let inner = ((x - 0.2 * s as f32 / 4.0).powi(2) + y * y < 0.1) as u8 as f32;
        200.0 * outer + 150.0 * inner
    });
    let p = dir.join("vol.nii.gz");
    amri_io::write(
        &p,
        &Scan::Image(Volume::new(data, Affine::default())),
        &WriteOptions::default(),
    )
    .unwrap();
    p
}

/// Trains a tiny prior for 2 steps under `protocol` into `out`.
fn train(out: &Path, vol: &Path, protocol: &str) {
    train_with(out, vol, protocol, &[]);
}

/// [`train`] with `extra` flags.
fn train_with(out: &Path, vol: &Path, protocol: &str, extra: &[&str]) {
    amri()
        .args(["train", "--protocol", protocol, "--preset", "tiny"])
        .args(["--steps", "2", "--batch", "2", "--warmup", "1"])
        .args(extra)
        .args(["--checkpoint-every", "2", "--no-progress", "--out"])
        .arg(out)
        .arg(vol)
        .assert()
        .success();
}

fn simulate(vol: &Path, protocol: &str, out: &Path) {
    amri()
        .args(["simulate", "--protocol", protocol])
        .arg(vol)
        .arg(out)
        .assert()
        .success();
}

fn read_image(p: &Path) -> Array4<f32> {
    match amri_io::read(p).unwrap() {
        Scan::Image(v) => v.data,
        other => panic!("{}: not an image: {other:?}", p.display()),
    }
}

/// `amri recon --method one-step --model run` of `meas` into `out` with `args`; the image.
fn one_step(run: &Path, meas: &Path, out: &Path, args: &[&str]) -> Array4<f32> {
    amri()
        .args(["recon", "--method", "one-step", "--no-progress", "--model"])
        .arg(run)
        .args(args)
        .arg(meas)
        .arg(out)
        .assert()
        .success();
    read_image(out)
}

fn sidecar(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// SHA-256 of a file by the system's `sha256sum`, when there is one (independent check).
fn system_sha256(p: &Path) -> Option<String> {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

#[test]
fn one_step_iterative_and_memorization_on_a_tiny_kspace_prior() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume(t);
    let run = t.join("run");
    train(&run, &vol, "singlecoil-r4-cartesian");
    let meas = t.join("meas.npz");
    simulate(&vol, "singlecoil-r4-cartesian", &meas);

    // one-step
    let one = t.join("one.nii.gz");
    amri()
        .args(["recon", "--method", "one-step", "--model"])
        .arg(&run)
        .args(["--data-consistency", "--no-progress"])
        .arg(&meas)
        .arg(&one)
        .assert()
        .success()
        .stdout(predicate::str::contains("one-step"));
    let img = read_image(&one);
    assert_eq!(img.shape(), &[1, 4, 32, 32]);
    assert!(img.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(img.iter().any(|v| *v > 0.0));
    let side = sidecar(&t.join("one.json"));
    assert_eq!(side["status"], "ok");
    let sha = side["settings"]["model_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sha.len(), 64);
    let ckpt = PathBuf::from(side["settings"]["model_checkpoint"].as_str().unwrap());
    if let Some(want) = system_sha256(&ckpt.join("ema.safetensors")) {
        assert_eq!(sha, want, "sidecar hash differs from sha256sum");
    }
    assert!(side["report"]["psnr"].as_f64().unwrap().is_finite());

    // As σ → 0 EDM preconditioning returns the network input: one-step at a tiny σ is the
    // zero-filled image, in the input's units (checks the intensity scale round trip).
    let tiny = t.join("tiny.nii.gz");
    let zf = t.join("zf.nii.gz");
    amri()
        .args([
            "recon", "--method", "one-step", "--sigma", "1e-6", "--model",
        ])
        .arg(&run)
        .arg("--no-progress")
        .arg(&meas)
        .arg(&tiny)
        .assert()
        .success();
    amri()
        .args(["recon", "--method", "zero-filled", "--no-progress"])
        .arg(&meas)
        .arg(&zf)
        .assert()
        .success();
    let (a, b) = (read_image(&tiny), read_image(&zf));
    let peak = b.iter().copied().fold(0.0f32, f32::max);
    let worst = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(peak > 0.0 && worst < 1e-3 * peak, "{worst} vs peak {peak}");

    // iterative: mean + std, seeded
    let it = t.join("it.nii.gz");
    let iterative = |out: &Path| {
        amri()
            .args(["recon", "--method", "iterative", "--model"])
            .arg(&run)
            .args([
                "--samples",
                "2",
                "--steps",
                "3",
                "--seed",
                "4",
                "--no-progress",
            ])
            .arg(&meas)
            .arg(out)
            .assert()
            .success();
    };
    iterative(&it);
    let mean = read_image(&it);
    let std = read_image(&t.join("it_std.nii.gz"));
    assert_eq!(mean.shape(), &[1, 4, 32, 32]);
    assert_eq!(std.shape(), &[1, 4, 32, 32]);
    assert!(std.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(
        std.iter().any(|v| *v > 0.0),
        "two samples gave no spread at all"
    );
    let side = sidecar(&t.join("it.json"));
    assert_eq!(side["settings"]["model_sha256"], sha.as_str());
    assert_eq!(side["settings"]["samples"], 2);
    let again = t.join("again.nii.gz");
    iterative(&again);
    assert_eq!(
        read_image(&again),
        mean,
        "same seed, different reconstruction"
    );

    // a protocol can name the prior method and its model; flags override its keys
    let proto = t.join("prior.toml");
    std::fs::write(
        &proto,
        format!(
            "name = \"prior-r4\"\n[acquisition]\ncoils = 1\nnoise_level = 0.002\n\
             [acquisition.corruption]\ntype = \"kspace\"\npattern = \"random\"\n\
             acceleration = 4.0\ncenter_fraction = 0.08\n[reconstruction]\n\
             method = \"iterative\"\nmodel = {:?}\nsteps = 2\nsamples = 3\nseed = 4\n",
            run.display().to_string()
        ),
    )
    .unwrap();
    let pr = t.join("pr.nii.gz");
    amri()
        .args(["recon", "--protocol"])
        .arg(&proto)
        .args(["--samples", "2", "--no-progress"])
        .arg(&meas)
        .arg(&pr)
        .assert()
        .success();
    let side = sidecar(&t.join("pr.json"));
    assert_eq!(side["settings"]["method"], "iterative");
    assert_eq!(side["settings"]["steps"], 2);
    assert_eq!(side["settings"]["samples"], 2, "--samples did not override");
    assert_eq!(side["settings"]["model_sha256"], sha.as_str());
    assert!(t.join("pr_std.nii.gz").is_file());

    // memorization
    let mem = t.join("mem");
    amri()
        .args(["memorization", "--model"])
        .arg(&run)
        .arg("--train")
        .arg(&vol)
        .args([
            "--samples",
            "3",
            "--steps",
            "3",
            "--max-shift",
            "1",
            "--no-progress",
        ])
        .arg("--out")
        .arg(&mem)
        .assert()
        .success()
        .stdout(predicate::str::contains("3 samples vs 4 training slices"));
    let csv = std::fs::read_to_string(mem.join("similarity.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for r in &rows[1..] {
        let f: Vec<&str> = r.split(',').collect();
        let idx: usize = f[1].parse().unwrap();
        assert!(idx < 4);
        let s: f64 = f[4].parse().unwrap();
        assert!((-1.0..=1.0).contains(&s), "{r}");
    }
    let rep = sidecar(&mem.join("report.json"));
    assert_eq!(rep["model_sha256"], sha.as_str());
    assert_eq!(rep["training_slices"], 4);
    for k in [
        "fraction_above_0_90",
        "fraction_above_0_95",
        "fraction_above_0_99",
    ] {
        let v = rep[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    assert!(rep["fraction_above_0_90"].as_f64() >= rep["fraction_above_0_99"].as_f64());
    for png in ["histogram.png", "closest_pairs.png"] {
        let b = std::fs::read(mem.join(png)).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{png}");
    }
}

#[test]
fn pixel_prior_reconstructs_an_inpainting_problem_and_domain_mismatch_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume(t);
    let run = t.join("run");
    train(&run, &vol, "pixel-90");
    let meas = t.join("pix.npz");
    simulate(&vol, "pixel-90", &meas);
    let out = t.join("pix.nii.gz");
    amri()
        .args(["recon", "--method", "one-step", "--model"])
        .arg(&run)
        .arg("--no-progress")
        .arg(&meas)
        .arg(&out)
        .assert()
        .success();
    let img = read_image(&out);
    assert_eq!(img.shape(), &[1, 4, 32, 32]);
    assert!(img.iter().all(|v| v.is_finite()));
    // the zero-filled input is 0 on hidden pixels; the prior fills (some of) them in
    let zf = match amri_io::read(&meas).unwrap() {
        Scan::KSpace(k) => k.data.index_axis(Axis(1), 0).mapv(|v| v.norm()),
        _ => panic!("not measured data"),
    };
    let filled = zf
        .iter()
        .zip(img.iter())
        .filter(|(z, r)| **z == 0.0 && **r > 1e-3)
        .count();
    assert!(filled > 0, "no hidden pixel was filled in");

    // a pixel prior cannot take k-space in one step: clear error, exit 1
    let kmeas = t.join("k.npz");
    simulate(&vol, "singlecoil-r4-cartesian", &kmeas);
    amri()
        .args(["recon", "--method", "one-step", "--model"])
        .arg(&run)
        .arg("--no-progress")
        .arg(&kmeas)
        .arg(t.join("k.nii.gz"))
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "pixel/box prior cannot take a k-space",
        ));
}

#[test]
fn missing_or_invalid_models_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume(t);
    let meas = t.join("meas.npz");
    simulate(&vol, "singlecoil-r4-cartesian", &meas);
    let out = t.join("o.nii.gz");

    let missing = t.join("no-such-model");
    amri()
        .args(["recon", "--method", "one-step", "--model"])
        .arg(&missing)
        .arg(&meas)
        .arg(&out)
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("error:")
                .and(predicate::str::contains("no-such-model"))
                .and(predicate::str::contains("panicked").not())
                // the cause is said once, not repeated by the error chain
                .and(predicate::function(|s: &str| {
                    s.matches("no such file or folder").count() == 1
                })),
        );

    // a folder that is not a checkpoint
    let junk = t.join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("notes.txt"), "hello").unwrap();
    amri()
        .args(["recon", "--method", "iterative", "--model"])
        .arg(&junk)
        .arg(&meas)
        .arg(&out)
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("no checkpoint here").and(predicate::str::contains("junk")),
        );

    // a model card that is not JSON
    std::fs::write(junk.join("model.json"), "not json").unwrap();
    amri()
        .args(["memorization", "--model"])
        .arg(&junk)
        .arg("--train")
        .arg(&vol)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not an amri model card"));

    // without --model a prior method picks a shipped prior; none is trained at 32×32, and the
    // error says so; prior flags with a classical method are refused
    amri()
        .args(["recon", "--method", "iterative"])
        .arg(&meas)
        .arg(&out)
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("no --model given and no prior fits")
                .and(predicate::str::contains("32×32")),
        );
    amri()
        .args(["recon", "--method", "tv", "--samples", "3"])
        .arg(&meas)
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "--samples applies to the learned-prior methods",
        ));
    assert!(!out.exists());
}

/// A `slices`-slice `n`×`n` phantom volume (an ellipse with an off-centre disc) as NIfTI.
fn volume_n(dir: &Path, n: usize, slices: usize) -> PathBuf {
    let h = n as f32 / 2.0;
    let data = Array4::from_shape_fn((1, slices, n, n), |(_, s, i, j)| {
        let (y, x) = (i as f32 / h - 1.0, j as f32 / h - 1.0);
        let outer = (x * x / 0.8 + y * y / 0.6 < 1.0) as u8 as f32;
        let inner = ((x - 0.2 * s as f32 / 4.0).powi(2) + y * y < 0.1) as u8 as f32;
        200.0 * outer + 150.0 * inner
    });
    let p = dir.join(format!("vol{n}.nii.gz"));
    amri_io::write(
        &p,
        &Scan::Image(Volume::new(data, Affine::default())),
        &WriteOptions::default(),
    )
    .unwrap();
    p
}

/// Without `--model`, `amri recon` picks the shipped prior trained for the data: the R=4
/// k-space prior for 64×64 single-coil R=4 k-space, the pixel prior for a 64×64 pixel-masked
/// image (the clean twins tie on acceleration and lose to the priors trained on corrupted
/// data), and says which and why.
#[test]
fn without_a_model_the_shipped_prior_that_fits_the_data_is_picked() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume_n(t, 64, 2);
    for (protocol, method, want) in [
        (
            "singlecoil-r4-cartesian",
            "one-step",
            "colin27-64-r4-ambient",
        ),
        ("pixel-90", "one-step", "colin27-64-pixel90-ambient"),
        (
            "singlecoil-r4-cartesian",
            "iterative",
            "colin27-64-r4-ambient",
        ),
    ] {
        let meas = t.join(format!("{protocol}.npz"));
        if !meas.exists() {
            simulate(&vol, protocol, &meas);
        }
        let out = t.join(format!("{protocol}-{method}.nii.gz"));
        let mut cmd = amri();
        cmd.env_remove("AMRI_MODELS")
            .args(["recon", "--method", method, "--no-progress"]);
        if method == "iterative" {
            cmd.args(["--steps", "2", "--samples", "1"]);
        }
        cmd.arg(&meas)
            .arg(&out)
            .assert()
            .success()
            .stderr(predicate::str::contains("picked prior").and(predicate::str::contains(want)));
        let side = sidecar(&out.with_file_name(format!("{protocol}-{method}.json")));
        let model = side["settings"]["model"].as_str().unwrap().to_owned();
        assert!(model.ends_with(want), "{protocol}: picked {model}");
        assert_eq!(side["settings"]["model_picked"], true);
        assert!(read_image(&out).iter().all(|v| v.is_finite()));
    }
}

/// No shipped prior is trained at 256×256: the error names both sizes and lists each prior;
/// `$AMRI_MODELS` naming an empty folder finds no prior at all and says where it looked.
#[test]
fn without_a_model_unfit_data_or_an_empty_model_folder_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume_n(t, 256, 1);
    let meas = t.join("big.npz");
    simulate(&vol, "singlecoil-r4-cartesian", &meas);
    let out = t.join("big.nii.gz");
    amri()
        .env_remove("AMRI_MODELS")
        .args(["recon", "--method", "one-step", "--no-progress"])
        .arg(&meas)
        .arg(&out)
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("no prior fits")
                .and(predicate::str::contains("256×256"))
                .and(predicate::str::contains("trained at 64×64, not 256×256"))
                .and(predicate::str::contains("colin27-64-r4-ambient"))
                .and(predicate::str::contains("colin27-64-pixel90-ambient"))
                .and(predicate::str::contains("panicked").not()),
        );
    assert!(!out.exists());
    let empty = t.join("no-models-here");
    std::fs::create_dir_all(&empty).unwrap();
    amri()
        .env("AMRI_MODELS", &empty)
        .args(["recon", "--method", "one-step", "--no-progress"])
        .arg(&meas)
        .arg(&out)
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("no priors found")
                .and(predicate::str::contains("no-models-here")),
        );
}

#[test]
fn one_step_default_sigma_stays_within_the_priors_training_noise_levels() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume(t);
    // a one-step prior: every training σ near e^−5 (ln σ ~ N(−5, 0.5²), so [e^−6, e^−4])
    let run = t.join("run");
    train_with(
        &run,
        &vol,
        "singlecoil-r4-cartesian",
        &["--sigma-log-mean", "-5", "--sigma-log-std", "0.5"],
    );
    let meas = t.join("meas.npz");
    simulate(&vol, "singlecoil-r4-cartesian", &meas);
    let one = |name: &str, args: &[&str]| one_step(&run, &meas, &t.join(name), args);
    // without --sigma the CLI's 0.05 lies outside that range: the nearest trained σ, e^−4, is used
    let default = one("default.nii.gz", &[]);
    let edge = one("edge.nii.gz", &["--sigma", &(-4.0f64).exp().to_string()]);
    let cli = one("cli.nii.gz", &["--sigma", "0.05"]);
    assert_eq!(default, edge);
    assert_ne!(default, cli);
    // picked without --model: for one-step, not for the iterative sampler, which says why
    let picked = |method: &str| {
        amri()
            .env("AMRI_MODELS", &run)
            .args(["recon", "--no-progress", "--method", method])
            .arg(&meas)
            .arg(t.join(format!("{method}.nii.gz")))
            .assert()
    };
    picked("one-step").success();
    picked("iterative").failure().stderr(
        predicate::str::contains("trained only at σ ≤ 0.018 (a one-step prior)")
            .and(predicate::str::contains("no prior fits")),
    );
}

#[test]
fn one_step_averages_over_flips_by_default_only_for_a_prior_trained_with_them() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume(t);
    let meas = t.join("meas.npz");
    simulate(&vol, "singlecoil-r4-cartesian", &meas);
    let one = |name: &str, run: &Path, flag: Option<&str>| {
        one_step(run, &meas, &t.join(name), flag.as_slice())
    };
    // trained with flips and transposes: averaging over them is the default
    let flipped = t.join("flipped");
    train_with(
        &flipped,
        &vol,
        "singlecoil-r4-cartesian",
        &["--augment", "flip,transpose"],
    );
    let default = one("d.nii.gz", &flipped, None);
    let on = one("on.nii.gz", &flipped, Some("--average-flips"));
    let off = one("off.nii.gz", &flipped, Some("--no-average-flips"));
    assert_eq!(default, on);
    assert_ne!(default, off);
    // the provenance record says what was asked
    assert_eq!(
        sidecar(&t.join("on.json"))["settings"]["average_flips"],
        true
    );
    assert!(sidecar(&t.join("d.json"))["settings"]
        .get("average_flips")
        .is_none());
    // trained without them: one network call unless asked
    let plain = t.join("plain");
    train_with(&plain, &vol, "singlecoil-r4-cartesian", &[]);
    let default = one("pd.nii.gz", &plain, None);
    assert_eq!(
        default,
        one("poff.nii.gz", &plain, Some("--no-average-flips"))
    );
    assert_ne!(default, one("pon.nii.gz", &plain, Some("--average-flips")));
    // a one-step setting: refused with other methods, and both flags together
    amri()
        .args(["recon", "--method", "tv", "--average-flips"])
        .arg(&meas)
        .arg(t.join("tv.nii.gz"))
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "--average-flips applies to one-step, not tv",
        ));
    amri()
        .args([
            "recon",
            "--method",
            "one-step",
            "--average-flips",
            "--no-average-flips",
        ])
        .arg(&meas)
        .arg(t.join("both.nii.gz"))
        .assert()
        .failure();
}
