#!/usr/bin/env python3
"""Re-create sample-scans/colin27/*.nii.gz from Debian's mricron-data package.

Source: /usr/share/mricron/templates/ch2better.nii.gz (Colin27 single-subject T1, 0.5 mm
isotropic, 301x370x316, uint8, RAS; BSD-3-clause, Copyright 2006-2010 Chris Rorden).
Output: axial slices resampled to a 256x256 grid of 0.75 mm pixels (192 mm FOV, centred on
the head) and 0.75 mm slice spacing, cubic interpolation, stored as uint8 NIfTI-1, split by slice
region into train and validation files (see sample-scans/README.md).

Deterministic: the same package version gives the same bytes (gzip mtime fixed to 0).
Needs: numpy, scipy, nibabel.
"""
import gzip
import io
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/mricron/templates/ch2better.nii.gz")
OUT = Path(__file__).resolve().parent / "colin27"
N = 256          # in-plane matrix
DX = 0.75        # in-plane pixel size, mm
DZ = 0.75        # slice spacing, mm
VAL_SLICES = 24  # contiguous validation block
GAP = 6          # slices left out on each side of the validation block (4.5 mm)


def main():
    img = nib.load(str(SRC))
    data = np.asarray(img.dataobj, dtype=np.float32)
    aff = img.affine
    # World bounding box of the head (voxels above a small threshold).
    idx = np.argwhere(data > 10)
    lo = aff[:3, :3] @ idx.min(0) + aff[:3, 3]
    hi = aff[:3, :3] @ idx.max(0) + aff[:3, 3]
    centre = (lo + hi) / 2
    nz = int(np.floor((hi[2] - lo[2]) / DZ)) + 1
    # Target affine: RAS, voxel (i=col -> x, j=row -> y, k=slice -> z).
    out_aff = np.diag([DX, DX, DZ, 1.0])
    out_aff[:3, 3] = [centre[0] - DX * (N - 1) / 2, centre[1] - DX * (N - 1) / 2, lo[2]]
    ii, jj, kk = np.meshgrid(np.arange(N), np.arange(N), np.arange(nz), indexing="ij")
    world = out_aff[:3, :3] @ np.stack([ii.ravel(), jj.ravel(), kk.ravel()]) + out_aff[:3, 3:4]
    vox = np.linalg.inv(aff) @ np.vstack([world, np.ones(world.shape[1])])
    res = ndimage.map_coordinates(data, vox[:3], order=3, mode="constant", cval=0.0)
    res = np.clip(np.rint(res), 0, 255).astype(np.uint8).reshape(N, N, nz)
    # Keep slices that hold a reasonable amount of head.
    area = (res > 20).reshape(-1, nz).mean(0)
    keep = np.where(area > 0.08)[0]
    res = res[:, :, keep[0]: keep[-1] + 1]
    out_aff[:3, 3] += out_aff[:3, 2] * keep[0]
    nz = res.shape[2]
    # Validation: a contiguous block in the upper-middle of the brain (ventricles, cortex).
    v0 = int(nz * 0.55)
    val = range(v0, v0 + VAL_SLICES)
    train = [k for k in range(nz) if k < v0 - GAP or k >= v0 + VAL_SLICES + GAP]
    OUT.mkdir(exist_ok=True)
    write(res[:, :, list(val)], shift(out_aff, v0), OUT / "t1_axial_val.nii.gz",
          f"Colin27 T1 axial val slices {v0}-{v0 + VAL_SLICES - 1}")
    # Training slices are not contiguous: store them as they are, slice positions in the
    # description and sidecar; the affine is that of the first kept slice with DZ spacing
    # only within each contiguous run, so we write the two runs separately.
    runs = [[k for k in train if k < v0], [k for k in train if k >= v0]]
    for n, run in enumerate(runs):
        write(res[:, :, run], shift(out_aff, run[0]), OUT / f"t1_axial_train{n + 1}.nii.gz",
              f"Colin27 T1 axial train slices {run[0]}-{run[-1]}")
    print(f"{nz} slices kept; val {v0}-{v0 + VAL_SLICES - 1}; train runs "
          f"{runs[0][0]}-{runs[0][-1]}, {runs[1][0]}-{runs[1][-1]}")


def shift(aff, k):
    a = aff.copy()
    a[:3, 3] += a[:3, 2] * k
    return a


def write(vol, aff, path, descrip):
    img = nib.Nifti1Image(vol, aff)
    img.header.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = descrip.encode()[:79]
    img.set_sform(aff, code=2)
    img.set_qform(aff, code=1)
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as g:
        g.write(raw)
    path.write_bytes(buf.getvalue())
    print(path.name, vol.shape, len(buf.getvalue()) // 1024, "KiB")


if __name__ == "__main__":
    main()
