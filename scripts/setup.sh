#!/usr/bin/env bash
# Installs every Debian package moe-serve needs to build, test and run, then the Python
# virtual environment of the client-compatibility tests (scripts/setup_python.sh). Idempotent:
# packages already present are left alone, and apt is only called when something is missing.
# The CUDA toolkit is not a Debian package here: it is picked up from /usr/local/cuda when
# present (nvcc), and the build goes CPU-only without it.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  clang-format
  # The fuzz targets (tests/fuzz, scripts/fuzz.sh): clang with libFuzzer and its sanitizer
  # runtimes. (GCC's ASan/UBSan/TSan runtimes for scripts/sanitize.sh come with build-essential.)
  clang libclang-rt-14-dev
  libabsl-dev libopenblas-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  prometheus-cpp-dev
  # SentencePiece: text in and out of Generate for checkpoints with a tokenizer.model; the
  # command-line tools (spm_train, spm_encode, spm_decode) make and check the tests' tokenizer.
  libsentencepiece-dev sentencepiece
  # OpenSSL: the server reads and checks TLS certificates and hashes bearer tokens with libssl-dev
  # (gRPC links it too); the TLS integration tests make their certificates with the openssl tool.
  libssl-dev openssl
  # The real Prometheus server and promtool: the metrics integration test scrapes the server
  # with it, and the alert rules in deploy/ are checked with promtool.
  prometheus
  # Python integration tests: Debian's interpreter with grpcio, protobuf and numpy, and venv
  # for the stock Triton client from PyPI.
  python3 python3-grpcio python3-protobuf python3-numpy python3-venv
)

# kubectl renders the Kubernetes manifests (tests/deploy): Debian's kubernetes-client unless a
# kubectl is installed already (e.g. the kubectl package of Google's Cloud SDK, which owns the
# same path).
if ! command -v kubectl >/dev/null 2>&1; then
  packages+=(kubernetes-client)
fi

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exec "$(dirname "$0")/setup_python.sh"
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "setup: missing packages need root: run as root, or install sudo, or install them by hand:" >&2
    echo "  apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
exec "$(dirname "$0")/setup_python.sh"
