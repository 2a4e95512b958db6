#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ (or DEST/<target>/ given as the argument) with the shipped sample
# files and test fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
c=${1:-fuzz/corpus}
mkdir -p $c/{dicom,nifti,nifti_gz,npy,npz,cfl,hdf5,ismrmrd,protocol}
cp sample-scans/dicom/*.dcm crates/amri-io/tests/fixtures/dicom/*.dcm $c/dicom/ 2>/dev/null || true
find sample-scans/dicom -type f -not -name '*.md' | head -40 | while read -r f; do cp "$f" "$c/dicom/$(echo "$f" | tr / _)"; done
cp crates/amri-io/tests/fixtures/nifti/*.nii tests/bad-inputs/*.nii $c/nifti/ 2>/dev/null || true
cp crates/amri-io/tests/fixtures/nifti/*.nii.gz $c/nifti_gz/ 2>/dev/null || true
cp crates/amri-io/tests/fixtures/npy/*.npy tests/bad-inputs/*.npy $c/npy/ 2>/dev/null || true
cp crates/amri-io/tests/fixtures/npy/*.npz tests/bad-inputs/*.npz $c/npz/ 2>/dev/null || true
cp crates/amri-io/tests/fixtures/hdf5/*.h5 $c/hdf5/ 2>/dev/null || true
# Only the ISMRMRD fixtures under the 64 KiB input cap (-max_len) are useful whole.
find crates/amri-io/tests/fixtures/ismrmrd -name "*.h5" -size -64k -exec cp {} $c/ismrmrd/ \;
for h in crates/amri-io/tests/fixtures/cfl/*.hdr; do
  b=${h%.hdr}; [ -f "$b.cfl" ] && { cat "$h"; printf '\0'; cat "$b.cfl"; } > "$c/cfl/$(basename "$b")"
done
cp protocols/*.toml tests/bad-inputs/*.toml $c/protocol/
echo "seeded: $(find $c -type f | wc -l) files"
