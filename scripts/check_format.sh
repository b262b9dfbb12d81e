#!/usr/bin/env bash
# Fails when a C++/CUDA/proto source differs from .clang-format or has trailing whitespace.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.h' '*.cc' '*.cu' '*.cuh' '*.proto' 2>/dev/null || true)
if ((${#files[@]} == 0)); then
  mapfile -t files < <(find kernels server bench tests client proto -name '*.h' -o -name '*.cc' \
    -o -name '*.cu' -o -name '*.cuh' -o -name '*.proto' 2>/dev/null)
fi
bad=0
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "format: $f differs from .clang-format (run: clang-format -i $f)"
    bad=1
  fi
  if grep -nE '[[:space:]]+$' "$f" >/dev/null; then
    echo "format: $f has trailing whitespace"
    bad=1
  fi
done
if ((bad)); then exit 1; fi
echo "format: ${#files[@]} files clean"
