#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang + ASan + UBSan) if needed and runs each for a
# while on its seed corpus and regression inputs; fails if any of them crashes or trips a
# sanitizer. See tests/fuzz/README.md.
#
#   scripts/fuzz.sh                          every target for 20 s (the CI run, about a minute)
#   scripts/fuzz.sh --seconds 3600           the long run: an hour per target
#   scripts/fuzz.sh --target config_json_fuzzer --seconds 600
#
# Options: --seconds N (per target, default 20), --target NAME (repeatable; default all).
# Environment: BUILD_DIR (default build-fuzz; scripts/test.sh passes build-asan, the ASan job's
# tree, which holds the fuzz targets too), BUILD_JOBS (default nproc).
# Inputs found along the way accumulate in $BUILD_DIR/fuzz-corpus/<target> (kept between runs);
# crashing inputs are written to $BUILD_DIR/fuzz-artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(safetensors_fuzzer config_json_fuzzer infer_request_fuzzer)
seconds=20
targets=()
while (($#)); do
  case "$1" in
    --seconds)
      seconds=${2:?--seconds needs a value}
      shift 2
      ;;
    --target)
      targets+=("${2:?--target needs a name}")
      shift 2
      ;;
    -h | --help)
      sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "fuzz.sh: unknown argument '$1' (see --help)" >&2
      exit 2
      ;;
  esac
done
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "fuzz.sh: --seconds must be a positive whole number, got '$seconds'" >&2
  exit 2
fi
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  if [[ ! " ${all_targets[*]} " == *" $t "* ]]; then
    echo "fuzz.sh: unknown target '$t'; targets: ${all_targets[*]}" >&2
    exit 2
  fi
done

build_dir=${BUILD_DIR:-build-fuzz}
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S . -B "$build_dir" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_CUDA=OFF -DMOE_BUILD_FUZZERS=ON -DMOE_BUILD_BENCH=OFF
fi
cmake --build "$build_dir" -j "${BUILD_JOBS:-$(nproc)}" --target "${targets[@]}"

# One thread for OpenMP and OpenBLAS: a fuzzer is one sequential loop.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
failed=()
for t in "${targets[@]}"; do
  binary="$build_dir/tests/fuzz/$t"
  work="$build_dir/fuzz-corpus/$t"
  artifacts="$build_dir/fuzz-artifacts/$t"
  mkdir -p "$work" "$artifacts"
  log="$build_dir/fuzz-artifacts/$t.log"
  echo "== $t: ${seconds}s (log: $log)"
  # New inputs go to the first directory only: the working corpus, never the source tree.
  if "$binary" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=4096 -print_final_stats=1 \
    -dict="tests/fuzz/dicts/$t.dict" -artifact_prefix="$artifacts/" \
    "$work" "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t" >"$log" 2>&1; then
    grep -aE '^#[0-9]+ +DONE' "$log" | tail -1 || true
    grep -aE '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
  else
    failed+=("$t")
    grep -aE '==== fuzz property|check failed|ERROR: (AddressSanitizer|libFuzzer)|runtime error|SUMMARY' \
      "$log" | head -20 || true
    grep -a "Test unit written to" "$log" || true
    echo "== $t FAILED. Reproduce: $binary <artifact>; minimize: $binary -minimize_crash=1" \
      "-runs=100000 <artifact>; then add it under tests/fuzz/regressions/$t/ (README.md)."
  fi
done
if ((${#failed[@]})); then
  echo "fuzz.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${targets[*]}: no crashes in ${seconds}s each"
