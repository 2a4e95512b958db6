#!/usr/bin/env python3
"""Makes the held-out subject of docs/benchmarks.md, "Fine-tuning on a held-out subject": axial
64x64 slices with 3 mm pixels of the MNI ICBM152 2009a symmetric T1 template (an average of 152
people, not one person), prepared as the Colin27 low-res slices the shipped 64x64 priors were
trained on (make_colin27.py, then make_lowres.py):

1. brain extraction: the template ships with its skull, Colin27's ch2better does not. Mask =
   (GM + WM probability of the same template) > 0.5, closed with a 3x3x3 ball twice, holes filled
   per axial slice (ventricles), dilated by one 1 mm voxel; voxels outside are set to 0;
2. cubic resampling (scipy map_coordinates, order 3) onto a 256x256 grid of 0.75 mm pixels
   (192 mm FOV, centred on the brain's bounding box, RAS: column -> x, row -> y) at axial
   positions DZ mm apart, rounding to uint8 as make_colin27.py does;
3. slices where less than 8 % of the 256x256 grid holds tissue (> 20) are dropped;
4. 4x4 block means -> 64x64, 3 mm pixels, float32, affine on the block centres (make_lowres.py);
5. split, interleaved: of the N brain slices, the 30 at round(linspace(0, N-1, 30)) are the
   fine-tuning slices, every other slice is scored. The two files hold disjoint slices.

Writes OUTDIR/mni_finetune_64.nii.gz, OUTDIR/mni_score_64.nii.gz and OUTDIR/split.txt (the slice
positions in mm), and the same two splits at 256x256 and 0.75 mm (the grid of step 2, before the
block means of step 4: the 256x256 priors' resolution) as OUTDIR/mni_finetune_256.nii.gz and
OUTDIR/mni_score_256.nii.gz. Needs numpy, scipy, nibabel, and the nilearn 0.14.1 wheel (a zip;
the template files are read from it, nothing is installed).

Source licence (the template archive's COPYING): Copyright (C) 1993-2004 Louis Collins, McConnell
Brain Imaging Centre, Montreal Neurological Institute, McGill University. Permission to use,
copy, modify, and distribute this software and its documentation for any purpose and without fee
is hereby granted, provided that the above copyright notice appear in all copies. The authors and
McGill University make no representations about the suitability of this software for any
purpose. It is provided "as is" without express or implied warranty.

Usage: python3 sample-scans/make_heldout.py [--wheel PATH] [--dz MM] [--out DIR]
(default: /tmp/nl/nilearn-0.14.1-py3-none-any.whl, 2 mm, runs/heldout). Deterministic.
"""
import argparse
import gzip
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

N, DX, F, N_FT = 256, 0.75, 4, 30
BASE = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def load(zf, kind):
    raw = gzip.decompress(zf.read(BASE.format(kind)))
    img = nib.Nifti1Image.from_bytes(raw)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", default="/tmp/nl/nilearn-0.14.1-py3-none-any.whl")
    ap.add_argument("--dz", type=float, default=2.0)
    ap.add_argument("--out", default="runs/heldout")
    a = ap.parse_args()
    with zipfile.ZipFile(a.wheel) as zf:
        t1, aff = load(zf, "t1")
        gm, _ = load(zf, "gm")
        wm, _ = load(zf, "wm")
    mask = (gm + wm) / 255.0 > 0.5
    mask = ndimage.binary_closing(mask, ndimage.generate_binary_structure(3, 1), iterations=2)
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    mask = ndimage.binary_dilation(mask, ndimage.generate_binary_structure(3, 1))
    brain = np.where(mask, t1, 0.0)
    idx = np.argwhere(mask)
    lo = aff[:3, :3] @ idx.min(0) + aff[:3, 3]
    hi = aff[:3, :3] @ idx.max(0) + aff[:3, 3]
    centre = (lo + hi) / 2
    nz = int(np.floor((hi[2] - lo[2]) / a.dz)) + 1
    out_aff = np.diag([DX, DX, a.dz, 1.0])
    out_aff[:3, 3] = [centre[0] - DX * (N - 1) / 2, centre[1] - DX * (N - 1) / 2, lo[2]]
    ii, jj, kk = np.meshgrid(np.arange(N), np.arange(N), np.arange(nz), indexing="ij")
    world = out_aff[:3, :3] @ np.stack([ii.ravel(), jj.ravel(), kk.ravel()]) + out_aff[:3, 3:4]
    vox = np.linalg.inv(aff) @ np.vstack([world, np.ones(world.shape[1])])
    res = ndimage.map_coordinates(brain, vox[:3], order=3, mode="constant", cval=0.0)
    res = np.clip(np.rint(res), 0, 255).reshape(N, N, nz)
    area = (res > 20).reshape(-1, nz).mean(0)
    keep = np.where(area > 0.08)[0]
    res = res[:, :, keep[0]: keep[-1] + 1]
    out_aff[:3, 3] += out_aff[:3, 2] * keep[0]
    nz = res.shape[2]
    low = res.reshape(N // F, F, N // F, F, nz).mean(axis=(1, 3)).astype(np.float32)
    laff = out_aff.copy()
    laff[:3, 3] = out_aff[:3, :3] @ np.array([(F - 1) / 2, (F - 1) / 2, 0.0]) + out_aff[:3, 3]
    laff[:3, :2] *= F
    ft = sorted(set(int(round(x)) for x in np.linspace(0, nz - 1, N_FT)))
    assert len(ft) == N_FT, "fewer brain slices than fine-tuning slices"
    sc = [k for k in range(nz) if k not in ft]
    z = [float(laff[2, 3] + a.dz * k) for k in range(nz)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write(low[:, :, ft], laff, out / "mni_finetune_64.nii.gz", "MNI152 2009a T1 axial, fine-tuning")
    write(low[:, :, sc], laff, out / "mni_score_64.nii.gz", "MNI152 2009a T1 axial, scored")
    full = res.astype(np.float32)
    write(full[:, :, ft], out_aff, out / "mni_finetune_256.nii.gz",
          "MNI152 2009a T1 axial 0.75 mm, fine-tuning")
    write(full[:, :, sc], out_aff, out / "mni_score_256.nii.gz",
          "MNI152 2009a T1 axial 0.75 mm, scored")
    with open(out / "split.txt", "w") as f:
        f.write(f"# {nz} brain slices, {a.dz} mm apart; z in mm (MNI)\n")
        f.write("finetune " + " ".join(f"{z[k]:.2f}" for k in ft) + "\n")
        f.write("score " + " ".join(f"{z[k]:.2f}" for k in sc) + "\n")
    print(f"{nz} brain slices {z[0]:.1f}..{z[-1]:.1f} mm every {a.dz} mm: "
          f"{len(ft)} fine-tuning, {len(sc)} scored")


def write(vol, aff, path, descrip):
    # Slices are not evenly spaced within one file: the affine's z step is the grid's, the
    # true positions are in split.txt (amri reads slices, not positions).
    img = nib.Nifti1Image(vol, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = descrip.encode()[:79]
    img.set_sform(aff, code=2)
    img.set_qform(aff, code=1)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as g:
        g.write(img.to_bytes())
    path.write_bytes(buf.getvalue())
    print(path.name, vol.shape)


if __name__ == "__main__":
    main()
