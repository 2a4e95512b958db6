//! Corruption-model tests: Ã's kept set ⊆ A's (property test over specs and seeds), the hidden
//! fraction is δ in expectation, ACS lines survive, draws are deterministic by seed, per-scan vs
//! per-step modes, noise only on measured entries, and the serde format.
#![allow(clippy::unwrap_used)]

use amri_core::C32;
use amri_ops::acquisition::Acquisition;
use amri_ops::blocks::BoxConvention;
use amri_ops::corruption::{
    Corruption, CorruptionSpec, Domain, FurtherMode, Kept, KspacePattern, Measurement,
};
use amri_ops::gaussian_cs::Entries;
use amri_ops::noise::Noise;
use amri_ops::testing::{adjoint_error, random_vector};
use ndarray::{Array2, Array3};
use proptest::prelude::*;

/// The acquisition measured by `spec` with further-corruption `delta`, `further` and `seed`.
fn config(spec: CorruptionSpec, delta: f64, further: FurtherMode, seed: u64) -> Acquisition {
    let mut a = Acquisition::of(spec);
    a.delta = delta;
    a.further = further;
    a.seed = seed;
    a
}

fn kspace(pattern: KspacePattern, acceleration: f64) -> CorruptionSpec {
    CorruptionSpec::Kspace {
        pattern,
        acceleration,
        center_fraction: 0.1,
        axis: 1,
    }
}

fn specs() -> Vec<CorruptionSpec> {
    vec![
        kspace(KspacePattern::Random, 4.0),
        kspace(KspacePattern::Equispaced, 4.0),
        kspace(KspacePattern::EquispacedFraction, 4.0),
        kspace(KspacePattern::Poisson, 3.0),
        CorruptionSpec::Pixel { p: 0.4 },
        CorruptionSpec::Boxes {
            count: 2,
            size: [6, 8],
            convention: BoxConvention::Clipped,
        },
        CorruptionSpec::GaussianCs {
            m: None,
            ratio: Some(0.1),
            entries: Entries::Complex,
        },
    ]
}

fn ids(m: &Measurement) -> Vec<usize> {
    match &m.kept {
        Kept::Mask(a) => a
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, _)| i)
            .collect(),
        Kept::Rows { ids, .. } => ids.clone(),
    }
}

fn assert_subset(a: &Measurement, b: &Measurement) {
    let ka = ids(a);
    for k in ids(b) {
        assert!(ka.binary_search(&k).is_ok(), "Ã keeps {k}, which A did not");
    }
    if let (Some(acs), Some(mb)) = (&a.acs, b.mask()) {
        for (p, v) in acs.iter().zip(mb.iter()) {
            if *p != 0.0 {
                assert_eq!(*v, 1.0, "ACS entry removed");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn further_is_a_subset_and_keeps_acs(seed in 0u64..10_000, scan in 0u64..100, step in 0u64..100, delta in 0.0f64..1.0) {
        for spec in specs() {
            let c = Corruption::new(&config(spec, delta, FurtherMode::PerStep, seed), 32, 40).unwrap();
            let a = c.measurement(scan, None).unwrap();
            let b = c.further(&a, scan, step).unwrap();
            assert_subset(&a, &b);
            prop_assert_eq!(a.op.ishape(), b.op.ishape());
            prop_assert!(adjoint_error(b.op.as_ref(), seed) < 1e-5);
        }
    }
}

/// Mean over scans of (hidden removable units) / (removable units of A).
fn hidden_fraction(spec: CorruptionSpec, delta: f64, scans: u64) -> f64 {
    let c = Corruption::new(
        &config(spec.clone(), delta, FurtherMode::PerScan, 1),
        48,
        48,
    )
    .unwrap();
    let (mut hidden, mut total) = (0usize, 0usize);
    for s in 0..scans {
        let a = c.measurement(s, None).unwrap();
        let b = c.further(&a, s, 0).unwrap();
        let removable = |m: &Measurement| match (&m.kept, &m.acs) {
            (Kept::Mask(k), Some(acs)) => k
                .iter()
                .zip(acs)
                .filter(|(v, p)| **v != 0.0 && **p == 0.0)
                .count(),
            _ => ids(m).len(),
        };
        let (ra, rb) = (removable(&a), removable(&b));
        hidden += ra - rb;
        total += ra;
    }
    hidden as f64 / total as f64
}

#[test]
fn hidden_fraction_is_delta_in_expectation() {
    let delta = 0.3;
    for spec in [
        CorruptionSpec::Pixel { p: 0.2 },
        kspace(KspacePattern::Poisson, 3.0),
        CorruptionSpec::GaussianCs {
            m: Some(400),
            ratio: None,
            entries: Entries::Real,
        },
    ] {
        let f = hidden_fraction(spec.clone(), delta, 40);
        // ≥ 16 000 Bernoulli units: std ≈ 0.0036; tolerance ≈ 5 sigma.
        assert!((f - delta).abs() < 0.02, "{spec:?}: {f}");
    }
    // Cartesian: units are whole lines (≈ 8 removable per scan), so average over more scans.
    let spec = kspace(KspacePattern::Random, 4.0);
    let c = Corruption::new(&config(spec, delta, FurtherMode::PerScan, 2), 48, 48).unwrap();
    let (mut hidden, mut total) = (0usize, 0usize);
    for s in 0..1500 {
        let a = c.measurement(s, None).unwrap();
        let b = c.further(&a, s, 0).unwrap();
        let line = |m: &Measurement| {
            let (k, acs) = (m.mask().unwrap(), m.acs.as_ref().unwrap());
            (0..48)
                .filter(|j| k[[0, *j]] == 1.0 && acs[[0, *j]] == 0.0)
                .count()
        };
        hidden += line(&a) - line(&b);
        total += line(&a);
    }
    let f = hidden as f64 / total as f64;
    // ≈ 12 000 lines: std ≈ 0.0042.
    assert!((f - delta).abs() < 0.021, "cartesian: {f}");
}

#[test]
fn boxes_add_one_box() {
    let spec = CorruptionSpec::Boxes {
        count: 1,
        size: [5, 5],
        convention: BoxConvention::Inside,
    };
    let mut cfg = config(spec, 0.1, FurtherMode::PerScan, 0);
    cfg.further_box_size = Some([4, 3]);
    let c = Corruption::new(&cfg, 30, 30).unwrap();
    for s in 0..20 {
        let a = c.measurement(s, None).unwrap();
        let b = c.further(&a, s, 0).unwrap();
        let hidden = a.kept_count() - b.kept_count();
        assert_eq!(a.kept_count(), 900 - 25);
        assert!(hidden <= 12, "extra box hides at most its area");
        assert_subset(&a, &b);
    }
}

#[test]
fn draws_are_deterministic_and_modes_differ_as_documented() {
    let spec = CorruptionSpec::Pixel { p: 0.3 };
    let per_scan =
        Corruption::new(&config(spec.clone(), 0.5, FurtherMode::PerScan, 42), 16, 16).unwrap();
    let per_step = Corruption::new(&config(spec, 0.5, FurtherMode::PerStep, 42), 16, 16).unwrap();
    let a1 = per_scan.measurement(3, None).unwrap();
    let a2 = per_step.measurement(3, None).unwrap();
    assert_eq!(a1.kept, a2.kept, "A depends only on (seed, scan)");
    assert_ne!(a1.kept, per_scan.measurement(4, None).unwrap().kept);
    let mut other = per_scan.acquisition().clone();
    other.seed = 43;
    let other_seed = Corruption::new(&other, 16, 16).unwrap();
    assert_ne!(a1.kept, other_seed.measurement(3, None).unwrap().kept);
    // PerScan: Ã fixed over steps. PerStep: Ã changes with the step but is reproducible.
    let f0 = per_scan.further(&a1, 3, 0).unwrap();
    let f9 = per_scan.further(&a1, 3, 9).unwrap();
    assert_eq!(f0.kept, f9.kept);
    let g0 = per_step.further(&a2, 3, 0).unwrap();
    let g9 = per_step.further(&a2, 3, 9).unwrap();
    assert_ne!(g0.kept, g9.kept);
    assert_eq!(g9.kept, per_step.further(&a2, 3, 9).unwrap().kept);
}

#[test]
fn multicoil_kspace_uses_sense_and_noise_only_on_measured_entries() {
    let (coils, r, c) = (3, 24, 20);
    let maps = Array3::from_shape_fn((coils, r, c), |(k, i, j)| {
        C32::from_polar(1.0 / (coils as f32).sqrt(), 0.1 * (k * i + j) as f32)
    });
    let mut cfg = config(
        kspace(KspacePattern::Random, 3.0),
        0.25,
        FurtherMode::PerScan,
        5,
    );
    cfg.coils = coils;
    let corr = Corruption::new(&cfg, r, c).unwrap();
    let a = corr.measurement(0, Some(&maps)).unwrap();
    assert_eq!(a.domain, Domain::Kspace);
    assert_eq!(a.op.oshape(), &[coils, r, c]);
    let x = random_vector(r * c, 1);
    let y = a
        .measure_with(&x, Noise::from_sigma(0.5).unwrap(), 7)
        .unwrap();
    let mut clean = vec![C32::default(); coils * r * c];
    a.op.forward(&x, &mut clean);
    let mask = a.mask().unwrap();
    let (mut noisy, mut measured) = (0.0f64, 0usize);
    for (idx, (yv, cv)) in y.iter().zip(&clean).enumerate() {
        let m = mask.as_slice().unwrap()[idx % (r * c)];
        if m == 0.0 {
            assert_eq!(*yv, C32::default());
        } else {
            noisy += (yv - cv).norm_sqr() as f64;
            measured += 1;
        }
    }
    let var = noisy / measured as f64;
    assert!((var - 0.25).abs() < 0.06, "noise power {var} vs σ² = 0.25");
    let b = corr.further(&a, 0, 0).unwrap();
    assert_eq!(b.op.oshape(), &[coils, r, c]);
    assert_subset(&a, &b);
    assert!(corr
        .measurement(0, Some(&Array3::zeros((2, r + 1, c))))
        .is_err());
}

#[test]
fn spec_deserialises_from_json_and_rejects_bad_values() {
    let json = r#"{
        "corruption": {"type": "kspace", "pattern": "equispaced_fraction", "acceleration": 4.0,
                       "center_fraction": 0.08},
        "noise_level": 0.01, "delta": 0.2, "further": "per_step"
    }"#;
    let cfg: Acquisition = serde_json::from_str(json).unwrap();
    assert_eq!(cfg.corruption, kspace_fraction());
    assert_eq!(cfg.further, FurtherMode::PerStep);
    let c = Corruption::new(&cfg, 64, 64).unwrap();
    let a = c.measurement(0, None).unwrap();
    assert_eq!(a.mask().unwrap().dim(), (64, 64));

    let minimal: Acquisition =
        serde_json::from_str(r#"{"corruption": {"type": "pixel", "p": 0.5}}"#).unwrap();
    assert_eq!(minimal.delta, 0.1);
    assert_eq!(minimal.further, FurtherMode::PerScan);
    assert_eq!(minimal.noise_level, 0.0);
    assert_eq!(minimal, Acquisition::of(CorruptionSpec::Pixel { p: 0.5 }));

    let bad = |spec: CorruptionSpec| {
        Corruption::new(&config(spec, 0.1, FurtherMode::PerScan, 0), 32, 32).is_err()
    };
    assert!(bad(CorruptionSpec::Pixel { p: 1.5 }));
    assert!(bad(kspace(KspacePattern::Random, 20.0)));
    assert!(bad(CorruptionSpec::GaussianCs {
        m: Some(3),
        ratio: Some(0.1),
        entries: Entries::Real
    }));
    assert!(bad(CorruptionSpec::Boxes {
        count: 1,
        size: [40, 2],
        convention: BoxConvention::Inside
    }));
    assert!(Corruption::new(
        &config(
            CorruptionSpec::Pixel { p: 0.5 },
            1.5,
            FurtherMode::PerScan,
            0
        ),
        8,
        8
    )
    .is_err());
}

fn kspace_fraction() -> CorruptionSpec {
    CorruptionSpec::Kspace {
        pattern: KspacePattern::EquispacedFraction,
        acceleration: 4.0,
        center_fraction: 0.08,
        axis: 1,
    }
}

#[test]
fn masks_are_binary_and_match_operators() {
    for spec in specs() {
        let c = Corruption::new(&config(spec, 0.2, FurtherMode::PerScan, 9), 32, 40).unwrap();
        let a = c.measurement(1, None).unwrap();
        if let Some(m) = a.mask() {
            assert!(m.iter().all(|v| *v == 0.0 || *v == 1.0));
            // The operator's output vanishes exactly where the mask is 0.
            let x = random_vector(32 * 40, 2);
            let mut y = vec![C32::default(); a.op.osize()];
            a.op.forward(&x, &mut y);
            let y = Array2::from_shape_vec((32, 40), y).unwrap();
            for (v, mv) in y.iter().zip(m.iter()) {
                assert_eq!(*mv == 0.0, *v == C32::default());
            }
        }
    }
}
