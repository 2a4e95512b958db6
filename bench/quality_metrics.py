#!/usr/bin/env python3
"""Helpers of bench/quality_table.sh that the amri CLI does not offer.

  subset IN.nii.gz OUT.nii.gz N     keep the N central slices (axis 2) of a 3-D NIfTI volume
  metrics DATA.npz IMAGE            PSNR/SSIM/NMSE of IMAGE (BART .cfl stem/file [row, col, slice]
                                    or amri .npy [1, slice, row, col]) against the reference stored
                                    in amri's DATA.npz; prints `psnr,ssim,nmse`
  inpaint DATA.npz OUT.npy          classical inpainting baseline for image-domain (pixel/box) data,
                                    which amri's l1/TV/CG do not reconstruct: scikit-image's
                                    biharmonic inpainting of each slice's measured magnitudes;
                                    writes [1, slice, row, col] and prints its wall seconds
  figure RUN_DIR OUT.png [DIR…]     the central slice of every reconstruction shown in
                                    RUN_DIR/quality.md (a row of tiles per setting, reference
                                    first, PSNR in the captions); images are looked up in RUN_DIR,
                                    then in the DIRs (e.g. the run given to --classical-from)
  table ROWS OUT_CSV MD HEADER [MEASURED]
                                    mark the best-PSNR λ of each swept method in ROWS (CSV), write
                                    OUT_CSV (with a `best` column) and the Markdown tables in MD
                                    (HEADER, a Markdown file, first); MEASURED (CSV setting,
                                    measured_pct) overrides the rows' measured fractions

The metrics are fastMRI's (`fastmri/evaluate.py`) as amri computes them
(crates/amri-core/src/metrics.rs): magnitude images; NMSE and PSNR over the whole volume with
data_range = max of the reference volume; SSIM per slice (scikit-image, 7x7 uniform window,
sample covariance, K1 = 0.01, K2 = 0.03) with that same data range, averaged over slices.
amri's own numbers are used for every amri row; this is only for BART's images, and the script
checks it against amri's numbers on an amri output in every run (`commands.log`).
"""
import csv
import sys

import numpy as np


def read_cfl(path):
    """A BART cfl as a complex array in Fortran order (its header's dimensions)."""
    stem = path[:-4] if path.endswith((".cfl", ".hdr")) else path
    with open(stem + ".hdr", encoding="ascii") as f:
        lines = f.read().splitlines()
    try:
        dims = [int(x) for x in lines[lines.index("# Dimensions") + 1].split()]
    except (ValueError, IndexError) as e:
        raise SystemExit(f"{stem}.hdr: no readable '# Dimensions' line ({e})")
    data = np.fromfile(stem + ".cfl", dtype=np.complex64)
    if data.size != int(np.prod(dims)):
        raise SystemExit(f"{stem}.cfl: {data.size} samples, header says {dims}")
    return data.reshape(dims, order="F")


def read_image(path):
    """A magnitude volume [slice, row, col] from a BART cfl or an amri .npy."""
    if path.endswith(".npy"):
        a = np.abs(np.load(path))
        while a.ndim > 3 and a.shape[0] == 1:
            a = a[0]
        return a.astype(np.float64)
    a = read_cfl(path)
    if any(d != 1 for d in a.shape[3:]):
        raise SystemExit(f"{path}: expected [row, col, slice], got dims {list(a.shape)}")
    a = a.reshape(a.shape[:3], order="F")
    return np.abs(a).transpose(2, 0, 1).astype(np.float64)


def volume_metrics(gt, pred):
    """(psnr dB, ssim, nmse) of magnitude volumes [slice, row, col], fastMRI definitions."""
    from skimage.metrics import structural_similarity

    if gt.shape != pred.shape:
        raise SystemExit(f"reference {gt.shape} and image {pred.shape} differ in shape")
    if not np.all(np.isfinite(pred)):
        raise SystemExit("image has NaN or infinite samples")
    rng = float(gt.max())
    mse = float(np.mean((gt - pred) ** 2))
    psnr = 10.0 * np.log10(rng * rng / mse)
    nmse = float(np.sum((gt - pred) ** 2) / np.sum(gt**2))
    ssim = float(
        np.mean(
            [
                structural_similarity(g, p, data_range=rng, win_size=7, K1=0.01, K2=0.03)
                for g, p in zip(gt, pred)
            ]
        )
    )
    return psnr, ssim, nmse


def cmd_subset(src, dst, n):
    import nibabel as nib

    img = nib.load(src)
    data = np.asanyarray(img.dataobj)
    if data.ndim != 3:
        raise SystemExit(f"{src}: expected a 3-D volume, got shape {data.shape}")
    n = int(n)
    total = data.shape[2]
    if not 1 <= n <= total:
        raise SystemExit(f"{src}: asked for {n} slices of {total}")
    start = (total - n) // 2
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ np.array([0.0, 0.0, start]) + img.affine[:3, 3]
    out = nib.Nifti1Image(data[:, :, start : start + n], affine, img.header)
    nib.save(out, dst)
    print(f"{src}: slices {start}..{start + n - 1} of {total} -> {dst}")


def cmd_metrics(npz, image):
    with np.load(npz) as z:
        if "reference" not in z.files:
            raise SystemExit(f"{npz}: no reference image stored")
        gt = z["reference"].astype(np.float64)
    psnr, ssim, nmse = volume_metrics(gt, read_image(image))
    print(f"{psnr:.6f},{ssim:.6f},{nmse:.8f}")


def cmd_inpaint(npz, out):
    import os
    import time

    from skimage.restoration import inpaint_biharmonic

    with np.load(npz) as z:
        data, mask = z["kspace"], z["mask"]
    if data.ndim != 4 or data.shape[1] != 1 or mask.shape != (data.shape[0],) + data.shape[2:]:
        raise SystemExit(f"{npz}: expected single-coil data [slice, 1, row, col] and a mask "
                         f"[slice, row, col], got {data.shape} and {mask.shape}")
    t0 = time.perf_counter()
    img = np.abs(data[:, 0]).astype(np.float64)
    rec = np.stack([inpaint_biharmonic(x, m == 0) for x, m in zip(img, mask)])
    seconds = time.perf_counter() - t0
    tmp = out + ".tmp.npy"
    np.save(tmp, rec[None].astype(np.float32))
    os.replace(tmp, out)
    print(f"{seconds:.6f}")


SHORT = {
    "zero-filled": "zero-filled",
    "l1-wavelet": "l1 amri",
    "tv": "TV amri",
    "bart-l1": "l1 BART",
    "bart-tv": "TV BART",
    "biharmonic": "biharmonic",
    "one-step": "one-step",
    "one-step-dc": "one-step+DC",
    "iterative": "iterative",
}


def image_path(r, dirs):
    """The file of a quality.csv row's reconstruction (bench/quality_table.sh's layout)."""
    import os

    key, m, lam = r["setting"], r["method"], r["lambda"]
    model = os.path.basename(os.path.normpath(r["model"])) if r["model"] else ""
    rel = {
        "zero-filled": f"recon/{key}/zero-filled.npy",
        "l1-wavelet": f"recon/{key}/l1_{lam}.npy",
        "tv": f"recon/{key}/tv_{lam}.npy",
        "bart-l1": f"bart/{key}/l1_{lam}.cfl",
        "bart-tv": f"bart/{key}/tv_{lam}.cfl",
        "biharmonic": f"recon/{key}/biharmonic.npy",
        "one-step": f"recon/{key}/{model}_one-step.npy",
        "one-step-dc": f"recon/{key}/{model}_one-step-dc.npy",
        "iterative": f"recon/{key}/{model}_iterative.npy",
    }.get(m)
    if rel is None:
        return None
    for d in dirs:
        if os.path.exists(os.path.join(d, rel)):
            return os.path.join(d, rel)
    return None


def cmd_figure(run_dir, png, *more):
    import os

    from PIL import Image, ImageDraw

    dirs = [run_dir, *more]
    with open(os.path.join(run_dir, "quality.csv"), newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["best"] == "1" and r["status"] == "ok"]
    settings = []
    for r in rows:
        if r["setting"] not in settings:
            settings.append(r["setting"])
    scale, tile, cap, left = 2, 128, 28, 120
    grid = []
    for s in settings:
        with np.load(os.path.join(run_dir, "data", f"{s}.npz")) as z:
            ref = z["reference"].astype(np.float64)
        mid = ref.shape[0] // 2
        vmax = float(ref[mid].max()) or 1.0
        tiles = [(ref[mid], "reference")]
        for r in rows:
            if r["setting"] != s or r["method"] == "cg-sense":
                continue
            p = image_path(r, dirs)
            if p is None:
                print(f"figure: no image for {s} {r['label']} (skipped)", file=sys.stderr)
                continue
            lam = f" {float(r['lambda']):g}" if r["lambda"] else ""
            tiles.append((read_image(p)[mid], f"{SHORT[r['method']]}{lam}\n{float(r['psnr']):.2f} dB"))
        grid.append((s, tiles, vmax))
    cols = max(len(t) for _, t, _ in grid)
    img = Image.new("L", (left + cols * tile, len(grid) * (tile + cap)), 255)
    draw = ImageDraw.Draw(img)
    for i, (s, tiles, vmax) in enumerate(grid):
        y = i * (tile + cap)
        draw.text((4, y + tile // 2), s, fill=0)
        for j, (a, text) in enumerate(tiles):
            a8 = (np.clip(a / vmax, 0, 1) * 255).astype(np.uint8)
            t = Image.fromarray(a8).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST)
            img.paste(t, (left + j * tile, y))
            draw.multiline_text((left + j * tile + 2, y + tile + 1), text, fill=0, spacing=1)
    tmp = png + ".tmp.png"
    img.save(tmp)
    os.replace(tmp, png)
    print(f"wrote {png}: {len(grid)} settings, central slice, window 0..reference max")


def fmt(v, digits):
    return "" if v in ("", None) else f"{float(v):.{digits}f}"


def mark_best(rows):
    """Sets `best` = 1 on the rows shown in the tables: every row without λ, and for each
    (setting, label) swept over λ the ok row with the highest PSNR (or its first row if none
    is ok)."""
    groups = {}
    for r in rows:
        r["best"] = "0"
        if r["lambda"] in ("", None):
            r["best"] = "1"
        else:
            groups.setdefault((r["setting"], r["label"]), []).append(r)
    for rs in groups.values():
        ok = [r for r in rs if r["status"] == "ok" and r["psnr"] != ""]
        pick = max(ok, key=lambda r: float(r["psnr"])) if ok else rs[0]
        pick["best"] = "1"
        lams = sorted(float(r["lambda"]) for r in rs)
        if ok and len(lams) > 1 and float(pick["lambda"]) in (lams[0], lams[-1]):
            edge = "best λ at the edge of the grid"
            pick["note"] = f"{pick['note']}; {edge}" if pick["note"] else edge


def cmd_table(rows_path, csv_path, md_path, header_path, measured_path=None):
    import os

    with open(rows_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames) + ["best"]
        rows = list(reader)
    if measured_path:
        # This run's measured fractions (rows reused from other runs keep theirs otherwise).
        with open(measured_path, newline="", encoding="utf-8") as f:
            measured = {r["setting"]: r["measured_pct"] for r in csv.DictReader(f)}
        for r in rows:
            r["measured_pct"] = measured.get(r["setting"], r["measured_pct"])
    mark_best(rows)
    tmp = csv_path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, csv_path)
    with open(header_path, encoding="utf-8") as f:
        out = [f.read().rstrip("\n"), ""]
    settings = []
    for r in rows:
        if r["setting"] not in settings:
            settings.append(r["setting"])
    for s in settings:
        rs = [r for r in rows if r["setting"] == s and r["best"] == "1"]
        first = rs[0]
        out.append(
            f"### {first['setting_label']} (`{first['protocol']}`, {first['measured_pct']} % "
            f"measured, {first['slices']} slices)"
        )
        out.append("")
        out.append("| method | λ | PSNR dB | SSIM | NMSE | wall s/slice | note |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for r in rs:
            if r["status"] == "ok":
                vals = [fmt(r["psnr"], 2), fmt(r["ssim"], 3), fmt(r["nmse"], 4)]
                t = float(r["seconds_per_slice"])
                vals.append(f"{t:.3f}" if t < 1 else f"{t:.2f}")
            else:
                vals = ["", "", "", ""]
            note = r["note"] if r["status"] == "ok" else (r["note"] or r["status"])
            out.append(f"| {r['label']} | {r['lambda']} | " + " | ".join(vals) + f" | {note} |")
        out.append("")
    sweep = [r for r in rows if r["lambda"] not in ("", None) and r["status"] == "ok"]
    if sweep:
        out.append("### λ sweeps (PSNR dB; bold: the λ used above)")
        out.append("")
        lams = sorted({float(r["lambda"]) for r in sweep})
        out.append("| setting | method | " + " | ".join(f"λ={l:g}" for l in lams) + " |")
        out.append("| --- | --- |" + " ---: |" * len(lams))
        keys = []
        for r in sweep:
            k = (r["setting"], r["label"])
            if k not in keys:
                keys.append(k)
        for s, label in keys:
            by = {float(r["lambda"]): r for r in sweep if (r["setting"], r["label"]) == (s, label)}
            cells = []
            for l in lams:
                r = by.get(l)
                if r is None:
                    cells.append("")
                else:
                    v = fmt(r["psnr"], 2)
                    cells.append(f"**{v}**" if r["best"] == "1" else v)
            out.append(f"| {s} | {label} | " + " | ".join(cells) + " |")
        out.append("")
    tmp = md_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    os.replace(tmp, md_path)


def main(argv):
    # name: (function, least arguments, most arguments)
    cmds = {
        "subset": (cmd_subset, 3, 3),
        "metrics": (cmd_metrics, 2, 2),
        "inpaint": (cmd_inpaint, 2, 2),
        "figure": (cmd_figure, 2, 99),
        "table": (cmd_table, 4, 5),
    }
    if len(argv) < 2 or argv[1] not in cmds or not cmds[argv[1]][1] <= len(argv) - 2 <= cmds[argv[1]][2]:
        raise SystemExit(__doc__)
    fn = cmds[argv[1]][0]
    fn(*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
