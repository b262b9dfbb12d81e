#!/usr/bin/env bash
# Configures and builds moe-serve into build/ (override with BUILD_DIR). Extra arguments go to
# the CMake configure step, e.g. scripts/build.sh -DMOE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
generator=()
if command -v ninja >/dev/null 2>&1 && [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  generator=(-G Ninja)
fi
cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} "$@"
cmake --build "$build_dir" -j "${BUILD_JOBS:-$(nproc)}"
