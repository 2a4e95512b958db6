#!/usr/bin/env bash
# Checks that vendor/candle-core is exactly the crates.io release of candle-core 0.9.2 plus
# vendor/candle-core-0.9.2-amri.patch, with the release's tests, benches and examples left out
# (their files, and their [[test]]/[[bench]]/[[example]] tables in Cargo.toml). Fetches the
# release through cargo (its checksum is verified by cargo against the registry index) into a
# temporary folder; changes nothing. Exit 0 when the vendored copy matches, 1 with the
# differences otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=0.9.2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. the release, through an empty project that depends on it (no patch there)
mkdir -p "$tmp/fetch/src"
: > "$tmp/fetch/src/lib.rs"
cat > "$tmp/fetch/Cargo.toml" <<TOML
[package]
name = "vendor-check"
version = "0.0.0"
edition = "2021"
[dependencies]
candle-core = { version = "=$version", default-features = false }
TOML
cargo fetch --quiet --manifest-path "$tmp/fetch/Cargo.toml"
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/candle-core-$version.crate | head -n 1)
mkdir -p "$tmp/release"
tar xzf "$crate" -C "$tmp/release"
rel="$tmp/release/candle-core-$version"

# 2. the release plus amri's patch
patch --quiet -p0 -d "$rel" < vendor/candle-core-$version-amri.patch >"$tmp/patch.log" 2>&1 || {
  cat "$tmp/patch.log" >&2
  echo "check-vendor: the patch does not apply to the release" >&2
  exit 1
}

# 3. compare: sources and licence byte for byte; Cargo.toml without the left-out targets
fail=0
for f in src LICENSE README.md; do
  diff -r "$rel/$f" "vendor/candle-core/$f" || fail=1
done
strip_targets() {
  # drop [[test]], [[bench]] and [[example]] tables, then blank lines
  awk '/^\[\[(test|bench|example)\]\]/{skip=1; next} /^\[/{skip=0} !skip' "$1" | grep -v '^[[:space:]]*$'
}
diff <(strip_targets "$rel/Cargo.toml") <(strip_targets vendor/candle-core/Cargo.toml) || fail=1
extra=$(cd vendor/candle-core && ls -A | grep -vxE 'src|LICENSE|README.md|Cargo.toml|\.cargo-ok' || true)
if [ -n "$extra" ]; then
  echo "vendor/candle-core has files the release does not explain: $extra"
  fail=1
fi
if [ $fail -ne 0 ]; then
  echo "check-vendor: vendor/candle-core differs from candle-core $version + vendor/candle-core-$version-amri.patch" >&2
  exit 1
fi
echo "check-vendor: vendor/candle-core = candle-core $version (crates.io) + vendor/candle-core-$version-amri.patch"
