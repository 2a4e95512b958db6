//! Times the centred orthonormal 2-D FFT and prints one line per case, for
//! `bench/fft_vs_fftw.py` to compare with FFTW.
//!
//! Usage: `cargo run --release -p amri-core --example fft_time -- [rows cols batch ...]`
//! (default: `256 256 1 256 256 8`). Output lines: `amri <rows>x<cols>x<batch> <forward µs>
//! <inverse µs> <forward min µs> <inverse min µs>`: the median and the minimum over 201 samples
//! of the time of one call (each sample averages the calls made in about 2 ms). Run with `RAYON_NUM_THREADS=1`
//! for single-thread figures.

use std::time::Instant;

use amri_core::fft::Fft2;
use amri_core::C32;

/// Median and minimum wall time of one call of `f`, in microseconds.
fn time_us(mut f: impl FnMut()) -> (f64, f64) {
    // Warm up (plans, scratch, caches), then size the inner loop to ~2 ms per sample.
    let t0 = Instant::now();
    let mut warm = 0;
    while t0.elapsed().as_secs_f64() < 0.3 {
        f();
        warm += 1;
    }
    let per = t0.elapsed().as_secs_f64() / warm as f64;
    let inner = ((0.002 / per) as usize).max(1);
    let mut samples: Vec<f64> = (0..201)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed().as_secs_f64() / inner as f64 * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0])
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let cases = if args.len() >= 3 {
        args
    } else {
        vec![256, 256, 1, 256, 256, 8]
    };
    for case in cases.chunks_exact(3) {
        let (rows, cols, batch) = (case[0], case[1], case[2]);
        let plan = Fft2::new(rows, cols);
        let mut buf: Vec<C32> = (0..rows * cols * batch)
            .map(|i| C32::new((i as f32 * 0.37).sin(), (i as f32 * 0.11).cos()))
            .collect();
        let fwd = time_us(|| plan.forward_batch(std::hint::black_box(&mut buf)));
        let inv = time_us(|| plan.inverse_batch(std::hint::black_box(&mut buf)));
        println!(
            "amri {rows}x{cols}x{batch} {:.2} {:.2} {:.2} {:.2}",
            fwd.0, inv.0, fwd.1, inv.1
        );
    }
}
