#!/usr/bin/env bash
# Re-create every shipped sample scan from the Debian and PyPI packages it comes from.
# Needs root for apt-get (or mricron-data already installed) and network access to the
# package registries. Run from anywhere: paths are relative to this script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -f /usr/share/mricron/templates/ch2better.nii.gz ]; then
  apt-get update -q && apt-get install -y -q mricron-data
fi
python3 -m pip install -q numpy scipy nibabel
python3 "$here/make_colin27.py"
if [ -x "$here/make_dicom.sh" ] || [ -f "$here/make_dicom.sh" ]; then
  bash "$here/make_dicom.sh"
fi
