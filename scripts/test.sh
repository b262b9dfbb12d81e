#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: packages, build, then every test (unit,
# fixtures, format check), then the sanitizer jobs (scripts/sanitize.sh) and a short fuzz run
# (scripts/fuzz.sh, 20 s per target). GPU tests run when a GPU is present and skip, saying so,
# when not. MOE_SKIP_SANITIZERS=1 leaves out the sanitizer and fuzz jobs (a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/check_format.sh
scripts/build.sh "$@"
# On a machine whose nvidia-smi lists a GPU, a GPU test that finds no usable device (driver
# too old for the toolkit, wrong architecture) fails instead of skipping.
if [[ -z "${MOE_REQUIRE_CUDA:-}" ]] && command -v nvidia-smi >/dev/null 2>&1 &&
  nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  export MOE_REQUIRE_CUDA=1
fi
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 900
# Then the sanitizer jobs, each in a build directory of its own (build-asan, build-tsan):
# ASan + UBSan over the unit and integration tests, TSan over the scheduler and server tests,
# and every fuzz target for 20 s, built in the ASan job's tree (docs/RELIABILITY.md).
if [[ "${MOE_SKIP_SANITIZERS:-}" != 1 ]]; then
  scripts/sanitize.sh asan
  scripts/sanitize.sh tsan
  BUILD_DIR=build-asan scripts/fuzz.sh --seconds 20
fi
