//! The 2-D wavelet transform against PyWavelets (`pywt.wavedec2(..., mode='periodization')`,
//! fixtures made by tests/fixtures/make_pywt_fixture.py).

mod common;

use amri_core::C32;
use amri_recon::wavelet::{Wavelet, Wavelet2};
use ndarray::Array2;

fn load(name: &str) -> (Wavelet, usize, Array2<C32>, Array2<C32>) {
    let text = std::fs::read_to_string(common::fixture(name)).expect("fixture");
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    let (r, c, l): (usize, usize, usize) = (
        head[0].parse().expect("rows"),
        head[1].parse().expect("cols"),
        head[2].parse().expect("levels"),
    );
    let w: Wavelet = head[3].parse().expect("wavelet");
    let vals: Vec<C32> = lines
        .map(|l| {
            let mut it = l
                .split_whitespace()
                .map(|t| t.parse::<f32>().expect("number"));
            C32::new(it.next().expect("re"), it.next().expect("im"))
        })
        .collect();
    assert_eq!(vals.len(), 2 * r * c);
    let x = Array2::from_shape_vec((r, c), vals[..r * c].to_vec()).expect("shape");
    let co = Array2::from_shape_vec((r, c), vals[r * c..].to_vec()).expect("shape");
    (w, l, x, co)
}

#[test]
fn coefficients_match_pywavelets_periodization() {
    for name in [
        "pywt_db2_16x24_L2.txt",
        "pywt_db4_32x16_L3.txt",
        "pywt_db1_8x8_L3.txt",
    ] {
        let (w, l, x, want) = load(name);
        let (r, c) = x.dim();
        let t = Wavelet2::new(r, c, w, Some(l)).expect("plan");
        assert_eq!(t.padded_shape(), [r, c], "{name}: no padding expected");
        let got = t.forward(x.view()).expect("forward");
        let scale = want.iter().map(|v| v.norm()).fold(0.0f32, f32::max);
        for ((idx, g), wv) in got.indexed_iter().zip(want.iter()) {
            assert!(
                (g - wv).norm() < 1e-5 * scale,
                "{name} at {idx:?}: {g} vs {wv}"
            );
        }
        // And back.
        let back = t.inverse(want.view()).expect("inverse");
        for (b, xv) in back.iter().zip(x.iter()) {
            assert!((b - xv).norm() < 1e-4);
        }
    }
}
