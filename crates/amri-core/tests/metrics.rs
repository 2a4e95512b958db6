//! fastMRI metrics against scikit-image / fastMRI `evaluate.py` values.
//!
//! Fixtures: `tests/fixtures/metrics_*`, made by `tests/fixtures/make_fixtures.py` with
//! scikit-image's `peak_signal_noise_ratio` / `structural_similarity` and fastMRI's `nmse` and
//! volume `ssim`, on float64 copies of the float32 images stored here.

use std::collections::HashMap;
use std::path::PathBuf;

use amri_core::metrics::{
    evaluate_volume, nmse, nmse_volume, psnr, psnr_volume, ssim, ssim_volume,
    ssim_volume_with_range, ssim_with_range,
};
use ndarray::{Array2, Array3, ArrayD, Axis, Ix2, Ix3, IxDyn};

struct Case {
    shape: Vec<usize>,
    gt: ArrayD<f32>,
    pred: ArrayD<f32>,
    want: HashMap<String, f64>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_f32(name: &str, shape: &[usize]) -> ArrayD<f32> {
    let bytes = std::fs::read(fixture(name)).expect("fixture file");
    let vals: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), vals).expect("fixture shape")
}

fn case(name: &str) -> Case {
    let text = std::fs::read_to_string(fixture("metrics_expected.txt")).expect("expected values");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .expect("case listed");
    let (head, vals) = line.split_once('|').expect("separator");
    let shape: Vec<usize> = head
        .split_whitespace()
        .skip(1)
        .map(|s| s.parse().expect("dim"))
        .collect();
    let toks: Vec<&str> = vals.split_whitespace().collect();
    let want = toks
        .chunks_exact(2)
        .map(|kv| (kv[0].to_string(), kv[1].parse::<f64>().expect("value")))
        .collect();
    Case {
        gt: read_f32(&format!("metrics_{name}_gt.bin"), &shape),
        pred: read_f32(&format!("metrics_{name}_pred.bin"), &shape),
        shape,
        want,
    }
}

fn close(got: f64, want: f64, what: &str) {
    // Both sides compute in f64 on the same f32 samples: agreement is far better than 1e-4.
    assert!(
        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
        "{what}: got {got}, scikit-image/fastMRI {want}"
    );
}

#[test]
fn two_dimensional_metrics_match_scikit_image() {
    for name in ["img48x40", "img7x9"] {
        let c = case(name);
        assert_eq!(c.shape.len(), 2);
        let g = c.gt.view().into_dimensionality::<Ix2>().unwrap();
        let p = c.pred.view().into_dimensionality::<Ix2>().unwrap();
        close(psnr(g, p).unwrap(), c.want["psnr"], &format!("{name} psnr"));
        close(ssim(g, p).unwrap(), c.want["ssim"], &format!("{name} ssim"));
        close(nmse(g, p).unwrap(), c.want["nmse"], &format!("{name} nmse"));
    }
}

#[test]
fn volume_metrics_match_fastmri_evaluate() {
    let c = case("vol3x32x36");
    let g = c.gt.view().into_dimensionality::<Ix3>().unwrap();
    let p = c.pred.view().into_dimensionality::<Ix3>().unwrap();
    close(psnr_volume(g, p).unwrap(), c.want["psnr"], "volume psnr");
    close(ssim_volume(g, p).unwrap(), c.want["ssim"], "volume ssim");
    close(nmse_volume(g, p).unwrap(), c.want["nmse"], "volume nmse");
    let m = evaluate_volume(g, p).unwrap();
    close(m.psnr, c.want["psnr"], "evaluate psnr");
    close(m.ssim, c.want["ssim"], "evaluate ssim");
    close(m.nmse, c.want["nmse"], "evaluate nmse");
    // The volume data range is the volume maximum, not each slice's: slice 2 is dimmer, so its
    // SSIM with its own range differs from the volume computation.
    let g2 = g.index_axis(Axis(0), 2);
    let p2 = p.index_axis(Axis(0), 2);
    close(
        ssim(g2, p2).unwrap(),
        c.want["ssim_slice2_own_range"],
        "slice 2 own range",
    );
    let gmax = g.iter().fold(0.0f32, |m, &v| m.max(v)) as f64;
    let mean_own: f64 = (0..3)
        .map(|s| ssim_with_range(g.index_axis(Axis(0), s), p.index_axis(Axis(0), s), gmax).unwrap())
        .sum::<f64>()
        / 3.0;
    close(
        mean_own,
        c.want["ssim"],
        "mean of per-slice SSIM with the volume range",
    );
    close(
        ssim_volume_with_range(g, p, gmax).unwrap(),
        c.want["ssim"],
        "explicit range",
    );
    assert!((ssim(g2, p2).unwrap() - c.want["ssim"]).abs() > 1e-3);
}

#[test]
fn ssim_is_symmetric_given_the_range_and_drops_with_noise() {
    let c = case("img48x40");
    let g = c.gt.view().into_dimensionality::<Ix2>().unwrap();
    let p = c.pred.view().into_dimensionality::<Ix2>().unwrap();
    let r = 1.5;
    let a = ssim_with_range(g, p, r).unwrap();
    let b = ssim_with_range(p, g, r).unwrap();
    assert!((a - b).abs() < 1e-12);
    // More perturbation, lower SSIM and PSNR.
    let worse: Array2<f32> = Array2::from_shape_fn(g.dim(), |(i, j)| {
        p[[i, j]] + if (i * 7 + j * 3) % 5 == 0 { 0.3 } else { -0.1 }
    });
    assert!(ssim(g, worse.view()).unwrap() < ssim(g, p).unwrap());
    assert!(psnr(g, worse.view()).unwrap() < psnr(g, p).unwrap());
}

#[test]
fn volume_errors() {
    let v = Array3::<f32>::ones((2, 8, 8));
    let mut n = v.clone();
    n[[1, 2, 2]] = f32::INFINITY;
    assert!(ssim_volume(v.view(), n.view()).is_err());
    assert!(psnr_volume(v.view(), n.view()).is_err());
    assert!(nmse_volume(Array3::<f32>::zeros((2, 8, 8)).view(), v.view()).is_err());
    assert!(ssim_volume(
        Array3::<f32>::zeros((0, 8, 8)).view(),
        Array3::<f32>::zeros((0, 8, 8)).view()
    )
    .is_err());
    assert!(ssim_volume_with_range(v.view(), v.view(), 0.0).is_err());
}
