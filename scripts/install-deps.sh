#!/usr/bin/env bash
# System packages that .ci/run needs beyond a Rust toolchain, on Debian/Ubuntu: a C/C++ toolchain
# and cmake for the optional `jpegls` feature (the DICOM JPEG-LS codec, CharLS, is built from
# source; CI tests it and fuzzes it), and for the viewer's headless UI tests a software Vulkan
# driver. A default build (the README's main command) needs none of them. Run as root (or with
# sudo); does nothing when everything is already there.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# amri-viewer's snapshot tests render with wgpu on a software Vulkan driver (Mesa's lavapipe).
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
[ -n "$(ls /usr/lib/*/libvulkan.so.1 /usr/lib/libvulkan.so.1 2>/dev/null)" ] || need+=(libvulkan1)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi
