#!/usr/bin/env bash
# What metrics cost in serving throughput: moe-server on the CPU backend with the synthetic
# MoEMLP (d 1024, ffn 2816, 8 experts, top-2, 2 blocks) under closed-loop load from
# `moe-client bench`, in three configurations run in interleaved rounds (so that drift of a
# shared machine falls on all of them alike):
#   off    --metrics-port 0: nothing collected
#   on     the defaults: every metric, experts timed one by one on every 100th pass
#   timed  --expert-timing-sample-rate 1: every pass a profiling pass (the cost of sampling)
# Prints each configuration's median requests/s over the rounds (and the spread) and the ratios
# to "off"; target: on / off >= 0.98 (metrics cost at most 2%).
#
#   bench/metrics_overhead.sh [--build DIR] [--rounds 5] [--duration 5s] [--warmup 1s]
#                             [--concurrency 64] [--model synthetic|digits] [--json FILE]
# --quick: the built-in digits model, 1 round of 1 s (a smoke test of the script).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD_DIR:-build}
rounds=5
duration=5s
warmup=1s
concurrency=64
json_out=""
model=synthetic
while (($#)); do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --json) json_out=$2; shift 2 ;;
    --quick) model=digits; rounds=1; duration=1s; warmup=0.5s; concurrency=8; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "metrics_overhead: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

server=$build/server/moe-server
client=$build/client/cli/moe-client
maker=$build/tools/moe-make-synthetic
synthetic_dir=$build/bench/synthetic-d1024
bench_name=metrics_overhead
# shellcheck source=bench/server_control.sh
source bench/server_control.sh
require_binaries "$server" "$client"
case $model in
  synthetic) make_synthetic_model "$synthetic_dir"; model_flags=(--model "synthetic=$synthetic_dir") ;;
  digits) model_flags=() ;;
  *) echo "metrics_overhead: --model $model: expected synthetic or digits" >&2; exit 2 ;;
esac
make_work_dir

results=$work/results.jsonl
for round in $(seq 1 "$rounds"); do
  for config in off on timed; do
    case $config in
      off) flags=(--metrics-port 0) ;;
      on) flags=() ;;
      timed) flags=(--expert-timing-sample-rate 1) ;;
    esac
    start_server "${model_flags[@]}" "${flags[@]}"
    echo "metrics_overhead: round $round/$rounds, metrics $config" >&2
    # Typed FP32 requests, as the recorded results in docs/benchmarks.md were measured.
    line=$(client_bench "metrics $config" "$model" --wait-ready 120s --typed \
      --concurrency "$concurrency" --duration "$duration" --warmup "$warmup" --format json) ||
      exit 1
    stop_server
    echo "{\"config\": \"$config\", \"round\": $round, \"result\": $line}" >>"$results"
  done
done
[[ -n $json_out ]] && cp "$results" "$json_out"

"$python" - "$results" "$concurrency" "$model" <<'PY'
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
concurrency = sys.argv[2]
model = sys.argv[3]
by_config = {}
for r in rows:
    by_config.setdefault(r["config"], []).append(r["result"])
print(f"{model} model, concurrency {concurrency}, {len(by_config['off'])} interleaved rounds")
print("| metrics | median req/s | min | max | median p99 ms | errors |")
print("|---|---|---|---|---|---|")
median = {}
for config, results in by_config.items():
    rps = [r["requests_per_s"] for r in results]
    median[config] = statistics.median(rps)
    p99 = statistics.median(r["latency_ms"]["p99"] for r in results)
    errors = sum(sum(r["errors"].values()) for r in results)
    print(f"| {config} | {median[config]:.1f} | {min(rps):.1f} | {max(rps):.1f} | {p99:.2f} | "
          f"{errors} |")
print()
on = median["on"] / median["off"]
print(f"on / off    = {on:.4f} (metrics cost {100 * (1 - on):+.2f}%; target >= 0.98: "
      f"{'met' if on >= 0.98 else 'NOT met'})")
timed = median["timed"] / median["off"]
print(f"timed / off = {timed:.4f} (a pass that times every expert costs "
      f"{100 * (1 - timed):+.2f}% of throughput; at the default rate 0.01 that is "
      f"{(1 - timed):+.4f}% on average)")
PY
