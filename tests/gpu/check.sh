#!/usr/bin/env bash
# Builds and checks everything GPU-side of moe-serve on a machine with CUDA and CMake:
# configures with the CUDA backend, builds the kernels, the engine, the GPU tests, moe-bench and
# (where their libraries are found) moe-decoder-step-bench, moe-generation-bench and
# moe-make-synthetic, runs every GPU test, benchmarks the named MoE shapes on the GPU
# (moe-bench --backend cuda), times decode steps of the CUDA paged attention (sequences x context -> microseconds and
# bandwidth against the copy ceiling), times whole decode passes (moe-decoder-step-bench),
# measures generation with continuous against static batching on a synthetic Mixtral-shaped
# model (moe-generation-bench --backend cuda), times the same MoE layers in PyTorch when python3
# has torch with CUDA (tests/gpu/torch_peer.py), and prints a summary. Exit status 0 only when
# every step that ran passed.
#
# usage: tests/gpu/check.sh [options]
#   --deps DIR        .deb files from tests/gpu/fetch_deps.sh: extracted into a private prefix
#                     and used for this build (for machines without the Debian libraries;
#                     default: build-gpu-deps/debs when present and no system abseil is found)
#   --build-dir DIR   build directory (default build-gpu)
#   --arch LIST       CMAKE_CUDA_ARCHITECTURES (default 90, or $CUDA_ARCHITECTURES)
#   --jobs N          parallel build jobs (default: all cores)
#   --tokens LIST     token counts for the benchmarks (default 1,16,128,1024,8192)
#   --repeats N       timed runs per benchmark case (default 20)
#   --dtypes LIST     compute dtypes to benchmark (default bf16; e.g. bf16,f16)
#   --generation-duration D
#                     measured time of each of the 9 generation benchmark runs, after 2 s of
#                     warm-up (default 10s)
#   --no-bench        build and test only
# Logs of every step go to <build-dir>/check-logs/. Where nvidia-smi lists a GPU, a GPU test
# that finds no usable CUDA device fails instead of skipping (MOE_REQUIRE_CUDA=1; run with
# MOE_REQUIRE_CUDA=0 to allow the skips).
set -uo pipefail
script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../.." || exit 2
root=$PWD

build_dir=build-gpu
arch=${CUDA_ARCHITECTURES:-90}
deps=""
jobs=$(nproc 2>/dev/null || echo 4)
tokens=1,16,128,1024,8192
repeats=20
dtypes=bf16
generation_duration=10s
bench=1
while (($#)); do
  case "$1" in
    --deps) deps=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --dtypes) dtypes=$2; shift 2 ;;
    --generation-duration) generation_duration=$2; shift 2 ;;
    --no-bench) bench=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$script"; exit 0 ;;
    *) echo "check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$build_dir" in /*) ;; *) build_dir=$root/$build_dir ;; esac
logs=$build_dir/check-logs
mkdir -p "$logs"
rm -f "$logs"/*.log  # a summary shows this run only

rows=()
failures=0
# record STEP STATUS SECONDS DETAIL
record() {
  rows+=("$(printf '%-34s %-5s %7ss  %s' "$1" "$2" "$3" "$4")")
  if [[ $2 == FAIL ]]; then failures=$((failures + 1)); fi
}
# run_logged LOG CMD...: runs CMD with output to LOG, returns its status, sets `elapsed`.
run_logged() {
  local log=$1; shift
  local start=$SECONDS
  "$@" >"$log" 2>&1
  local rc=$?
  elapsed=$((SECONDS - start))
  return $rc
}
summary() {
  echo
  echo "==================== moe-serve GPU check: summary ===================="
  echo "device:   $device"
  echo "deps:     ${deps_note}"
  echo "build:    $build_dir (CUDA architectures $arch)"
  echo "logs:     $logs"
  echo
  printf '%-34s %-5s %8s  %s\n' STEP STATUS TIME DETAIL
  printf '%s\n' "${rows[@]}"
  for table in "$logs"/bench-*.log "$logs"/torch-peer.log; do
    [[ -f $table ]] || continue
    echo
    echo "---- $(basename "$table" .log) ----"
    cat "$table"
  done
  echo
  if ((failures == 0)); then echo "RESULT: PASS"; else echo "RESULT: FAIL ($failures steps failed)"; fi
}

device="unknown (nvidia-smi not found)"
if command -v nvidia-smi >/dev/null; then
  device=$(nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total \
    --format=csv,noheader 2>&1 | head -n 1)
fi

# Where nvidia-smi lists a GPU the tests must run: a test binary that finds no usable device
# (a driver older than the CUDA runtime, say) then fails instead of skipping.
if [[ -z ${MOE_REQUIRE_CUDA:-} ]] && command -v nvidia-smi >/dev/null &&
   nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  export MOE_REQUIRE_CUDA=1
fi

# ---- Dependencies from .deb files. Without --deps, fall back to build-gpu-deps/debs (where
# fetch_deps.sh puts them) when this machine has no abseil CMake package of its own.
if [[ -z $deps && -d $root/build-gpu-deps/debs ]] &&
   ! compgen -G '/usr/lib/*/cmake/absl/abslConfig.cmake' >/dev/null &&
   ! compgen -G '/usr/lib/cmake/absl/abslConfig.cmake' >/dev/null &&
   ! compgen -G '/usr/local/lib*/cmake/absl/abslConfig.cmake' >/dev/null; then
  deps=$root/build-gpu-deps/debs
  echo "check.sh: no system abseil found; using the packages in $deps"
fi
cmake_deps=()
deps_note="system"
if [[ -n $deps ]]; then
  if [[ $(uname -m) != x86_64 ]]; then
    echo "check.sh: --deps holds amd64 packages but this machine is $(uname -m)" >&2
    exit 2
  fi
  prefix=$build_dir/deps-prefix
  rm -rf "$prefix"
  mkdir -p "$prefix"
  start=$SECONDS
  count=0
  for deb in "$deps"/*.deb; do
    [[ -e $deb ]] || { echo "check.sh: no .deb files in $deps" >&2; exit 2; }
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$deb" "$prefix" || { echo "check.sh: cannot extract $deb" >&2; exit 2; }
    else
      # No dpkg (non-Debian host): a .deb is an ar archive holding data.tar.*.
      tmp=$(mktemp -d)
      (cd "$tmp" && ar x "$deb" && tar -xf data.tar.* -C "$prefix") ||
        { echo "check.sh: cannot extract $deb (need dpkg-deb, or ar and tar)" >&2; exit 2; }
      rm -rf "$tmp"
    fi
    count=$((count + 1))
  done
  # Some -dev packages link to their library by absolute path (libz.so ->
  # /lib/x86_64-linux-gnu/libz.so.1.2.13): point such links at the copy in the prefix.
  while IFS= read -r link; do
    target=$(readlink "$link")
    if [[ $target == /* && -e $prefix$target ]]; then ln -sfn "$prefix$target" "$link"; fi
  done < <(find "$prefix" -type l)
  lib=$prefix/usr/lib/x86_64-linux-gnu
  # Debian points these at the chosen OpenBLAS variant with update-alternatives at install
  # time; extracting skips that, so link the pthread variant by hand.
  for name in libopenblas.so libopenblas.so.0 libblas.so libblas.so.3; do
    [[ -e $lib/openblas-pthread/$name ]] && ln -sf "openblas-pthread/$name" "$lib/$name"
  done
  cmake_deps=(
    "-DCMAKE_PREFIX_PATH=$prefix/usr"
    -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu
  )
  export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread:$prefix/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  deps_note="$count packages from $deps, extracted into $prefix"
  record "extract deps" PASS $((SECONDS - start)) "$count .deb files"
fi

# ---- Configure.
generator=()
if command -v ninja >/dev/null && [[ ! -f $build_dir/CMakeCache.txt ]]; then
  generator=(-G Ninja)
fi
if run_logged "$logs/configure.log" cmake -S "$root" -B "$build_dir" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DMOE_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$arch" \
    -DMOE_BUILD_TESTS=ON -DMOE_BUILD_BENCH=ON -DMOE_BUILD_SERVER=OFF "${cmake_deps[@]}"; then
  record configure PASS "$elapsed" "MOE_CUDA=ON, architectures $arch"
else
  record configure FAIL "$elapsed" "see $logs/configure.log"
  tail -n 30 "$logs/configure.log"
  summary
  exit 1
fi

# ---- Build.
mapfile -t gpu_tests < <(sed -n 's/^moe_add_test(\([A-Za-z0-9_]*\).*/\1/p' \
  "$root/tests/gpu/CMakeLists.txt")
targets=(moe_kernels_cuda moe_engine "${gpu_tests[@]}")
((bench)) && targets+=(moe-bench)
# The decoder step benchmark exists where Google Benchmark was found (fetch_deps.sh brings it).
# The targets this configuration has (read whole: grep -q on a pipe could end the listing
# early, and pipefail would then count that as a failure).
available_targets=$(cmake --build "$build_dir" --target help 2>/dev/null || true)
decoder_bench=0
if ((bench)) && [[ $available_targets == *moe-decoder-step-bench* ]]; then
  decoder_bench=1
  targets+=(moe-decoder-step-bench)
fi
# The generation benchmark exists where prometheus-cpp was found (the scheduler reports to it;
# fetch_deps.sh brings it); it runs on a synthetic model that moe-make-synthetic writes.
generation_bench=0
if ((bench)) && [[ $available_targets == *moe-generation-bench* ]]; then
  generation_bench=1
  targets+=(moe-generation-bench moe-make-synthetic)
fi
if run_logged "$logs/build.log" cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"; then
  record build PASS "$elapsed" "${targets[*]}"
else
  record build FAIL "$elapsed" "see $logs/build.log"
  grep -E "error|Error" "$logs/build.log" | head -n 30
  summary
  exit 1
fi

# ---- GPU tests.
for test in "${gpu_tests[@]}"; do
  binary=$build_dir/tests/gpu/$test
  log=$logs/$test.log
  run_logged "$log" "$binary" --gtest_color=no
  rc=$?
  passed=$(grep -cE '^\[       OK \] .* \([0-9]+ ms\)$' "$log")
  failed=$(grep -cE '^\[  FAILED  \] .* \([0-9]+ ms\)$' "$log")
  skipped=$(grep -cE '^\[  SKIPPED \] .* \([0-9]+ ms\)$' "$log")
  detail="$passed passed, $failed failed, $skipped skipped"
  if ((rc != 0)); then
    record "$test" FAIL "$elapsed" "$detail (exit $rc)"
    grep -E '^\[  FAILED  \]|Failure|error' "$log" | head -n 20
  elif ((skipped > 0 && passed == 0)); then
    record "$test" SKIP "$elapsed" "$detail: $(grep -m1 -o 'no CUDA device.*' "$log")"
  else
    record "$test" PASS "$elapsed" "$detail"
  fi
done

# ---- Benchmarks (they need a device; the tests above skip without one and say why).
no_device=$(grep -m1 -oh 'no CUDA device: .*' "$logs"/*_test.log 2>/dev/null | head -n 1)
if ((bench)) && [[ -n $no_device ]]; then
  record "moe-bench cuda" SKIP 0 "$no_device"
  record "moe-bench cuda expert timing" SKIP 0 "$no_device"
  record "torch peer (bf16)" SKIP 0 "$no_device"
  record "paged attention decode bench" SKIP 0 "$no_device"
  ((decoder_bench)) && record "decoder step bench cuda" SKIP 0 "$no_device"
  ((generation_bench)) && record "generation bench cuda" SKIP 0 "$no_device"
elif ((bench)); then
  for dtype in ${dtypes//,/ }; do
    log=$logs/bench-cuda-$dtype.log
    if run_logged "$log" "$build_dir/bench/moe-bench" --backend cuda --dtype "$dtype" \
        --tokens "$tokens" --repeats "$repeats" --warmup 3; then
      record "moe-bench cuda $dtype" PASS "$elapsed" "named shapes, T=$tokens"
    else
      record "moe-bench cuda $dtype" FAIL "$elapsed" "see $log"
    fi
  done
  # The profiling pass the server samples for per-expert time: its cost against a normal pass.
  log=$logs/bench-cuda-expert-timing.log
  if run_logged "$log" "$build_dir/bench/moe-bench" --backend cuda --dtype bf16 \
      --tokens "$tokens" --repeats "$repeats" --warmup 3 --expert_timing; then
    record "moe-bench cuda expert timing" PASS "$elapsed" "bf16, T=$tokens: profiled vs normal pass"
  else
    record "moe-bench cuda expert timing" FAIL "$elapsed" "see $log"
  fi
  # Decode steps of the paged attention: the benchmark is a disabled test of the GPU test
  # binary; its '| ' lines are the table.
  raw=$logs/paged-attention-bench-output.log
  if run_logged "$raw" "$build_dir/tests/gpu/cuda_paged_attention_test" --gtest_color=no \
      --gtest_also_run_disabled_tests \
      --gtest_filter='PagedAttentionBenchmark.DISABLED_DecodeBenchmark' &&
     grep -q '^| ' "$raw"; then
    sed -n 's/^| //p' "$raw" >"$logs/bench-paged-attention-decode.log"
    record "paged attention decode bench" PASS "$elapsed" "f32/bf16 cache, H=32 KV=8 hd=128"
  else
    record "paged attention decode bench" FAIL "$elapsed" "see $raw"
  fi
  # Whole decode passes of a decoder on the device (the Mixtral reference checkpoint, so
  # launch-bound: it shows how a pass's time grows with the batch, not a large model's rate).
  if ((decoder_bench)); then
    log=$logs/bench-decoder-step-cuda.log
    if run_logged "$log" "$build_dir/bench/moe-decoder-step-bench" --backend cuda \
        --benchmark_min_time=0.2; then
      record "decoder step bench cuda" PASS "$elapsed" "Mixtral reference checkpoint, batch 1-64"
    else
      record "decoder step bench cuda" FAIL "$elapsed" "see $log"
    fi
  else
    record "decoder step bench cuda" SKIP 0 "Google Benchmark not found at configure time"
  fi
  # Generation under closed-loop load, continuous against static batching, at 1, 8 and 32
  # streams: the scheduler moe-server runs and the whole decoder on the device, in process.
  # The model is bench/generate_bench.sh's synthetic one (bench/mixtral-d512.flags: d 512, 4
  # layers of 8 experts, top-2).
  if ((generation_bench)); then
    model_dir=$build_dir/bench/mixtral-d512
    log=$logs/generation-bench-run.log
    start=$SECONDS
    if { [[ -f $model_dir/config.json ]] ||
         "$build_dir/tools/moe-make-synthetic" --flagfile=bench/mixtral-d512.flags \
           --out "$model_dir" --force; } >"$log" 2>&1 &&
       "$build_dir/bench/moe-generation-bench" --backend cuda --model "$model_dir" \
         --duration "$generation_duration" --warmup 2s --json "$logs/generation-bench.json" \
         >>"$log" 2>&1; then
      grep -v '^moe-generation-bench: ' "$log" | grep -v '^wrote ' \
        >"$logs/bench-generation-cuda.log"
      record "generation bench cuda" PASS $((SECONDS - start)) \
        "synthetic Mixtral d512, 1/8/32 streams, continuous vs static"
    else
      record "generation bench cuda" FAIL $((SECONDS - start)) "see $log"
    fi
  else
    record "generation bench cuda" SKIP 0 "prometheus-cpp not found at configure time"
  fi
  if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
      >/dev/null 2>&1; then
    log=$logs/torch-peer.log
    if run_logged "$log" python3 "$root/tests/gpu/torch_peer.py" --tokens "$tokens" \
        --repeats "$repeats"; then
      record "torch peer (bf16)" PASS "$elapsed" "$(python3 -c 'import torch; print("torch", torch.__version__)')"
    else
      record "torch peer (bf16)" FAIL "$elapsed" "see $log"
    fi
  else
    record "torch peer (bf16)" SKIP 0 "python3 with torch and CUDA not available"
  fi
fi

summary
((failures == 0))
