#!/usr/bin/env bash
# The Python virtual environment of the Triton-client test: .venv/ in the repository root
# with the stock `tritonclient[grpc]` from PyPI (triton_client_test.py). Debian's python3,
# python3-venv, grpcio, protobuf and numpy come from scripts/setup.sh, which calls this.
# Idempotent: pip runs only when the environment cannot import tritonclient yet.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian interpreter, not whatever python3 comes first on PATH (pyenv, conda): the Debian
# grpcio, protobuf and numpy packages are installed for it, and python3-venv provides its venv.
python=/usr/bin/python3

venv=.venv
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import tritonclient.grpc" 2>/dev/null; then
  echo "setup_python: $venv has tritonclient[grpc]"
  exit 0
fi
if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup_python: creating $venv"
  "$python" -m venv "$venv"
fi
echo "setup_python: installing tritonclient[grpc] into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "tritonclient[grpc]==2.73.0"
"$venv/bin/python" -c "import tritonclient.grpc"
echo "setup_python: $venv has tritonclient[grpc]"
