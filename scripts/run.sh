#!/usr/bin/env bash
# Sets everything up and runs moe-serve's main job. Until the gRPC server lands this is the MoE
# layer benchmark on the best available backend (CUDA when a GPU is present, else CPU); extra
# arguments go to moe-bench (see `moe-bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec "${BUILD_DIR:-build}/bench/moe-bench" "$@"
