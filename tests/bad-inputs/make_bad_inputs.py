#!/usr/bin/env python3
"""Re-create the broken inputs of tests/bad-inputs/ (run from this folder).

Each file is broken in one documented way; tests/cli.rs (`bad_input_corpus`) runs amri on each
and asserts a clear error naming the file, exit status 1 and no panic.
Needs numpy and nibabel; the truncations start from the shipped sample scans.
"""
import io
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

here = Path(__file__).resolve().parent
samples = here.parent.parent / "sample-scans"

# NIfTI cut to a third: gzip stream ends early.
good = (samples / "colin27/t1_axial_val.nii.gz").read_bytes()
(here / "truncated.nii.gz").write_bytes(good[: len(good) // 3])
# NIfTI with the magic overwritten.
img = nib.Nifti1Image(np.ones((8, 8, 2), np.float32), np.eye(4))
raw = bytearray(img.to_bytes())
raw[344:348] = b"XXXX"
(here / "wrong_magic.nii").write_bytes(bytes(raw))
# NIfTI whose header claims 30000^3 voxels in a 400-byte file.
hdr = bytearray(img.to_bytes()[:352])
# dim[] lives at byte offset 40
dims = np.array([3, 30000, 30000, 30000, 1, 1, 1, 1], "<i2")
hdr[40:56] = dims.tobytes()
(here / "huge_header.nii").write_bytes(bytes(hdr) + b"\0" * 48)
# NIfTI with a zero-sized dimension.
z = bytearray(img.to_bytes())
z[40:56] = np.array([3, 8, 0, 2, 1, 1, 1, 1], "<i2").tobytes()
(here / "zero_dim.nii").write_bytes(bytes(z))
# NIfTI holding NaN and Inf pixels (valid file; simulate must refuse it).
d = np.ones((16, 16, 2), np.float32)
d[3, 4, 0] = np.nan
d[5, 6, 1] = np.inf
nib.save(nib.Nifti1Image(d, np.eye(4)), str(here / "nan_pixels.nii"))
# Measured-data bundle whose mask does not match the k-space grid.
buf = io.BytesIO()
np.savez(buf, kspace=np.ones((2, 1, 8, 8), np.complex64), mask=np.ones((2, 8, 6), np.float32))
(here / "mask_mismatch.npz").write_bytes(buf.getvalue())
# Measured-data bundle with NaN k-space samples.
k = np.ones((1, 1, 8, 8), np.complex64)
k[0, 0, 2, 2] = np.nan
buf = io.BytesIO()
np.savez(buf, kspace=k)
(here / "nan_kspace.npz").write_bytes(buf.getvalue())
# A .npy whose (valid) header claims a 10^15-element array in a 192-byte file.
h = "{'descr': '<c8', 'fortran_order': False, 'shape': (100000, 100000, 100000), }"
h = h + " " * (118 - len(h) - 1) + "\n"
(here / "huge_shape.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode() + b"\0" * 64)
# A BART pair whose header dims do not match the data size.
(here / "short.hdr").write_text("# Dimensions\n64 64 1 1 1\n")
(here / "short.cfl").write_bytes(np.ones(100, np.complex64).tobytes())
# Not HDF5 at all.
(here / "not_hdf5.h5").write_bytes(b"this is not an HDF5 file\n" * 10)
# Protocols: wrong type, unknown key, out of range.
(here / "protocol_wrong_type.toml").write_text(
    'name = "x"\n[acquisition]\ncoils = "eight"\n[acquisition.corruption]\ntype = "pixel"\np = 0.5\n')
(here / "protocol_unknown_key.toml").write_text(
    'name = "x"\n[acquisition]\ncoils = 1\nnoise = 0.1\n[acquisition.corruption]\ntype = "pixel"\np = 0.5\n')
(here / "protocol_out_of_range.toml").write_text(
    'name = "x"\n[acquisition]\n[acquisition.corruption]\ntype = "kspace"\npattern = "random"\nacceleration = 0.5\ncenter_fraction = 0.08\n')

# --- Added for issue 9 (hardening, second pass) ---
# Image .npy with NaN, +Inf and -Inf pixels (valid file; simulate and train must refuse it).
d = np.ones((16, 16), np.float32)
d[2, 3] = np.nan
d[4, 5] = np.inf
d[6, 7] = -np.inf
np.save(here / "nan_pixels.npy", d)
# Image .npy with a zero-sized dimension.
np.save(here / "zero_dim.npy", np.ones((0, 16), np.float32))
# Measured-data bundle whose k-space has a zero-sized row axis.
buf = io.BytesIO()
np.savez(buf, kspace=np.ones((1, 1, 0, 8), np.complex64))
(here / "zero_dim_kspace.npz").write_bytes(buf.getvalue())
# Measured-data bundle with an infinite sample and a NaN imaginary part.
k = np.ones((1, 1, 8, 8), np.complex64)
k[0, 0, 1, 1] = np.inf
k[0, 0, 2, 2] = complex(0, np.nan)
buf = io.BytesIO()
np.savez(buf, kspace=k)
(here / "inf_kspace.npz").write_bytes(buf.getvalue())
# Measured-data bundle whose mask holds NaN (once read as "measured").
m = np.ones((1, 8, 8), np.float32)
m[0, 3, :] = np.nan
buf = io.BytesIO()
np.savez(buf, kspace=np.ones((1, 1, 8, 8), np.complex64), mask=m)
(here / "nan_mask.npz").write_bytes(buf.getvalue())
# Measured-data bundle cut in half: the zip's central directory is gone.
buf = io.BytesIO()
np.savez(buf, kspace=np.ones((1, 1, 8, 8), np.complex64))
(here / "truncated.npz").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
# BART pair with a NaN sample (the header and size are right).
(here / "nan_kspace.hdr").write_text("# Dimensions\n8 8 1 1 1\n")
c = np.ones(64, np.complex64)
c[5] = np.nan
(here / "nan_kspace.cfl").write_bytes(c.tobytes())
# DICOM cut in the middle of its pixel data.
dcm = (samples / "dicom/MR_small.dcm").read_bytes()
(here / "truncated.dcm").write_bytes(dcm[: len(dcm) - len(dcm) // 3])
# Protocols with wrong value types in the reconstruction and corruption tables.
(here / "protocol_wrong_type_lambda.toml").write_text(
    'name = "x"\n[acquisition]\n[acquisition.corruption]\ntype = "pixel"\np = 0.5\n'
    '[reconstruction]\nmethod = "tv"\nlambda = "small"\n')
(here / "protocol_wrong_type_acceleration.toml").write_text(
    'name = "x"\n[acquisition]\n[acquisition.corruption]\ntype = "kspace"\npattern = "random"\n'
    'acceleration = [4]\ncenter_fraction = 0.08\n')
print("ok")
