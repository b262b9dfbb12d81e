#!/usr/bin/env bash
# Downloads, on a Debian 12 machine with network access, the .deb files of the libraries
# moe-serve's compute core, GPU tests and benchmarks build against (abseil, OpenBLAS,
# GoogleTest, Google Benchmark, nlohmann-json, prometheus-cpp for the generation scheduler) and
# their runtime dependencies, so that tests/gpu/check.sh --deps DIR can build on a GPU machine
# that has CUDA, CMake and a C++ compiler but none of these libraries and no network.
#
# usage: tests/gpu/fetch_deps.sh [--out DIR] [EXTRA_PACKAGE...]
#   --out DIR        where the .deb files go (default: build-gpu-deps/debs, ignored by git)
#   EXTRA_PACKAGE    more Debian packages to fetch (e.g. libstdc++6 libgcc-s1 gcc-12-base when
#                    the GPU machine's C++ runtime is older than GCC 12's)
# Nothing is installed; apt-get download needs no root.
set -euo pipefail
script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../.."

out=build-gpu-deps/debs
extra=()
while (($#)); do
  case "$1" in
    --out) out=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$script"; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done

# Build-time: headers, CMake package files, static/shared libraries. Runtime: the shared
# libraries the binaries load (libopenblas0-pthread needs libgfortran5, which needs
# libquadmath0). libopenblas-dev and libopenblas0 are the metapackages that name the variant.
packages=(
  libabsl-dev libabsl20220623
  libopenblas-dev libopenblas0 libopenblas-pthread-dev libopenblas0-pthread
  libgfortran5 libquadmath0
  libgtest-dev libgmock-dev googletest
  libbenchmark-dev libbenchmark1debian
  nlohmann-json3-dev
  # prometheus-cpp's CMake package also asks for civetweb (its library and its program), zlib
  # and curl (for its push client, which nothing here links: curl's files only let it load).
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0
  civetweb libcivetweb-dev libcivetweb1 zlib1g-dev zlib1g libcurl4-openssl-dev libcurl4
  "${extra[@]}"
)

if ! command -v apt-get >/dev/null; then
  echo "fetch_deps: apt-get not found; run this on a Debian 12 machine" >&2
  exit 1
fi
if [[ -r /etc/debian_version ]] && [[ $(cut -d. -f1 /etc/debian_version) != 12 ]]; then
  echo "fetch_deps: warning: this is Debian $(cat /etc/debian_version), the build expects 12" >&2
fi

mkdir -p "$out"
cd "$out"
echo "fetch_deps: downloading ${#packages[@]} packages into $PWD"
apt-get download "${packages[@]}"
# A manifest of what was fetched, for the record and for check.sh's summary.
debs=(*.deb)
for deb in "${debs[@]}"; do
  # shellcheck disable=SC2016  # dpkg-deb's format, not a shell expansion
  dpkg-deb --showformat='${Package} ${Version}\n' -W "$deb"
done | sort > MANIFEST
echo "fetch_deps: ${#debs[@]} files, $(du -sh . | cut -f1)"
cat MANIFEST
