//! Criterion benchmarks of the centred orthonormal 2-D FFT (complex64).
//!
//! `RAYON_NUM_THREADS=1 cargo bench -p amri-core --bench fft` gives single-thread figures; the
//! batch benchmark runs its images in parallel when rayon has more than one thread.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use amri_core::fft::Fft2;
use amri_core::C32;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn data(n: usize) -> Vec<C32> {
    (0..n)
        .map(|i| {
            let t = i as f32;
            C32::new((t * 0.37).sin(), (t * 0.11).cos())
        })
        .collect()
}

fn bench_fft(c: &mut Criterion) {
    let mut g = c.benchmark_group("fft2c");
    for (batch, rows, cols) in [
        (1usize, 256usize, 256usize),
        (8, 256, 256),
        (1, 640, 368),
        (1, 255, 255),
    ] {
        let plan = Fft2::new(rows, cols);
        let mut buf = data(batch * rows * cols);
        let id = format!("{batch}x{rows}x{cols}");
        g.throughput(Throughput::Elements((batch * rows * cols) as u64));
        g.bench_function(BenchmarkId::new("forward", &id), |b| {
            b.iter(|| plan.forward_batch(black_box(&mut buf)))
        });
        g.bench_function(BenchmarkId::new("inverse", &id), |b| {
            b.iter(|| plan.inverse_batch(black_box(&mut buf)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench_fft
}
criterion_main!(benches);
