#!/usr/bin/env python3
"""Makes sample-scans/colin27/lowres/*_64.nii.gz: the Colin27 axial sample slices reduced from
256×256 (0.75 mm) to 64×64 (3 mm) by 4×4 block means, for the CPU-trained shipped prior
(models/colin27-64-r4-ambient) and the prior part of `amri demo`. Needs numpy and nibabel.
Run from the repository root: python3 sample-scans/make_lowres.py
"""
import nibabel as nib
import numpy as np

F = 4
for name in ("train1", "train2", "val"):
    src = nib.load(f"sample-scans/colin27/t1_axial_{name}.nii.gz")
    d = np.asarray(src.dataobj, dtype=np.float32)
    nx, ny, nz = d.shape
    low = d.reshape(nx // F, F, ny // F, F, nz).mean(axis=(1, 3))
    aff = src.affine.copy()
    # Voxel (i, j) of the block-mean grid is centred on old voxel F·i + (F−1)/2.
    centre = aff[:3, :3] @ np.array([(F - 1) / 2, (F - 1) / 2, 0.0]) + aff[:3, 3]
    aff[:3, :2] *= F
    aff[:3, 3] = centre
    img = nib.Nifti1Image(low.astype(np.float32), aff)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"Colin27 T1 axial, 4x4 block mean (amri make_lowres.py)"
    nib.save(img, f"sample-scans/colin27/lowres/t1_axial_{name}_64.nii.gz")
    print(name, low.shape)
