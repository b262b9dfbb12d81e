#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: packages, build, then every test (unit,
# fixtures, format check). GPU tests run when a GPU is present and skip, saying so, when not.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/check_format.sh
scripts/build.sh "$@"
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 900
