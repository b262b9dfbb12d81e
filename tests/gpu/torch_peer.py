#!/usr/bin/env python3
"""PyTorch peer for moe-bench: times the same MoE layers (SwiGLU experts, softmax top-k routing
with an fp32 router, bf16 activations and weights) the way PyTorch code commonly runs them:

  loop     the Hugging Face style per-expert loop (Mixtral's reference forward): for each expert
           with tokens, gather its rows, gate/up/down matmuls, index_add the weighted result;
  grouped  tokens sorted by expert, torch._grouped_mm for the fused gate|up and the down
           projection (one call each), when this PyTorch has it (2.8+ on sm_90).

Prints one row per (shape, T): median milliseconds of each variant, their effective TFLOP/s
(routed expert FLOPs + router), and the relative L2 difference between the two outputs.
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

# Same shapes as moe-bench's named shapes: (hidden d, expert ffn f, experts E, top-k, renorm).
SHAPES = {
    "mixtral-8x7b": (4096, 14336, 8, 2, True),
    "qwen3-30b-a3b": (2048, 768, 128, 8, True),
    "olmoe-1b-7b": (2048, 1024, 64, 8, False),
}


def route(x, router, k, renormalize):
    logits = x.float() @ router.t()
    probs = torch.softmax(logits, dim=-1)
    weights, ids = torch.topk(probs, k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return ids, weights


def forward_loop(x, router, w_in, w_out, k, renormalize):
    ids, weights = route(x, router, k, renormalize)
    f = w_out.shape[2]
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    # One host sync (as in the HF loop): which experts have tokens.
    active = torch.unique(ids).tolist()
    for e in active:
        token, slot = torch.where(ids == e)
        h = x[token] @ w_in[e].t()
        a = F.silu(h[:, :f]) * h[:, f:]
        y = a @ w_out[e].t()
        out.index_add_(0, token, y.float() * weights[token, slot, None])
    return out.to(x.dtype)


def forward_grouped(x, router, w_in, w_out, k, renormalize):
    ids, weights = route(x, router, k, renormalize)
    num_experts = w_in.shape[0]
    f = w_out.shape[2]
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    token = order // k
    counts = torch.bincount(flat, minlength=num_experts)
    offs = torch.cumsum(counts, 0).to(torch.int32)
    h = torch._grouped_mm(x[token], w_in.transpose(-2, -1), offs=offs)
    a = F.silu(h[:, :f]) * h[:, f:]
    y = torch._grouped_mm(a, w_out.transpose(-2, -1), offs=offs)
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    out.index_add_(0, token, y.float() * weights.reshape(-1)[order, None])
    return out.to(x.dtype)


def time_ms(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shape names")
    parser.add_argument("--tokens", default="1,16,128,1024,8192", help="comma-separated T")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("torch_peer: no CUDA device visible to PyTorch", file=sys.stderr)
        return 1
    device = torch.device("cuda")
    torch.manual_seed(args.seed)
    has_grouped = hasattr(torch, "_grouped_mm")
    if not args.json:
        print(f"# PyTorch {torch.__version__} on {torch.cuda.get_device_name()}, bf16, "
              f"median of {args.repeats}; grouped = torch._grouped_mm"
              f"{'' if has_grouped else ' (not in this PyTorch)'}")
        print(f"{'shape':<15} {'T':>6} {'loop ms':>10} {'loop TF/s':>10} {'grouped ms':>11} "
              f"{'grouped TF/s':>12} {'rel diff':>9}")
    for name in args.shapes.split(","):
        if name not in SHAPES:
            print(f"torch_peer: unknown shape '{name}' (known: {', '.join(SHAPES)})",
                  file=sys.stderr)
            return 2
        d, f, num_experts, k, renorm = SHAPES[name]
        router = torch.randn(num_experts, d, device=device) * (2.0 / d**0.5)
        w_in = (torch.randn(num_experts, 2 * f, d, device=device) / d**0.5).to(torch.bfloat16)
        w_out = (torch.randn(num_experts, d, f, device=device) / f**0.5).to(torch.bfloat16)
        for t in (int(v) for v in args.tokens.split(",")):
            x = torch.randn(t, d, device=device).to(torch.bfloat16)
            flops = 2.0 * t * d * num_experts + t * k * (2.0 * d * 2 * f + 2.0 * f * d)
            with torch.no_grad():
                loop = lambda: forward_loop(x, router, w_in, w_out, k, renorm)
                loop_ms = time_ms(loop, args.warmup, args.repeats)
                grouped_ms, diff, note = None, None, ""
                if has_grouped:
                    grouped = lambda: forward_grouped(x, router, w_in, w_out, k, renorm)
                    try:
                        grouped_ms = time_ms(grouped, args.warmup, args.repeats)
                        a, b = loop().float(), grouped().float()
                        diff = ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
                    except RuntimeError as error:  # unsupported shape/arch in this build
                        note = str(error).splitlines()[0][:60]
            row = {"shape": name, "tokens": t, "loop_ms": loop_ms,
                   "loop_tflops": flops / (loop_ms * 1e9), "grouped_ms": grouped_ms,
                   "grouped_tflops": flops / (grouped_ms * 1e9) if grouped_ms else None,
                   "rel_diff": diff, "note": note, "torch": torch.__version__}
            if args.json:
                print(json.dumps(row), flush=True)
                continue
            g_ms = f"{grouped_ms:11.3f}" if grouped_ms else f"{'-':>11}"
            g_tf = f"{row['grouped_tflops']:12.1f}" if grouped_ms else f"{'-':>12}"
            rd = f"{diff:9.1e}" if diff is not None else f"{'-':>9}"
            print(f"{name:<15} {t:>6} {loop_ms:10.3f} {row['loop_tflops']:10.1f} {g_ms} {g_tf} "
                  f"{rd} {note}", flush=True)
        del w_in, w_out, router
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
