//! Thresholding and projection primitives on complex vectors (SigPy's `thresh.py`), kept apart
//! from the [`crate::prox`] wrappers that use them.

use amri_core::C32;

/// Complex soft-thresholding in place: `x ← max(|x| − λ, 0) · x / |x|` — shrinks the magnitude
/// by `λ ≥ 0` and keeps the phase; the proximal map of `λ‖x‖₁` with `‖x‖₁ = Σ |x_i|`.
pub fn soft_thresh(lambda: f32, x: &mut [C32]) {
    for v in x.iter_mut() {
        *v = soft(lambda, *v);
    }
}

/// Soft-thresholding of one complex value (see [`soft_thresh`]).
#[inline]
pub fn soft(lambda: f32, v: C32) -> C32 {
    let m2 = v.norm_sqr();
    if m2 <= lambda * lambda {
        C32::new(0.0, 0.0)
    } else {
        let m = m2.sqrt();
        v * ((m - lambda) / m)
    }
}

/// Complex hard-thresholding in place: zeroes entries with `|x| ≤ λ`, keeps the others.
pub fn hard_thresh(lambda: f32, x: &mut [C32]) {
    for v in x.iter_mut() {
        if v.norm_sqr() <= lambda * lambda {
            *v = C32::new(0.0, 0.0);
        }
    }
}

/// Projection onto the ℓ∞ ball of radius `λ` in place: `x ← x · min(1, λ/|x|)` per entry; the
/// proximal map of the convex conjugate of `λ‖·‖₁` (for any step).
pub fn project_linf_ball(lambda: f32, x: &mut [C32]) {
    for v in x.iter_mut() {
        let m = v.norm();
        if m > lambda {
            *v *= lambda / m;
        }
    }
}

/// `Σ |x_i|`, the complex ℓ1 norm, accumulated in `f64`.
pub fn l1_norm(x: &[C32]) -> f64 {
    x.iter().map(|v| v.norm() as f64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_threshold_closed_form() {
        // |3 + 4i| = 5: shrinking by 2 leaves magnitude 3 with the same phase.
        let mut x = [C32::new(3.0, 4.0), C32::new(0.3, -0.4), C32::new(-2.0, 0.0)];
        soft_thresh(2.0, &mut x);
        assert!((x[0] - C32::new(1.8, 2.4)).norm() < 1e-6);
        assert_eq!(x[1], C32::new(0.0, 0.0));
        assert_eq!(x[2], C32::new(0.0, 0.0)); // |−2| ≤ 2
        let mut y = [C32::new(-5.0, 0.0)];
        soft_thresh(1.5, &mut y);
        assert!((y[0] - C32::new(-3.5, 0.0)).norm() < 1e-6);
    }

    #[test]
    fn soft_threshold_is_the_l1_prox() {
        // Optimality: u = soft(v) minimises ½|u − v|² + λ|u|; check against a grid search.
        let v = C32::new(0.7, -1.1);
        let lam = 0.6f32;
        let u = soft(lam, v);
        let f = |w: C32| 0.5 * (w - v).norm_sqr() + lam * w.norm();
        let fu = f(u);
        for i in -40..=40 {
            for j in -40..=40 {
                let w = C32::new(i as f32 * 0.05, j as f32 * 0.05);
                assert!(fu <= f(w) + 1e-6);
            }
        }
    }

    #[test]
    fn hard_threshold_and_projection() {
        let mut x = [C32::new(0.5, 0.0), C32::new(0.0, 2.0)];
        hard_thresh(1.0, &mut x);
        assert_eq!(x, [C32::new(0.0, 0.0), C32::new(0.0, 2.0)]);
        let mut p = [C32::new(3.0, 4.0), C32::new(0.1, 0.0)];
        project_linf_ball(1.0, &mut p);
        assert!((p[0] - C32::new(0.6, 0.8)).norm() < 1e-6);
        assert_eq!(p[1], C32::new(0.1, 0.0));
        assert!((l1_norm(&[C32::new(3.0, 4.0), C32::new(-1.0, 0.0)]) - 6.0).abs() < 1e-9);
    }
}
