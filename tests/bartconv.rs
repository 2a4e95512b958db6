//! End-to-end tests of the conventions BART users expect (#19): a missing mask is inferred from
//! the non-zero samples, `--noise-cov` prewhitens as `bart whiten`, `--coils` compresses as
//! `bart cc -S -p N`. Fixtures are made by BART (see their make_fixtures scripts).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use amri_pipeline::{Overrides, Plan};
use amri_protocol::Method;
use assert_cmd::Command;
use ndarray::Array3;
use predicates::prelude::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn amri() -> Command {
    Command::cargo_bin("amri").unwrap()
}

/// Copies the cfl/hdr pair `from` (a path without extension) to `dir/to`.
fn copy_cfl(from: &Path, dir: &Path, to: &str) -> PathBuf {
    for ext in ["cfl", "hdr"] {
        std::fs::copy(from.with_extension(ext), dir.join(format!("{to}.{ext}"))).unwrap();
    }
    dir.join(format!("{to}.cfl"))
}

fn image(p: &Path) -> Array3<f32> {
    match amri_io::read(p).unwrap() {
        amri_io::Scan::Image(v) => v.data.index_axis_move(ndarray::Axis(0), 0),
        other => panic!("{}: expected an image, got {other:?}", p.display()),
    }
}

fn max_abs_diff(a: &Array3<f32>, b: &Array3<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    (a - b).mapv(f32::abs).fold(0.0, |m, v| m.max(*v))
}

fn max_abs(a: &Array3<f32>) -> f32 {
    a.iter().cloned().fold(0.0, f32::max)
}

#[test]
fn recon_of_a_cfl_without_mask_equals_recon_with_bart_s_pattern() {
    let d = tempfile::tempdir().unwrap();
    let fx = root().join("crates/amri-io/tests/fixtures/bart_nomask");
    let bare = copy_cfl(&fx.join("under"), d.path(), "bare");
    let with = copy_cfl(&fx.join("under"), d.path(), "with");
    copy_cfl(&fx.join("pattern"), d.path(), "with_mask");
    let recon = |input: &Path, out: &str| {
        let out = d.path().join(out);
        let o = amri()
            .args(["recon", "--method", "cg-sense", "--no-progress"])
            .arg(input)
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (image(&out), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let (a, log_a) = recon(&bare, "bare.npy");
    let (b, log_b) = recon(&with, "with.npy");
    assert!(
        log_a.contains("inferred from the non-zero samples"),
        "one log line says the mask was inferred: {log_a}"
    );
    assert!(!log_b.contains("inferred"), "{log_b}");
    let same = max_abs_diff(&a, &b) / max_abs(&b);
    assert!(same < 1e-6, "the inferred mask is BART's pattern: {same}");

    // Treating the zeros as measured (the old behaviour) gives another image.
    let mut k = match amri_io::read(&bare).unwrap() {
        amri_io::Scan::KSpace(k) => k,
        _ => panic!("k-space"),
    };
    k.mask = None;
    let plan = Plan::new(
        None,
        &Overrides {
            method: Some(Method::CgSense),
            ..Overrides::default()
        },
    )
    .unwrap();
    let zeros = plan.run(&k, &|| {}, &AtomicBool::new(false)).unwrap().image;
    let diff = max_abs_diff(&zeros, &a) / max_abs(&a);
    assert!(
        diff > 0.05,
        "zeros-as-measured should differ clearly, differs by {diff}"
    );

    // `amri info` says so too.
    amri()
        .arg("info")
        .arg(&bare)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "mask          inferred from the non-zero samples",
        ));
}

#[test]
fn recon_noise_cov_prewhitens_as_bart_whiten_and_coils_compress_as_bart_cc() {
    let d = tempfile::tempdir().unwrap();
    let fx = root().join("crates/amri-ops/tests/fixtures/bartconv");
    let data = copy_cfl(&fx.join("wdata"), d.path(), "wdata");
    let bart_white = copy_cfl(&fx.join("wout"), d.path(), "wout");
    let cov = copy_cfl(&fx.join("wcovar"), d.path(), "wcovar");
    let run = |args: &[&str], input: &Path, out: &str| {
        let out = d.path().join(out);
        amri()
            .args(["recon", "--method", "zero-filled", "--no-progress"])
            .args(args)
            .arg(input)
            .arg(&out)
            .assert()
            .success();
        image(&out)
    };
    let ours = run(&["--noise-cov", cov.to_str().unwrap()], &data, "ours.npy");
    let bart = run(&[], &bart_white, "bart.npy");
    let raw = run(&[], &data, "raw.npy");
    let e = max_abs_diff(&ours, &bart) / max_abs(&bart);
    assert!(
        e < 1e-4,
        "prewhitened image differs from bart whiten's by {e}"
    );
    assert!(max_abs_diff(&raw, &bart) / max_abs(&bart) > 1e-2);

    let ks = copy_cfl(&fx.join("cckspace"), d.path(), "cckspace");
    let cc4 = copy_cfl(&fx.join("cc4"), d.path(), "cc4");
    let ours = run(&["--coils", "4"], &ks, "cc_ours.npy");
    let bart = run(&[], &cc4, "cc_bart.npy");
    let e = max_abs_diff(&ours, &bart) / max_abs(&bart);
    assert!(
        e < 1e-4,
        "RSS of --coils 4 differs from bart cc -S -p 4 by {e}"
    );

    // Clear errors.
    amri()
        .args(["recon", "--method", "zero-filled", "--coils", "0"])
        .arg(&ks)
        .arg(d.path().join("x.npy"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("--coils must be ≥ 1"));
    amri()
        .args(["recon", "--method", "zero-filled", "--noise-cov"])
        .arg(&cov)
        .arg(&ks)
        .arg(d.path().join("y.npy"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("[8, 8]"));
    amri()
        .args(["recon", "--method", "zero-filled", "--noise-cov"])
        .arg(&data)
        .arg(&ks)
        .arg(d.path().join("z.npy"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("wdata.cfl"))
        .stderr(predicate::str::contains("square"));
}

#[test]
fn simulate_compresses_to_virtual_coils_after_measuring() {
    let d = tempfile::tempdir().unwrap();
    let input = root().join("sample-scans/dicom/oblique_stack");
    let out = d.path().join("m.npz");
    amri()
        .args([
            "simulate",
            "--protocol",
            "brain-r4-cartesian",
            "--coils",
            "6",
            "--virtual-coils",
            "3",
            "--store-maps",
        ])
        .arg(&input)
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("coil 3"));
    let k = match amri_io::read(&out).unwrap() {
        amri_io::Scan::KSpace(k) => k,
        _ => panic!("k-space"),
    };
    assert_eq!(k.shape4()[1], 3);
    assert_eq!(k.sensitivities.as_ref().map(|s| s.dim().1), Some(3));
    assert!(k.attributes["coil_compression"].contains("6 to 3 virtual coils"));
    amri()
        .args([
            "simulate",
            "--protocol",
            "brain-r4-cartesian",
            "--virtual-coils",
            "0",
        ])
        .arg(&input)
        .arg(d.path().join("n.npz"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("--virtual-coils 0"));
}

#[test]
fn for_any_mask_a_bare_npy_reconstructs_as_the_data_with_that_mask() {
    // Property over masks of several patterns and seeds: undersampled k-space written as a bare
    // `.npy` (no mask can be stored) reads back with the mask that zeroed it, and CG-SENSE of
    // it equals CG-SENSE of the k-space with the mask given explicitly.
    let d = tempfile::tempdir().unwrap();
    let fx = root().join("crates/amri-io/tests/fixtures/bart_nomask/under.cfl");
    let Ok(amri_io::Scan::KSpace(src)) = amri_io::cfl::read(&fx) else {
        panic!("k-space")
    };
    // Fully sampled data: the fixture's measured samples, the rest filled by a smooth value.
    let full = src.data.mapv(|v| {
        if v.norm() == 0.0 {
            amri_core::C32::new(1e-3, 2e-3)
        } else {
            v
        }
    });
    let plan = Plan::new(
        None,
        &Overrides {
            method: Some(Method::CgSense),
            iterations: Some(10),
            ..Overrides::default()
        },
    )
    .unwrap();
    let never = AtomicBool::new(false);
    for (seed, pattern) in (0..4u64).zip(
        [
            amri_ops::masks::KspacePattern::Random,
            amri_ops::masks::KspacePattern::Equispaced,
        ]
        .into_iter()
        .cycle(),
    ) {
        let m = amri_ops::masks::cartesian_mask(32, 32, 1, pattern, 3.0, 0.2, seed)
            .unwrap()
            .mask;
        let mut k = amri_core::KSpace::new(full.clone());
        for mut coil in k.data.index_axis_mut(ndarray::Axis(0), 0).outer_iter_mut() {
            coil.zip_mut_with(&m, |v, w| *v *= *w);
        }
        k.mask = Some(m.clone().insert_axis(ndarray::Axis(0)));
        let p = d.path().join(format!("k{seed}.npy"));
        let mut bare = k.clone();
        bare.mask = None;
        amri_io::write(&p, &amri_io::Scan::KSpace(bare), &Default::default()).unwrap();
        let amri_io::Scan::KSpace(read) = amri_io::read(&p).unwrap() else {
            panic!("k-space")
        };
        assert_eq!(read.mask, k.mask, "seed {seed}: inferred mask");
        let a = plan.run(&read, &|| {}, &never).unwrap().image;
        let b = plan.run(&k, &|| {}, &never).unwrap().image;
        assert!(max_abs_diff(&a, &b) <= 1e-6 * max_abs(&b), "seed {seed}");
    }
}
