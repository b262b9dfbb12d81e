#!/usr/bin/env bash
# Sets everything up and starts moe-server on its built-in 'digits' model, listening for gRPC
# on 0.0.0.0:8001 (CUDA when a GPU is present, else CPU). Extra arguments go to moe-server
# (see `moe-server --help`), e.g. scripts/run.sh --model mlp=/models/my-moe-mlp.
# Stop it with Ctrl-C or SIGTERM: it finishes the requests it accepted, then exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec "${BUILD_DIR:-build}/server/moe-server" "$@"
