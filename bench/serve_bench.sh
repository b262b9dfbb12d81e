#!/usr/bin/env bash
# Serving benchmark: moe-server (CPU backend) under closed-loop load from `moe-client bench`,
# for {synthetic MoEMLP (d 1024, ffn 2816, 8 experts, top-2, 2 blocks), built-in digits}
#   x {batching on (default flags), batching on with --max-queue-delay-us (default 10000),
#      batching off (--max-batch-tokens 1)} x concurrency {1, 8, 64}.
# Each run starts its own server, measures, and stops it with SIGTERM (exit code checked).
# Prints one table and the ratios the serving targets are stated in:
#   throughput gain of batching: rps(on, c=64) / rps(off, c=64) on the synthetic model (>= 4)
#   tail latency under load:     p99(on, c=64) <= 2 x p50(on, c=1) + one batch's compute time
#
#   bench/serve_bench.sh [--build DIR] [--duration 10s] [--warmup 2s] [--concurrency "1 8 64"]
#                        [--models "synthetic digits"] [--queue-delay-us 10000] [--quick]
#                        [--json FILE]
# --quick: the built-in model only, concurrency 1 and 8, 1 s per run (a smoke test).
# The synthetic model is made once, into DIR/bench/synthetic-d1024 (~550 MB).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD_DIR:-build}
duration=10s
warmup=2s
concurrencies="1 8 64"
models="synthetic digits"
queue_delay_us=10000
modes="on delay off"
json_out=""
while (($#)); do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --concurrency) concurrencies=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --queue-delay-us) queue_delay_us=$2; shift 2 ;;
    --json) json_out=$2; shift 2 ;;
    --quick) duration=1s; warmup=0.5s; concurrencies="1 8"; models="digits"; modes="on off"; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "serve_bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

server=$build/server/moe-server
client=$build/client/cli/moe-client
maker=$build/tools/moe-make-synthetic
synthetic_dir=$build/bench/synthetic-d1024
bench_name=serve_bench
# shellcheck source=bench/server_control.sh
source bench/server_control.sh
require_binaries "$server" "$client"
if [[ " $models " == *" synthetic "* ]]; then make_synthetic_model "$synthetic_dir"; fi
make_work_dir

results=$work/results.jsonl
for model in $models; do
  if [[ $model == synthetic ]]; then
    model_flags=(--model "synthetic=$synthetic_dir")
  else
    model_flags=()
  fi
  for mode in $modes; do
    case $mode in
      on) batching=on; batching_flags=() ;;
      delay)
        batching="on+${queue_delay_us}us"
        batching_flags=(--max-queue-delay-us "$queue_delay_us")
        ;;
      off) batching=off; batching_flags=(--max-batch-tokens 1) ;;
    esac
    for concurrency in $concurrencies; do
      start_server "${model_flags[@]}" "${batching_flags[@]}"
      echo "serve_bench: $model, batching $batching, concurrency $concurrency" >&2
      # Typed FP32 requests, as the recorded results in docs/benchmarks.md were measured.
      line=$(client_bench "$model, batching $batching, concurrency $concurrency" "$model" \
        --wait-ready 120s --typed --concurrency "$concurrency" --duration "$duration" \
        --warmup "$warmup" --format json) || exit 1
      stop_server
      echo "{\"model\": \"$model\", \"batching\": \"$batching\", \"result\": $line}" >>"$results"
    done
  done
done
[[ -n $json_out ]] && cp "$results" "$json_out"

"$python" - "$results" <<'EOF'
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
header = ("model", "batching", "conc", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
          "queue us", "compute us", "batch rows", "errors")
table = []
for r in rows:
    res = r["result"]
    lat = res["latency_ms"]
    errors = ",".join(f"{k}:{v}" for k, v in sorted(res["errors"].items())) or "0"
    table.append((r["model"], r["batching"], str(res["concurrency"]),
                  f"{res['requests_per_s']:.1f}", f"{lat['p50']:.2f}", f"{lat['p90']:.2f}",
                  f"{lat['p99']:.2f}", f"{lat['max']:.2f}", f"{res['mean_queue_us']:.0f}",
                  f"{res['mean_compute_us']:.0f}", f"{res['mean_batch_rows']:.2f}", errors))
widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
for t in table:
    print("| " + " | ".join(c.ljust(w) for c, w in zip(t, widths)) + " |")

def find(model, batching, concurrency):
    for r in rows:
        key = (r["model"], r["batching"], r["result"]["concurrency"])
        if key == (model, batching, concurrency):
            return r["result"]
    return None

print()
# The single-request latency is that of batching on at concurrency 1 (the same with or
# without a queue delay only when the delay is 0: take the default configuration's).
for model in dict.fromkeys(r["model"] for r in rows):
    top = max(r["result"]["concurrency"] for r in rows if r["model"] == model)
    off = find(model, "off", top)
    single = find(model, "on", 1)
    for batching in dict.fromkeys(r["batching"] for r in rows if r["model"] == model):
        if batching == "off":
            continue
        on = find(model, batching, top)
        if on and off and off["requests_per_s"] > 0:
            gain = on["requests_per_s"] / off["requests_per_s"]
            target = " (target >= 4)" if model == "synthetic" else ""
            verdict = (" met" if gain >= 4 else " NOT met") if model == "synthetic" else ""
            print(f"{model}: rps(batching {batching}, c={top}) / rps(off, c={top}) = "
                  f"{on['requests_per_s']:.1f} / {off['requests_per_s']:.1f} = {gain:.2f}"
                  f"{target}{verdict}")
        if on and single:
            batch_ms = on["mean_compute_us"] / 1000.0
            bound = 2 * single["latency_ms"]["p50"] + batch_ms
            p99 = on["latency_ms"]["p99"]
            print(f"{model}: p99(batching {batching}, c={top}) = {p99:.2f} ms vs 2 x p50(on, c=1)"
                  f" + batch time = 2 x {single['latency_ms']['p50']:.2f} + {batch_ms:.2f} = "
                  f"{bound:.2f} ms: {'met' if p99 <= bound else 'NOT met'} "
                  f"(ratio {p99 / bound:.2f})")
EOF
