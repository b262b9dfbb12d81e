#!/usr/bin/env bash
# Builds moe-serve with sanitizers in a build directory of its own and runs tests under them;
# fails on a failed test and on any sanitizer report, including one from a moe-server that a
# test started and killed (every report is written to <build>/sanitizer-reports/ and printed).
#   scripts/sanitize.sh asan [--build DIR]   ASan + UBSan (+ LeakSanitizer): unit and integration
#                                            tests (default DIR: build-asan)
#   scripts/sanitize.sh tsan [--build DIR]   TSan: scheduler, api and server unit tests and the
#                                            integration tests (default DIR: build-tsan)
#   ... -- CTEST_ARGS                        passed on to ctest, e.g. -- -R soak_test
# CPU-only (-DMOE_CUDA=OFF). BUILD_JOBS sets the build's parallelism (default: nproc). What each
# job runs, its options and suppressions, and why: docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

usage() {
  echo "usage: scripts/sanitize.sh asan|tsan [--build DIR] [-- CTEST_ARGS...]" >&2
  exit 2
}
(($# >= 1)) || usage
job=$1
shift
build_dir=
extra_ctest_args=()
while (($# > 0)); do
  case $1 in
    --build)
      (($# >= 2)) || usage
      build_dir=$2
      shift 2
      ;;
    --)
      shift
      extra_ctest_args=("$@")
      break
      ;;
    *) usage ;;
  esac
done

case $job in
  asan) sanitize=address,undefined ;;
  tsan) sanitize=thread ;;
  *) usage ;;
esac
build_dir=${build_dir:-build-$job}
# Before OMP_NUM_THREADS is set: nproc honours it.
cpus=$(nproc)
jobs=${BUILD_JOBS:-$cpus}

generator=()
compilers=()
fuzzers=()
if [[ $job == asan ]]; then
  # The ASan job's tree also holds the fuzz targets (same instrumentation plus libFuzzer's
  # coverage, clang only), so that the fuzz run (scripts/fuzz.sh --build build-asan) needs no
  # build of its own.
  compilers=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
  fuzzers=(-DMOE_BUILD_FUZZERS=ON)
  export CC=clang CXX=clang++
fi
if [[ ! -f $build_dir/CMakeCache.txt ]]; then
  command -v ninja >/dev/null 2>&1 || {
    echo "sanitize: needs ninja (scripts/setup.sh installs ninja-build)" >&2
    exit 1
  }
  generator=(-G Ninja)
fi
cmake -S . -B "$build_dir" "${generator[@]}" "${compilers[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMOE_SANITIZE="$sanitize" -DMOE_CUDA=OFF -DMOE_BUILD_BENCH=OFF -DMOE_BUILD_TESTS=ON \
  -DMOE_BUILD_SERVER=ON "${fuzzers[@]}"
build_dir=$(cd "$build_dir" && pwd)
grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$build_dir/CMakeCache.txt" || {
  echo "sanitize: $build_dir was configured with another generator than Ninja; remove it" >&2
  exit 1
}

reports=$build_dir/sanitizer-reports
rm -rf "$reports"
mkdir -p "$reports"
# The soak test's length under sanitizers (its default is 120 s).
export MOE_SOAK_SECONDS=${MOE_SOAK_SECONDS:-20}

# ctest over the test directories given, in order; returns non-zero when one fails.
run_ctest() {
  local status=0 dir
  for dir in "$@"; do
    echo "sanitize: $job: ctest in ${dir#"$build_dir"/}"
    # Not the tests that need the SentencePiece module (GenerateTextTest): sanitizer runtimes
    # refuse the dlopen(RTLD_DEEPBIND) it is loaded with (server/tokenizer/sentencepiece_bridge.h).
    ctest --test-dir "$dir" --output-on-failure -j "$cpus" --timeout 900 "${ctest_args[@]}" \
      -E '^GenerateTextTest\.' \
      "${extra_ctest_args[@]}" ||
      status=1
  done
  return $status
}

ctest_args=()
case $job in
  asan)
    cmake --build "$build_dir" -j "$jobs"
    # halt_on_error: the first report ends the process (exit code 1), as a UBSan report does
    # (-fno-sanitize-recover=all); LeakSanitizer runs at every normal exit, a server's
    # included, and a leak makes that exit code 1 too.
    export ASAN_OPTIONS="log_path=$reports/asan:halt_on_error=1:detect_leaks=1:check_initialization_order=1:detect_stack_use_after_return=1:print_summary=1"
    export UBSAN_OPTIONS="log_path=$reports/ubsan:halt_on_error=1:print_stacktrace=1"
    export LSAN_OPTIONS="suppressions=$repo/tests/sanitizers/lsan.supp:print_suppressions=0"
    # tests/client_package builds a consumer of the installed (sanitized) client library: it
    # must use the same compiler and runtime. CMake reads these (and CC/CXX) when it
    # configures that fresh project.
    export CXXFLAGS="-fsanitize=$sanitize" LDFLAGS="-fsanitize=$sanitize"
    ctest_args=(-L 'unit|integration')
    status=0
    run_ctest "$build_dir" || status=1
    ;;
  tsan)
    # What the TSan job runs and what those tests start (the server, the model tool, the CLI,
    # the Python stubs): per-directory targets of the Ninja build, nothing else.
    cmake --build "$build_dir" -j "$jobs" --target tests/unit/scheduler/all tests/unit/api/all \
      tests/unit/server/all tests/integration/all server/all tools/all client/all proto/all
    # libgomp and OpenBLAS are not instrumented: their threads' hand-offs are invisible to
    # TSan, so the MoE kernels' parallel regions run on the calling thread here.
    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    # halt_on_error=0: report every race and go on; a process that reported exits with 66 at
    # exit, and the report files fail this script whatever the exit code was.
    export TSAN_OPTIONS="log_path=$reports/tsan:halt_on_error=0:second_deadlock_stack=1:history_size=7:suppressions=$repo/tests/sanitizers/tsan.supp"
    export CXXFLAGS="-fsanitize=$sanitize"
    export LDFLAGS="-fsanitize=$sanitize -Wl,--whole-archive $build_dir/libmoe_tsan_sync.a -Wl,--no-whole-archive"
    status=0
    run_ctest "$build_dir/tests/unit/scheduler" "$build_dir/tests/unit/api" \
      "$build_dir/tests/unit/server" "$build_dir/tests/integration" || status=1
    ;;
esac

mapfile -t found < <(find "$reports" -type f | sort)
if ((${#found[@]} > 0)); then
  for f in "${found[@]}"; do
    echo "==== sanitizer report: $f"
    cat "$f"
  done
  echo "sanitize: $job: ${#found[@]} sanitizer report(s) (above, and in $reports)" >&2
  status=1
fi
if ((status != 0)); then
  echo "sanitize: $job: FAILED" >&2
  exit 1
fi
echo "sanitize: $job: every test passed, no sanitizer report"
