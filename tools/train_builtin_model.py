#!/usr/bin/python3
"""Trains the built-in model that moe-server serves as "digits" and writes it to models/builtin/.

The model is a MoEMLP network (docs/moe_mlp_format.md) classifying scikit-learn's bundled
handwritten digits (8x8 images, 1797 samples, no download): 64 pixel intensities scaled to [0, 1]
in, 10 class logits out. Training uses cross-entropy plus the Switch Transformer load-balancing
loss (num_experts * sum_e fraction_e * mean_prob_e) so that the experts share the work.

Writes:
  models/builtin/config.json            the MoEMLP config
  models/builtin/model.safetensors      the weights (float32)
  models/builtin/heldout.safetensors    the held-out split: features [N,64] f32, labels [N] i64,
                                        and this script's own logits [N,10] f32 on them
  models/builtin/training_report.json   accuracy, and per block the share of routed tokens each
                                        expert takes and the digits it sees most

Run with the Debian python3 that has python3-torch and python3-sklearn:
  /usr/bin/python3 tools/train_builtin_model.py [--out models/builtin] [--seed 1234]
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

CONFIG = {
    "architecture": "MoEMLP",
    "input_dim": 64,
    "hidden_size": 64,
    "output_dim": 10,
    "num_blocks": 2,
    "num_experts": 8,
    "top_k": 2,
    "expert_ffn_dim": 64,
    "activation": "swiglu",
    "router_scoring": "softmax",
    "normalize_top_k": True,
    "layer_norm_eps": 1e-5,
    "input_name": "input",
    "output_name": "logits",
    "output_labels": [str(i) for i in range(10)],
    "description": (
        "Handwritten digit classifier: 8x8 grey-scale images (scikit-learn's digits data set) "
        "as 64 pixel intensities in [0, 1], row by row (the original 0..16 values divided by 16); "
        "returns 10 logits, one per digit 0-9. A MoEMLP with 2 blocks of 8 SwiGLU experts, "
        "top-2 routing; trained by tools/train_builtin_model.py."
    ),
}


class MoE(torch.nn.Module):
    """Router + experts with the engine's semantics: softmax (or sigmoid) over all experts, top-k
    (highest first), optional renormalisation of the k weights; each expert is
    w_out @ act(w_in @ x + b_in) + b_out and the block returns sum_k weight_k * expert_k(x)."""

    def __init__(self, d, experts, ffn, top_k, activation, scoring, normalize):
        super().__init__()
        self.experts, self.ffn, self.top_k = experts, ffn, top_k
        self.activation, self.scoring, self.normalize = activation, scoring, normalize
        in_rows = 2 * ffn if activation == "swiglu" else ffn
        self.router = torch.nn.Linear(d, experts, bias=False)
        torch.nn.init.normal_(self.router.weight, std=0.02)
        self.w_in = torch.nn.Parameter(torch.randn(experts, in_rows, d) / math.sqrt(d))
        self.b_in = torch.nn.Parameter(torch.zeros(experts, in_rows))
        self.w_out = torch.nn.Parameter(torch.randn(experts, d, ffn) / math.sqrt(ffn))
        self.b_out = torch.nn.Parameter(torch.zeros(experts, d))

    def forward(self, x):
        logits = self.router(x)  # [T, E]
        if self.scoring == "softmax":
            scores = torch.softmax(logits, dim=-1)
        else:
            scores = torch.sigmoid(logits)
        top_w, top_i = torch.topk(scores, self.top_k, dim=-1)  # [T, k], highest first
        if self.normalize:
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        # Every expert on every row (the set is tiny); unselected experts get weight 0.
        h = torch.einsum("td,erd->ter", x, self.w_in) + self.b_in  # [T, E, in_rows]
        if self.activation == "swiglu":
            gate, up = h[..., : self.ffn], h[..., self.ffn :]
            a = torch.nn.functional.silu(gate) * up
        elif self.activation == "gelu":
            a = torch.nn.functional.gelu(h)
        else:
            a = torch.relu(h)
        y = torch.einsum("tef,edf->ted", a, self.w_out) + self.b_out  # [T, E, d]
        gates = torch.zeros_like(scores).scatter(1, top_i, top_w)  # [T, E]
        out = (gates.unsqueeze(-1) * y).sum(dim=1)
        return out, scores, top_i


class MoEMLP(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.input_proj = torch.nn.Linear(c["input_dim"], d)
        self.norms = torch.nn.ModuleList(
            torch.nn.LayerNorm(d, eps=c["layer_norm_eps"]) for _ in range(c["num_blocks"])
        )
        self.moes = torch.nn.ModuleList(
            MoE(d, c["num_experts"], c["expert_ffn_dim"], c["top_k"], c["activation"],
                c["router_scoring"], c["normalize_top_k"])
            for _ in range(c["num_blocks"])
        )
        self.final_norm = torch.nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.output_proj = torch.nn.Linear(d, c["output_dim"])

    def forward(self, x):
        """Returns logits [T, out] and per block (scores [T, E], top-k ids [T, k])."""
        h = self.input_proj(x)
        routing = []
        for norm, moe in zip(self.norms, self.moes):
            out, scores, top_i = moe(norm(h))
            h = h + out
            routing.append((scores, top_i))
        return self.output_proj(self.final_norm(h)), routing

    def tensors(self):
        """The weights under the names of docs/moe_mlp_format.md, float32 numpy arrays."""
        out = {
            "input_proj.weight": self.input_proj.weight,
            "input_proj.bias": self.input_proj.bias,
        }
        for i, (norm, moe) in enumerate(zip(self.norms, self.moes)):
            out[f"blocks.{i}.norm.weight"] = norm.weight
            out[f"blocks.{i}.norm.bias"] = norm.bias
            out[f"blocks.{i}.moe.router.weight"] = moe.router.weight
            out[f"blocks.{i}.moe.w_in"] = moe.w_in
            out[f"blocks.{i}.moe.b_in"] = moe.b_in
            out[f"blocks.{i}.moe.w_out"] = moe.w_out
            out[f"blocks.{i}.moe.b_out"] = moe.b_out
        out["final_norm.weight"] = self.final_norm.weight
        out["final_norm.bias"] = self.final_norm.bias
        out["output_proj.weight"] = self.output_proj.weight
        out["output_proj.bias"] = self.output_proj.bias
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in out.items()}


def load_balancing_loss(scores, top_i, experts, top_k):
    """Switch Transformer auxiliary loss: E * sum_e f_e * P_e, with f_e the fraction of the T*k
    assignments routed to expert e (not differentiable) and P_e the mean router score of e."""
    counts = torch.zeros(experts).scatter_add_(0, top_i.reshape(-1),
                                               torch.ones(top_i.numel()))
    fraction = counts / top_i.numel()
    mean_prob = scores.mean(dim=0)
    return experts * torch.sum(fraction * mean_prob)


def routing_margin(scores, top_k):
    """Smallest gap between consecutive ranks among the top k+1 scores of any row: how close a
    float32 implementation could come to choosing (or ordering) other experts."""
    s, _ = torch.sort(scores, dim=-1, descending=True)
    ranks = min(top_k + 1, s.shape[1])
    return float((s[:, : ranks - 1] - s[:, 1:ranks]).min())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(root, "models", "builtin"))
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--aux-weight", type=float, default=0.02)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(1)  # bit-for-bit repeatable runs

    digits = load_digits()
    features = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.2, stratify=labels, random_state=args.seed)
    x_train_t, y_train_t = torch.from_numpy(x_train), torch.from_numpy(y_train)
    x_test_t = torch.from_numpy(x_test)

    c = CONFIG
    model = MoEMLP(c)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(x_train) / args.batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total_ce = total_aux = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * args.batch : (b + 1) * args.batch]
            logits, routing = model(x_train_t[idx])
            ce = torch.nn.functional.cross_entropy(logits, y_train_t[idx])
            aux = sum(load_balancing_loss(s, i, c["num_experts"], c["top_k"])
                      for s, i in routing) / len(routing)
            loss = ce + args.aux_weight * aux
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_ce += float(ce) * len(idx)
            total_aux += float(aux) * len(idx)
        if epoch % 20 == 0 or epoch == args.epochs - 1:
            model.eval()
            with torch.no_grad():
                acc = float((model(x_test_t)[0].argmax(-1).numpy() == y_test).mean())
            print(f"epoch {epoch:4d}  ce {total_ce / len(x_train):.4f}  "
                  f"aux {total_aux / len(x_train):.4f}  held-out accuracy {acc:.4f}", flush=True)
    seconds = time.time() - start

    model.eval()
    with torch.no_grad():
        test_logits, test_routing = model(x_test_t)
        train_logits, _ = model(x_train_t)
    test_logits = test_logits.numpy().astype(np.float32)
    heldout_accuracy = float((test_logits.argmax(-1) == y_test).mean())
    train_accuracy = float((train_logits.numpy().argmax(-1) == y_train).mean())

    # Specialisation on the held-out rows: each expert's share of the N*k assignments and the
    # digits that make up most of its assignments.
    blocks = []
    for block, (scores, top_i) in enumerate(test_routing):
        ids = top_i.numpy()
        experts = []
        for e in range(c["num_experts"]):
            rows = np.nonzero((ids == e).any(axis=1))[0]
            per_class = np.bincount(y_test[rows], minlength=10)
            top = np.argsort(-per_class, kind="stable")[:3]
            experts.append({
                "expert": e,
                "share": round(float((ids == e).sum()) / ids.size, 4),
                "top_digits": [{"digit": str(int(d)),
                                "fraction": round(float(per_class[d]) / max(len(rows), 1), 3)}
                               for d in top if per_class[d] > 0],
            })
        shares = [x["share"] for x in experts]
        blocks.append({
            "block": block,
            "imbalance_max_over_mean": round(max(shares) / (sum(shares) / len(shares)), 3),
            "min_routing_margin": routing_margin(scores, c["top_k"]),
            "experts": experts,
        })

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
        f.write("\n")
    tensors = model.tensors()
    write_safetensors(os.path.join(args.out, "model.safetensors"), tensors,
                      {"format": "moe_mlp", "trained_by": "tools/train_builtin_model.py"})
    write_safetensors(os.path.join(args.out, "heldout.safetensors"), {
        "features": x_test.astype(np.float32),
        "labels": y_test.astype(np.int64),
        "logits": test_logits,
    }, {"source": "sklearn.datasets.load_digits, stratified 20% held out",
        "seed": str(args.seed)})
    # The files must read back as written.
    back, _ = read_safetensors(os.path.join(args.out, "model.safetensors"))
    assert all(np.array_equal(back[k], v) for k, v in tensors.items())

    report = {
        "dataset": "sklearn.datasets.load_digits (8x8 digits, 1797 samples)",
        "train_samples": len(x_train),
        "heldout_samples": len(x_test),
        "seed": args.seed,
        "epochs": args.epochs,
        "aux_loss_weight": args.aux_weight,
        "training_seconds": round(seconds, 1),
        "train_accuracy": round(train_accuracy, 4),
        "heldout_accuracy": round(heldout_accuracy, 4),
        "parameters": int(sum(v.size for v in tensors.values())),
        "blocks": blocks,
    }
    with open(os.path.join(args.out, "training_report.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    print(f"\nheld-out accuracy {heldout_accuracy:.4f} ({len(x_test)} samples), "
          f"train accuracy {train_accuracy:.4f}, {report['parameters']} parameters")
    for b in blocks:
        print(f"\nblock {b['block']} (imbalance max/mean {b['imbalance_max_over_mean']}, "
              f"min routing margin {b['min_routing_margin']:.2e})")
        print("| expert | share of routed tokens | digits it sees most |")
        print("|---|---|---|")
        for e in b["experts"]:
            digits_text = ", ".join(f"{t['digit']} ({t['fraction']:.0%})" for t in e["top_digits"])
            print(f"| {e['expert']} | {e['share']:.1%} | {digits_text} |")
    if heldout_accuracy < 0.95:
        print("held-out accuracy below 0.95: train longer (--epochs)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
