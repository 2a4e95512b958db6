//! Operator tests: the BART-lintest checks (adjoint, normal, linearity) on every operator and
//! combinator over random sizes and seeds, the SENSE fast path against its primitive chain, and
//! the Fourier convention against BART `fft -u` fixtures.
#![allow(clippy::unwrap_used)]

use amri_core::C32;
use amri_ops::blocks::{Blocks, BoxConvention};
use amri_ops::fourier::{Fft2c, FourierSampling};
use amri_ops::gaussian_cs::{Entries, GaussianCs, Storage};
use amri_ops::linop::{Compose, Identity, LinearOperator, Scaled, Sum};
use amri_ops::pixel_mask::{random_pixel_mask, PixelMask};
use amri_ops::sense::{Sense, SenseMaps};
use amri_ops::testing::{all_errors, norm, random_vector};
use amri_ops::OpsError;
use ndarray::{Array2, Array3, ArrayD, IxDyn};
use proptest::prelude::*;

const TOL: f64 = 1e-5;

fn smooth_maps(c: usize, r: usize, n: usize, seed: u64) -> Array3<C32> {
    let ph = seed as f32 * 0.37;
    Array3::from_shape_fn((c, r, n), |(k, i, j)| {
        let (y, x) = (i as f32 / r as f32 - 0.5, j as f32 / n as f32 - 0.5);
        let ang = 2.0 * std::f32::consts::PI * k as f32 / c as f32;
        let d2 = (y - 0.4 * ang.sin()).powi(2) + (x - 0.4 * ang.cos()).powi(2);
        C32::from_polar((-2.0 * d2).exp(), ph + 1.3 * k as f32 + x * 2.0)
    })
}

fn check(op: &dyn LinearOperator, seed: u64) {
    let [a, n, l] = all_errors(op, seed);
    assert!(a <= TOL, "{}: adjoint error {a:e}", op.name());
    assert!(n <= TOL, "{}: normal error {n:e}", op.name());
    assert!(l <= TOL, "{}: linearity error {l:e}", op.name());
}

/// Every operator the crate offers, built for a `[r, c]` image.
fn all_operators(r: usize, c: usize, coils: usize, seed: u64) -> Vec<Box<dyn LinearOperator>> {
    let mask = random_pixel_mask(r, c, 0.6, seed).unwrap();
    let maps = smooth_maps(coils, r, c, seed);
    let sense = Sense::new(maps.clone(), mask.clone()).unwrap();
    let composed = sense.composed().unwrap();
    let bh = (r / 3).max(1);
    let bw = (c / 2).max(1);
    let mut ops: Vec<Box<dyn LinearOperator>> = vec![
        Box::new(Identity::new(&[r, c])),
        Box::new(Fft2c::new(&[coils, r, c]).unwrap()),
        Box::new(FourierSampling::new(mask.clone()).unwrap()),
        Box::new(PixelMask::new(mask.clone()).unwrap()),
        Box::new(PixelMask::broadcast(mask.clone(), &[coils, r, c]).unwrap()),
        Box::new(SenseMaps::new(&maps).unwrap()),
        Box::new(sense),
        composed,
        Box::new(Blocks::draw(r, c, 2, [bh, bw], BoxConvention::Clipped, seed).unwrap()),
        Box::new(GaussianCs::new(7, &[r, c], Entries::Real, seed, Storage::Stored).unwrap()),
        Box::new(GaussianCs::new(5, &[r, c], Entries::Complex, seed, Storage::OnTheFly).unwrap()),
        Box::new(
            GaussianCs::new(9, &[r, c], Entries::Complex, seed, Storage::Auto)
                .unwrap()
                .select_rows(&[8, 0, 3])
                .unwrap(),
        ),
        Box::new(Scaled::new(
            C32::new(0.5, -2.0),
            FourierSampling::new(mask.clone()).unwrap(),
        )),
        Box::new(
            Sum::new(
                FourierSampling::new(mask.clone()).unwrap(),
                Scaled::new(C32::new(0.0, 1.0), PixelMask::new(mask.clone()).unwrap()),
            )
            .unwrap(),
        ),
        Box::new(
            Compose::new(
                FourierSampling::new(mask.clone()).unwrap(),
                PixelMask::new(random_pixel_mask(r, c, 0.3, seed + 1).unwrap()).unwrap(),
            )
            .unwrap(),
        ),
    ];
    // a box inside the image that hides every pixel is refused by design (a 1×1 image has no
    // smaller box)
    if [bh, bw] != [r, c] {
        ops.push(Box::new(
            Blocks::draw(r, c, 2, [bh, bw], BoxConvention::Inside, seed).unwrap(),
        ));
    }
    ops
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn lintest_on_every_operator(r in 1usize..20, c in 1usize..20, coils in 1usize..5, seed in 0u64..1000) {
        for op in all_operators(r, c, coils, seed) {
            check(op.as_ref(), seed);
        }
    }
}

#[test]
fn lintest_on_a_one_pixel_image() {
    for op in all_operators(1, 1, 2, 5) {
        check(op.as_ref(), 5);
    }
}

#[test]
fn lintest_on_realistic_sizes() {
    for op in all_operators(64, 48, 8, 3) {
        check(op.as_ref(), 11);
    }
}

#[test]
fn fused_sense_equals_the_primitive_chain_and_the_coil_definition() {
    let (c, r, n) = (4, 12, 10);
    let maps = smooth_maps(c, r, n, 5);
    let mask = random_pixel_mask(r, n, 0.5, 2).unwrap();
    let sense = Sense::new(maps.clone(), mask.clone()).unwrap();
    let chain = sense.composed().unwrap();
    let x = random_vector(r * n, 1);
    let (mut y1, mut y2) = (
        vec![C32::default(); c * r * n],
        vec![C32::default(); c * r * n],
    );
    sense.forward(&x, &mut y1);
    chain.forward(&x, &mut y2);
    let d: Vec<C32> = y1.iter().zip(&y2).map(|(a, b)| a - b).collect();
    assert!(norm(&d) <= 1e-6 * norm(&y1));
    // Per coil, by definition with amri-core's fft2c: y_c = M ⊙ fft2c(S_c ⊙ x).
    let xa = Array2::from_shape_vec((r, n), x.clone()).unwrap();
    for k in 0..c {
        let coil = &maps.index_axis(ndarray::Axis(0), k) * &xa;
        let kc = amri_core::fft::fft2c(&coil);
        for i in 0..r {
            for j in 0..n {
                let want = kc[[i, j]] * mask[[i, j]];
                assert!((y1[k * r * n + i * n + j] - want).norm() < 1e-5);
            }
        }
    }
    let (mut a1, mut a2) = (vec![C32::default(); r * n], vec![C32::default(); r * n]);
    sense.adjoint(&y1, &mut a1);
    chain.adjoint(&y1, &mut a2);
    let d: Vec<C32> = a1.iter().zip(&a2).map(|(a, b)| a - b).collect();
    assert!(norm(&d) <= 1e-6 * norm(&a1));
}

#[test]
fn fourier_normal_is_an_orthogonal_projection() {
    // P = F^H M F with M ∈ {0,1} satisfies P² = P and ‖P x‖² = <x, P x>.
    let mask = random_pixel_mask(16, 12, 0.7, 4).unwrap();
    let op = FourierSampling::new(mask).unwrap();
    let x = random_vector(192, 9);
    let (mut p1, mut p2) = (vec![C32::default(); 192], vec![C32::default(); 192]);
    op.normal(&x, &mut p1);
    op.normal(&p1, &mut p2);
    let d: Vec<C32> = p1.iter().zip(&p2).map(|(a, b)| a - b).collect();
    assert!(norm(&d) < 1e-5 * norm(&p1));
    let (re, _) = amri_ops::testing::inner(&x, &p1);
    assert!((re - norm(&p1).powi(2)).abs() < 1e-5 * re);
}

fn read_bart(name: &str) -> (usize, usize, Vec<C32>, Vec<C32>) {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let dims: Vec<usize> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let (mut x, mut k) = (Vec::new(), Vec::new());
    for l in lines {
        let v: Vec<f32> = l.split_whitespace().map(|v| v.parse().unwrap()).collect();
        x.push(C32::new(v[0], v[1]));
        k.push(C32::new(v[2], v[3]));
    }
    (dims[0], dims[1], x, k)
}

#[test]
fn fourier_sampling_matches_bart_fft_u_on_the_mask() {
    for name in ["bart_fft_phantom16.txt", "bart_fft_noise12x10.txt"] {
        let (r, c, x, k) = read_bart(name);
        let mask = random_pixel_mask(r, c, 0.5, 1).unwrap();
        let op = FourierSampling::new(mask.clone()).unwrap();
        let mut y = vec![C32::default(); r * c];
        op.forward(&x, &mut y);
        let scale = norm(&k) / ((r * c) as f64).sqrt();
        for (i, (yv, kv)) in y.iter().zip(&k).enumerate() {
            let want = kv * mask.as_slice().unwrap()[i];
            assert!(
                ((yv - want).norm() as f64) < 1e-5 * scale.max(1.0),
                "{name} [{i}]"
            );
        }
        // Full mask: the adjoint inverts BART's transform.
        let full = FourierSampling::new(Array2::ones((r, c))).unwrap();
        let mut back = vec![C32::default(); r * c];
        full.adjoint(&k, &mut back);
        let d: Vec<C32> = back.iter().zip(&x).map(|(a, b)| a - b).collect();
        assert!(norm(&d) < 1e-5 * norm(&x), "{name}");
    }
}

#[test]
fn ndarray_wrappers_check_shapes() {
    let op = FourierSampling::new(Array2::ones((4, 6))).unwrap();
    let bad = ArrayD::<C32>::zeros(IxDyn(&[6, 4]));
    match op.apply(&bad.view()) {
        Err(OpsError::Shape { expected, got, .. }) => {
            assert_eq!(expected, vec![4, 6]);
            assert_eq!(got, vec![6, 4]);
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    assert!(op.apply_adjoint(&bad.view()).is_err());
    assert!(op.apply_normal(&bad.view()).is_err());
    // A transposed (non-contiguous) view of the right shape is accepted.
    let good = ArrayD::from_shape_fn(IxDyn(&[6, 4]), |i| C32::new(i[0] as f32, i[1] as f32));
    let t = good.t();
    let y = op.apply(&t).unwrap();
    let back = op.apply_adjoint(&y.view()).unwrap();
    for (a, b) in back.iter().zip(t.iter()) {
        assert!((a - b).norm() < 1e-4);
    }
}

#[test]
fn repeated_calls_give_identical_results() {
    // The scratch pool must not leak state between calls.
    let sense = Sense::new(
        smooth_maps(3, 8, 8, 1),
        random_pixel_mask(8, 8, 0.5, 0).unwrap(),
    )
    .unwrap();
    let comp = Compose::new(
        Scaled::new(C32::new(2.0, 0.0), sense.clone()),
        Identity::new(&[8, 8]),
    )
    .unwrap();
    let x = random_vector(64, 2);
    let mut first = vec![C32::default(); 64];
    comp.normal(&x, &mut first);
    for _ in 0..3 {
        let mut again = vec![C32::default(); 64];
        comp.normal(&x, &mut again);
        assert_eq!(first, again);
    }
}
