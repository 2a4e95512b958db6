#!/usr/bin/env python3
"""Compare amri's centred orthonormal 2-D FFT with FFTW (through pyfftw), in one run.

Usage (from the repository root; needs `pip install numpy pyfftw`):

    RAYON_NUM_THREADS=1 python3 bench/fft_vs_fftw.py [--sizes 256x256x1,256x256x8]

Each case is rows x cols x batch of complex64. For amri the script builds and runs
`cargo run --release -p amri-core --example fft_time`, which prints the median time of one
`Fft2::forward_batch` / `inverse_batch` call (centring and 1/sqrt(N) scale included, single
thread when RAYON_NUM_THREADS=1).

FFTW (single precision, FFTW_MEASURE, threads=1) is timed two ways:
- `fftw raw`: `FFTW.execute()` alone: the plain, uncentred, unnormalised out-of-place 2-D DFT.
  A lower bound: it does less work than amri.
- `fftw centred`: the same transform as amri, `fftshift(fft2(ifftshift(x), norm='ortho'))`, done
  as cheaply as numpy allows for even sizes: the input multiplied by the (-1)^(i+j)
  checkerboard into FFTW's input array, execute, the output multiplied by the checkerboard
  times the global sign (-1)^(rows/2+cols/2) and 1/sqrt(rows*cols) (two extra passes). For odd
  sizes the shifts are np.fft.ifftshift/fftshift copies. The result is checked against numpy.

amri and FFTW are timed in alternating rounds (--rounds, default 3) so that both see the same
background load. Times are the median and the minimum over 201 samples, each averaging the calls made in ~2 ms
(the minimum is the least disturbed by other processes on a shared machine).
"""
import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np
import pyfftw


def time_us(f):
    """Median and minimum time of one call of `f` in µs (201 samples of ~2 ms each)."""
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 0.3:
        f()
        n += 1
    per = (time.perf_counter() - t0) / n
    inner = max(1, int(0.002 / per))
    samples = []
    for _ in range(201):
        t = time.perf_counter()
        for _ in range(inner):
            f()
        samples.append((time.perf_counter() - t) / inner * 1e6)
    samples.sort()
    return samples[len(samples) // 2], samples[0]


def fftw_times(rows, cols, batch, forward=True):
    shape = (batch, rows, cols) if batch > 1 else (rows, cols)
    a = pyfftw.empty_aligned(shape, dtype="complex64")
    b = pyfftw.empty_aligned(shape, dtype="complex64")
    direction = "FFTW_FORWARD" if forward else "FFTW_BACKWARD"
    plan = pyfftw.FFTW(a, b, axes=(-2, -1), direction=direction, flags=("FFTW_MEASURE",), threads=1)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    a[...] = x
    raw = time_us(plan.execute)

    ax = (-2, -1)
    if rows % 2 == 0 and cols % 2 == 0:
        i = np.arange(rows)[:, None]
        j = np.arange(cols)[None, :]
        chk = np.where((i + j) % 2 == 0, 1.0, -1.0).astype(np.complex64)
        sign = -1.0 if (rows // 2 + cols // 2) % 2 else 1.0
        post = (chk * np.float32(sign / np.sqrt(rows * cols))).astype(np.complex64)
        y = np.empty(shape, np.complex64)

        def centred():
            np.multiply(x, chk, out=a)
            plan.execute()
            np.multiply(b, post, out=y)
            return y
    else:
        scale = np.float32(1.0 / np.sqrt(rows * cols))

        def centred():
            a[...] = np.fft.ifftshift(x, axes=ax)
            plan.execute()
            return np.fft.fftshift(b, axes=ax) * scale

    ref_fn = np.fft.fft2 if forward else np.fft.ifft2
    ref = np.fft.fftshift(ref_fn(np.fft.ifftshift(x.astype(np.complex128), axes=ax), axes=ax, norm="ortho"), axes=ax)
    got = centred()
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert err < 1e-5, f"FFTW centred transform disagrees with numpy: {err}"
    return raw, time_us(centred)


def amri_times(cases, binary=None):
    args = []
    for r, c, b in cases:
        args += [str(r), str(c), str(b)]
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "amri-core", "--example", "fft_time"], check=True)
        cmd = ["cargo", "run", "--release", "-q", "-p", "amri-core", "--example", "fft_time", "--"]
    else:
        cmd = [binary]
    out = subprocess.run(cmd + args, check=True, capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        tag, case, fwd, inv, fwd_min, inv_min = line.split()
        if tag == "amri":
            res[case] = ((float(fwd), float(fwd_min)), (float(inv), float(inv_min)))
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256x256x1,256x256x8", help="comma list of ROWSxCOLSxBATCH")
    p.add_argument("--rounds", type=int, default=3, help="alternate amri and FFTW this many times")
    p.add_argument("--amri-bin", help="prebuilt fft_time example binary (default: cargo run --release)")
    args = p.parse_args()
    cases = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if os.environ.get("RAYON_NUM_THREADS") != "1":
        print("note: RAYON_NUM_THREADS is not 1: amri batches may use several threads", file=sys.stderr)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  cpu: {model}  cores: {os.cpu_count()}  "
          f"numpy {np.__version__}  pyfftw {pyfftw.__version__}")
    # Alternate amri and FFTW so that both see the same background load; per case keep the
    # median of the per-round medians and the minimum of the minima.
    rounds = []
    for _ in range(args.rounds):
        amri = amri_times(cases, args.amri_bin)
        fftw = {}
        for r, c, b in cases:
            for forward in (True, False):
                fftw[(r, c, b, forward)] = fftw_times(r, c, b, forward)
        rounds.append((amri, fftw))

    def combine(pairs):
        meds = sorted(p[0] for p in pairs)
        return meds[len(meds) // 2], min(p[1] for p in pairs)
    print(f"times in µs, median (min) of one call over {args.rounds} alternating rounds; "
          "ratios of medians (of minima)")
    print("| case | dir | amri | FFTW raw | FFTW centred | amri / FFTW raw | amri / FFTW centred |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r, c, b in cases:
        key = f"{r}x{c}x{b}"
        for d, forward in (("fwd", True), ("inv", False)):
            t = combine([am[key][0 if forward else 1] for am, _ in rounds])
            raw = combine([fw[(r, c, b, forward)][0] for _, fw in rounds])
            cen = combine([fw[(r, c, b, forward)][1] for _, fw in rounds])
            print(
                f"| {key} | {d} | {t[0]:.1f} ({t[1]:.1f}) | {raw[0]:.1f} ({raw[1]:.1f}) | "
                f"{cen[0]:.1f} ({cen[1]:.1f}) | {t[0] / raw[0]:.2f} ({t[1] / raw[1]:.2f}) | "
                f"{t[0] / cen[0]:.2f} ({t[1] / cen[1]:.2f}) |"
            )


if __name__ == "__main__":
    main()
