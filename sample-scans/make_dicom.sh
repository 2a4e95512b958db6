#!/usr/bin/env bash
# Recreates sample-scans/dicom/ and the reference fixtures in crates/amri-io/tests/fixtures/dicom/
# from the pydicom 3.0.2 wheel (MIT licence; test files under pydicom/data/test_files/).
#
# Needs: python3 with pydicom==3.0.2, numpy, pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-libjpeg
#   pip install pydicom==3.0.2 numpy pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg
# Usage (from the repository root): bash sample-scans/make_dicom.sh
#
# What it writes
# - sample-scans/dicom/: copies of pydicom test files (MR_small in every transfer syntax, a
#   truncated file, the MR700 and MR2 series folders), plus files made here with pydicom:
#   MR_small_deflate.dcm (deflated explicit VR LE), MR_small_uint8.dcm / MR_small_int32.dcm
#   (8-bit unsigned, 32-bit signed with rescale), oblique_stack/ (a 5-slice oblique series with
#   non-square pixels, rescale, shuffled file names and InstanceNumbers that disagree with the
#   slice positions), and enhanced/ (Enhanced MR Image Storage multi-frame files made from the
#   MR700 slices and from oblique_stack).
# - crates/amri-io/tests/fixtures/dicom/: the stored pixel values pydicom decodes
#   (`pixel_array`, before any rescale) as raw little-endian int32 `.i32` files, and
#   expected.json giving for every sample the shape, rescale, SOPInstanceUID order and the RAS
#   affine computed here with numpy from the pydicom attributes (nibabel/dicom2nifti
#   convention: column 0 = row direction (IOP[0:3]) x PixelSpacing[1], column 1 = column
#   direction (IOP[3:6]) x PixelSpacing[0], column 2 = (IPP_last - IPP_first)/(n-1) for a stack
#   or normal x SliceThickness for one slice, column 3 = IPP of the first slice; then
#   diag(-1,-1,1) for LPS -> RAS).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${TMPDIR:-/tmp}/amri-pydicom-wheel"
if [ ! -d "$WORK/x/pydicom/data/test_files" ]; then
    mkdir -p "$WORK"
    python3 -m pip download --no-deps -d "$WORK" pydicom==3.0.2
    (cd "$WORK" && python3 -m zipfile -e pydicom-3.0.2-py3-none-any.whl x)
fi
export SRC="$WORK/x/pydicom/data/test_files"
export OUT="$ROOT/sample-scans/dicom"
export FIX="$ROOT/crates/amri-io/tests/fixtures/dicom"
rm -rf "$OUT/MR700" "$OUT/MR2" "$OUT/oblique_stack" "$OUT/enhanced"
mkdir -p "$OUT" "$FIX"
for f in MR_small.dcm MR_small_implicit.dcm MR_small_bigendian.dcm MR_small_expb.dcm \
    MR_small_RLE.dcm MR_small_jp2klossless.dcm MR_small_jpeg_ls_lossless.dcm \
    MR_small_padded.dcm MR_truncated.dcm; do
    cp "$SRC/$f" "$OUT/$f"
done
cp -r "$SRC/dicomdirtests/98892003/MR700" "$OUT/MR700"
cp -r "$SRC/dicomdirtests/98892003/MR2" "$OUT/MR2"

python3 - <<'EOF'
import copy, glob, hashlib, json, os
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, generate_uid)

SRC, OUT, FIX = os.environ["SRC"], os.environ["OUT"], os.environ["FIX"]
PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root; entropy makes the UIDs reproducible

def uid(*parts):
    return generate_uid(prefix=PREFIX, entropy_srcs=["amri-dicom-fixture", *map(str, parts)])

# --- files made here -------------------------------------------------------------------------
small = pydicom.dcmread(os.path.join(SRC, "MR_small.dcm"))
px = small.pixel_array.astype(np.int32)

d = copy.deepcopy(small)
d.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
d.save_as(os.path.join(OUT, "MR_small_deflate.dcm"), enforce_file_format=True)

d = copy.deepcopy(small)
u8 = (px * 255 // px.max()).astype(np.uint8)
d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation = 8, 8, 7, 0
for t in ("SmallestImagePixelValue", "LargestImagePixelValue"):
    del d[t]
d.PixelData = u8.tobytes()
d.RescaleSlope, d.RescaleIntercept = "0.5", "10"
d.SOPInstanceUID = d.file_meta.MediaStorageSOPInstanceUID = uid("u8")
d.save_as(os.path.join(OUT, "MR_small_uint8.dcm"), enforce_file_format=True)

d = copy.deepcopy(small)
s32 = (px * 1000 - 1_000_000).astype(np.int32)
d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation = 32, 32, 31, 1
for t in ("SmallestImagePixelValue", "LargestImagePixelValue"):
    del d[t]
d.PixelData = s32.astype("<i4").tobytes()
d.RescaleSlope, d.RescaleIntercept = "0.001", "1000"
d.SOPInstanceUID = d.file_meta.MediaStorageSOPInstanceUID = uid("s32")
d.save_as(os.path.join(OUT, "MR_small_int32.dcm"), enforce_file_format=True)

# Oblique stack: rotation about (1, 2, 3), 5 slices 2.0 mm apart, PixelSpacing [row 0.5, col 0.3125].
ax = np.array([1.0, 2.0, 3.0]); ax /= np.linalg.norm(ax); th = np.deg2rad(25)
K = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
R = np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K
rowdir, coldir = R[:, 0], R[:, 1]
iop = [float(f"{v:.6f}") for v in (*rowdir, *coldir)]
rowdir, coldir = np.array(iop[:3]), np.array(iop[3:])
normal = np.cross(rowdir, coldir)
origin = np.array([-80.0, -90.0, 10.0])
series_uid = uid("oblique", "series")
os.makedirs(os.path.join(OUT, "oblique_stack"))
instance_numbers = [3, 1, 5, 2, 4]           # deliberately not in position order
file_order = [2, 0, 4, 1, 3]
stack = []
for k in range(5):
    d = copy.deepcopy(small)
    d.SeriesInstanceUID = series_uid
    d.SeriesDescription = "amri oblique stack fixture"
    d.SeriesNumber = 7
    d.PatientBirthDate = "19510412"           # so that de-identification has a date to remove
    d.SOPInstanceUID = d.file_meta.MediaStorageSOPInstanceUID = uid("oblique", k)
    d.InstanceNumber = instance_numbers[k]
    d.ImageOrientationPatient = iop
    d.ImagePositionPatient = [float(f"{v:.4f}") for v in origin + 2.0 * k * normal]
    d.PixelSpacing = [0.5, 0.3125]
    d.SliceThickness = "2.0"
    d.SpacingBetweenSlices = "2.0"
    d.RescaleSlope, d.RescaleIntercept, d.RescaleType = "2.5", "-100", "US"
    a = (np.roll(px, 3 * k, axis=0) + 50 * k).astype(np.int16)
    d.PixelData = a.tobytes()
    stack.append(d)
for n, k in enumerate(file_order):
    stack[k].save_as(os.path.join(OUT, "oblique_stack", f"IM{n:04d}"), enforce_file_format=True)
with open(os.path.join(OUT, "oblique_stack", "README.txt"), "w") as f:
    f.write("Not DICOM: the reader must skip this file quietly.\n")

def enhanced(slices, frame_order, slopes, intercepts, shared_orientation, name, desc):
    first = slices[0]
    e = Dataset()
    e.file_meta = FileMetaDataset()
    e.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    e.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
               "StudyDate", "StudyTime", "StudyID", "Manufacturer", "Modality",
               "FrameOfReferenceUID"):
        if kw in first:
            setattr(e, kw, first.data_element(kw).value)
    e.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    e.SOPInstanceUID = e.file_meta.MediaStorageSOPInstanceUID = uid(name, "sop")
    e.SeriesInstanceUID = uid(name, "series")
    e.SeriesDescription = desc
    e.SeriesNumber = 900
    e.InstanceNumber = 1
    e.ImageType = ["DERIVED", "PRIMARY", "OTHER", "NONE"]
    e.MagneticFieldStrength = "1.5"
    e.RepetitionTime, e.EchoTime = "500", "15"
    e.SamplesPerPixel, e.PhotometricInterpretation = 1, "MONOCHROME2"
    e.Rows, e.Columns = first.Rows, first.Columns
    e.BitsAllocated, e.BitsStored, e.HighBit = 16, 16, 15
    e.PixelRepresentation = first.PixelRepresentation
    e.NumberOfFrames = len(frame_order)
    shared = Dataset()
    pm = Dataset(); pm.PixelSpacing = first.PixelSpacing; pm.SliceThickness = first.SliceThickness
    shared.PixelMeasuresSequence = Sequence([pm])
    if shared_orientation:
        po = Dataset(); po.ImageOrientationPatient = first.ImageOrientationPatient
        shared.PlaneOrientationSequence = Sequence([po])
    e.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    frames = []
    for f, k in enumerate(frame_order):
        s = slices[k]
        g = Dataset()
        pp = Dataset(); pp.ImagePositionPatient = s.ImagePositionPatient
        g.PlanePositionSequence = Sequence([pp])
        if not shared_orientation:
            po = Dataset(); po.ImageOrientationPatient = s.ImageOrientationPatient
            g.PlaneOrientationSequence = Sequence([po])
        pv = Dataset()
        pv.RescaleSlope, pv.RescaleIntercept, pv.RescaleType = slopes[f], intercepts[f], "US"
        g.PixelValueTransformationSequence = Sequence([pv])
        fc = Dataset(); fc.InStackPositionNumber = k + 1; fc.StackID = "1"
        g.FrameContentSequence = Sequence([fc])
        per.append(g)
        frames.append(s.pixel_array.astype(np.int16 if s.PixelRepresentation else np.uint16))
    e.PerFrameFunctionalGroupsSequence = Sequence(per)
    e.PixelData = np.stack(frames).tobytes()
    os.makedirs(os.path.join(OUT, "enhanced"), exist_ok=True)
    e.save_as(os.path.join(OUT, "enhanced", name + ".dcm"), enforce_file_format=True)

mr700 = sorted(glob.glob(os.path.join(OUT, "MR700", "*")))
mr700_ds = [pydicom.dcmread(p) for p in mr700]
enhanced(mr700_ds, list(range(7)), [f"{1 + 0.25 * f:g}" for f in range(7)],
         [f"{-10 * f:g}" for f in range(7)], False, "MR700_enhanced",
         "MR700 localiser as Enhanced MR")
enhanced(stack, [4, 1, 3, 0, 2], ["2.5", "2", "1", "0.5", "3"], ["-100", "0", "5", "-7", "12"],
         True, "oblique_stack_enhanced", "oblique stack as Enhanced MR")

# --- reference values ------------------------------------------------------------------------
refs = {}
def store(arr):
    a = np.ascontiguousarray(arr.astype("<i4"))
    h = hashlib.sha256(a.tobytes()).hexdigest()[:12]
    name = f"stored_{h}.i32"
    if name not in refs:
        a.tofile(os.path.join(FIX, name))
        refs[name] = True
    return name

def single_affine(ds, iop, ipp, ps, thick):
    r, c = np.array(iop[:3], float), np.array(iop[3:], float)
    n = np.cross(r, c)
    A = np.eye(4)
    A[:3, 0] = r * float(ps[1]); A[:3, 1] = c * float(ps[0]); A[:3, 2] = n * float(thick)
    A[:3, 3] = np.array(ipp, float)
    return (np.diag([-1, -1, 1, 1]) @ A).tolist()

for old in glob.glob(os.path.join(FIX, "stored_*.i32")):
    os.remove(old)
expected = {"note": "made by sample-scans/make_dicom.sh; stored values decoded by pydicom "
            + pydicom.__version__ + " pixel_array, affines by numpy", "files": {}, "series": {}}
singles = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
           "MR_small_expb.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
           "MR_small_jpeg_ls_lossless.dcm", "MR_small_padded.dcm", "MR_small_deflate.dcm",
           "MR_small_uint8.dcm", "MR_small_int32.dcm"]
for name in singles:
    ds = pydicom.dcmread(os.path.join(OUT, name))
    expected["files"][name] = {
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        "shape": [1, 1, int(ds.Rows), int(ds.Columns)],
        "stored": [store(ds.pixel_array)],
        "slope": [float(ds.get("RescaleSlope", 1.0))],
        "intercept": [float(ds.get("RescaleIntercept", 0.0))],
        "sop_instance_uids": [str(ds.SOPInstanceUID)],
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "affine": single_affine(ds, ds.ImageOrientationPatient, ds.ImagePositionPatient,
                                ds.PixelSpacing, ds.SliceThickness),
        "bits_allocated": int(ds.BitsAllocated),
        "pixel_representation": int(ds.PixelRepresentation),
    }

def stack_affine(dss):
    """dicom2nifti-style affine of a sorted stack of parallel slices."""
    iop = np.array(dss[0].ImageOrientationPatient, float)
    ps = dss[0].PixelSpacing
    A = np.eye(4)
    A[:3, 0] = iop[:3] * float(ps[1]); A[:3, 1] = iop[3:] * float(ps[0])
    p0, p1 = np.array(dss[0].ImagePositionPatient, float), np.array(dss[-1].ImagePositionPatient, float)
    A[:3, 2] = (p1 - p0) / (len(dss) - 1)
    A[:3, 3] = p0
    return (np.diag([-1, -1, 1, 1]) @ A).tolist()

def position_key(ds):
    iop = np.array(ds.ImageOrientationPatient, float)
    return float(np.dot(np.cross(iop[:3], iop[3:]), np.array(ds.ImagePositionPatient, float)))

# A folder: one volume per (series, orientation); stacks sorted by position along the normal.
def folder(path):
    groups = {}
    for p in sorted(glob.glob(os.path.join(path, "*"))):
        try:
            ds = pydicom.dcmread(p)
        except Exception:
            continue
        key = (str(ds.SeriesInstanceUID), tuple(np.round(np.array(ds.ImageOrientationPatient, float), 4)))
        groups.setdefault(key, []).append(ds)
    vols = []
    for (series, _), dss in groups.items():
        dss.sort(key=position_key)
        vol = {
            "series_instance_uid": series,
            "series_number": int(dss[0].get("SeriesNumber", 0)),
            "first_instance_number": min(int(d.InstanceNumber) for d in dss),
            "shape": [1, len(dss), int(dss[0].Rows), int(dss[0].Columns)],
            "stored": [store(d.pixel_array) for d in dss],
            "slope": [float(d.get("RescaleSlope", 1.0)) for d in dss],
            "intercept": [float(d.get("RescaleIntercept", 0.0)) for d in dss],
            "sop_instance_uids": [str(d.SOPInstanceUID) for d in dss],
            "affine": stack_affine(dss) if len(dss) > 1 else single_affine(
                dss[0], dss[0].ImageOrientationPatient, dss[0].ImagePositionPatient,
                dss[0].PixelSpacing, dss[0].SliceThickness),
        }
        vols.append(vol)
    vols.sort(key=lambda v: (v["series_number"], v["series_instance_uid"], v["first_instance_number"]))
    return vols

for name in ["MR700", "MR2", "oblique_stack"]:
    expected["series"][name] = folder(os.path.join(OUT, name))

# Enhanced files: frames split per orientation as above, sorted along the normal.
for name in ["MR700_enhanced", "oblique_stack_enhanced"]:
    ds = pydicom.dcmread(os.path.join(OUT, "enhanced", name + ".dcm"))
    arr = ds.pixel_array
    shared = ds.SharedFunctionalGroupsSequence[0]
    frames = []
    for f, g in enumerate(ds.PerFrameFunctionalGroupsSequence):
        po = g.PlaneOrientationSequence[0] if "PlaneOrientationSequence" in g else shared.PlaneOrientationSequence[0]
        fr = Dataset()
        fr.ImageOrientationPatient = po.ImageOrientationPatient
        fr.ImagePositionPatient = g.PlanePositionSequence[0].ImagePositionPatient
        fr.PixelSpacing = shared.PixelMeasuresSequence[0].PixelSpacing
        fr.SliceThickness = shared.PixelMeasuresSequence[0].SliceThickness
        pv = g.PixelValueTransformationSequence[0]
        frames.append((fr, arr[f], float(pv.RescaleSlope), float(pv.RescaleIntercept), f))
    groups = {}
    for fr in frames:
        groups.setdefault(tuple(np.round(np.array(fr[0].ImageOrientationPatient, float), 4)), []).append(fr)
    vols = []
    for g in groups.values():
        g.sort(key=lambda t: position_key(t[0]))
        dss = [t[0] for t in g]
        vols.append({
            "first_frame": min(t[4] for t in g),
            "shape": [1, len(g), int(ds.Rows), int(ds.Columns)],
            "stored": [store(t[1]) for t in g],
            "slope": [t[2] for t in g],
            "intercept": [t[3] for t in g],
            "affine": stack_affine(dss) if len(dss) > 1 else single_affine(
                dss[0], dss[0].ImageOrientationPatient, dss[0].ImagePositionPatient,
                dss[0].PixelSpacing, dss[0].SliceThickness),
            "series_instance_uid": str(ds.SeriesInstanceUID),
            "sop_instance_uids": [str(ds.SOPInstanceUID)],
        })
    vols.sort(key=lambda v: v["first_frame"])
    expected["series"]["enhanced/" + name + ".dcm"] = vols

with open(os.path.join(FIX, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
print("wrote", len(refs), "reference arrays")
EOF
