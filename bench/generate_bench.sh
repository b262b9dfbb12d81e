#!/usr/bin/env bash
# Generation benchmark: moe-server (CPU backend) generating under closed-loop load from
# `moe-client bench --generate`, for
#   {the Mixtral reference checkpoint (tests/fixtures/mixtral-tiny-bf16, d 64),
#    a synthetic Mixtral-shaped model (d 512, 4 layers, 8 experts of 1408, top-2, vocab 8000,
#    bf16; made once by moe-make-synthetic --kind mixtral)}
#   x {continuous batching (the default),
#      static batching (--generation-batching static: the whole batch admitted together and run
#        as one [batch, length] tensor, finished sequences padded, until the longest finishes;
#        all of its streams end together),
#      static admission with early exit (--generation-batching static-early-exit: the same
#        admission, but a sequence leaves, its stream ended, as soon as it finishes)}
#   x concurrent streams {1, 8, 32}.
# Workload: prompts of 16-64 random token ids; output lengths 8-400 tokens, log-uniform (as many
# in 8-16 as in 200-400: mostly short answers and a long tail, as in chat traffic), exact
# (ignore_eos), greedy, a 600 s deadline (static batches make requests wait long; the deadline
# is not what is compared). Each run starts its own server and stops it with SIGTERM (exit code
# checked). Prints one table and the ratio the generation target is stated in:
#   output tokens/s, continuous / static, at 32 streams on the synthetic model (>= 3)
# and the same against static-early-exit.
#
#   bench/generate_bench.sh [--build DIR] [--duration 60s] [--warmup 10s]
#                           [--concurrency "1 8 32"] [--models "fixture synthetic"]
#                           [--batchings "continuous static static-early-exit"]
#                           [--output-len 8:400] [--spread log-uniform|uniform] [--json FILE]
#                           [--quick]
# --quick: the fixture model only, 2 s per run (a smoke test).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD_DIR:-build}
# A static batch of 32 runs as long as its longest sequence (about 20 s on two CPU cores for 400
# tokens of the synthetic model): the window must hold several batches to measure it.
duration=60s
warmup=10s
concurrencies="1 8 32"
models="fixture synthetic"
batchings="continuous static static-early-exit"
output_len=8:400
spread="log-uniform"
json_out=""
while (($#)); do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --concurrency) concurrencies=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --batchings) batchings=$2; shift 2 ;;
    --output-len) output_len=$2; shift 2 ;;
    --spread) spread=$2; shift 2 ;;
    --json) json_out=$2; shift 2 ;;
    --quick) duration=2s; warmup=0.5s; models="fixture"; shift ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "generate_bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

server=$build/server/moe-server
client=$build/client/cli/moe-client
maker=$build/tools/moe-make-synthetic
bench_name=generate_bench
# shellcheck source=bench/server_control.sh
source bench/server_control.sh
require_binaries "$server" "$client" "$maker"

synthetic_dir=$build/bench/mixtral-d512
if [[ " $models " == *" synthetic "* && ! -f $synthetic_dir/config.json ]]; then
  echo "generate_bench: making the synthetic model in $synthetic_dir" >&2
  "$maker" --flagfile=bench/mixtral-d512.flags --out "$synthetic_dir" --force >&2
fi
make_work_dir

results=$work/results.jsonl
for model in $models; do
  case $model in
    fixture) model_dir=tests/fixtures/mixtral-tiny-bf16 ;;
    synthetic) model_dir=$synthetic_dir ;;
    *) echo "generate_bench: unknown model $model (fixture, synthetic)" >&2; exit 2 ;;
  esac
  for batching in $batchings; do
    for concurrency in $concurrencies; do
      start_server --model "lm=$model_dir" --generation-batching "$batching"
      echo "generate_bench: $model, $batching batching, $concurrency streams" >&2
      line=$(client_bench "$model, $batching, $concurrency streams" lm --generate \
        --wait-ready 300s --concurrency "$concurrency" --duration "$duration" \
        --warmup "$warmup" --prompt-len 16:64 --max-new-tokens "$output_len" \
        --max-new-tokens-spread "$spread" --seed 1 --timeout 600s --format json) || exit 1
      stop_server
      echo "{\"model\": \"$model\", \"batching\": \"$batching\", \"result\": $line}" >>"$results"
    done
  done
done
[[ -n $json_out ]] && cp "$results" "$json_out"

"$python" - "$results" <<'PY'
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
header = ("model", "batching", "streams", "out tok/s", "req/s", "TTFT p50 ms", "TTFT p99 ms",
          "TPOT p50 ms", "e2e p50 ms", "errors")
table = []
for r in rows:
    s = r["result"]
    errors = ",".join(f"{k}:{v}" for k, v in sorted(s["errors"].items())) or "0"
    table.append((r["model"], r["batching"], str(s["concurrency"]),
                  f"{s['output_tokens_per_second']:.1f}", f"{s['requests_per_second']:.2f}",
                  f"{s['ttft_p50_ms']:.1f}", f"{s['ttft_p99_ms']:.1f}",
                  f"{s['tpot_p50_ms']:.2f}", f"{s['e2e_p50_ms']:.0f}", errors))
widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
for t in table:
    print("| " + " | ".join(c.ljust(w) for c, w in zip(t, widths)) + " |")
print()
for model in dict.fromkeys(r["model"] for r in rows):
    top = max(r["result"]["concurrency"] for r in rows if r["model"] == model)
    got = {r["batching"]: r["result"] for r in rows
           if r["model"] == model and r["result"]["concurrency"] == top}
    for baseline in ("static", "static-early-exit"):
        if "continuous" not in got or baseline not in got:
            continue
        c, s = got["continuous"], got[baseline]
        if s["output_tokens_per_second"] <= 0:
            continue
        ratio = c["output_tokens_per_second"] / s["output_tokens_per_second"]
        target = " (target >= 3)" + (" met" if ratio >= 3 else " NOT met") \
            if model == "synthetic" and baseline == "static" else ""
        print(f"{model}: output tokens/s at {top} streams, continuous / {baseline} = "
              f"{c['output_tokens_per_second']:.1f} / {s['output_tokens_per_second']:.1f} = "
              f"{ratio:.2f}{target}; TTFT p50 {c['ttft_p50_ms']:.1f} vs {s['ttft_p50_ms']:.1f} ms")
PY
