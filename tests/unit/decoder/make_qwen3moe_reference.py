#!/usr/bin/env python3
"""Writes testdata/qwen3moe-tiny-f32: a tiny random Qwen3-MoE checkpoint and its expected outputs.

The repository's fixtures (tests/fixtures) cover Mixtral, OLMoE and Qwen2-MoE; Qwen3-MoE differs
from them in its per-head q/k RMSNorm, a head_dim that is not hidden_size / heads, and dense
SwiGLU layers (mlp_only_layers). This script computes the forward pass in float64 with numpy
from the published semantics of transformers' Qwen3MoeForCausalLM, written independently of the
C++ engine, in the same file format as tests/fixtures (README there): seqS.input_ids,
seqS.logits, seqS.greedy_ids. Sequences are drawn until no token's k-th and (k+1)-th router
logits, and no greedy step's two best logits, are closer than 1e-3, so float32 compute selects
the same experts and tokens. Deterministic: rerunning writes the same files.

    /usr/bin/python3 tests/unit/decoder/make_qwen3moe_reference.py
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "tools"))
from safetensors_io import write_safetensors  # noqa: E402

CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "vocab_size": 256,
    "hidden_size": 48,
    "intermediate_size": 64,
    "moe_intermediate_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [1],
    "hidden_act": "silu",
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "rope_scaling": None,
    "max_position_embeddings": 512,
    "sliding_window": None,
    "use_sliding_window": False,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}
MARGIN = 1e-3
GREEDY_TOKENS = 8


def make_weights(rng):
    c = CONFIG
    d, hd, h, kv = c["hidden_size"], c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
    w = {}

    def linear(name, out_features, in_features):
        w[name] = rng.standard_normal((out_features, in_features)) / np.sqrt(in_features)

    def norm(name, size):
        w[name] = 1.0 + 0.1 * rng.standard_normal(size)

    w["model.embed_tokens.weight"] = rng.standard_normal((c["vocab_size"], d))
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        norm(p + "input_layernorm.weight", d)
        norm(p + "post_attention_layernorm.weight", d)
        linear(p + "self_attn.q_proj.weight", h * hd, d)
        linear(p + "self_attn.k_proj.weight", kv * hd, d)
        linear(p + "self_attn.v_proj.weight", kv * hd, d)
        linear(p + "self_attn.o_proj.weight", d, h * hd)
        norm(p + "self_attn.q_norm.weight", hd)
        norm(p + "self_attn.k_norm.weight", hd)
        if layer in c["mlp_only_layers"]:
            f = c["intermediate_size"]
            linear(p + "mlp.gate_proj.weight", f, d)
            linear(p + "mlp.up_proj.weight", f, d)
            linear(p + "mlp.down_proj.weight", d, f)
        else:
            f = c["moe_intermediate_size"]
            linear(p + "mlp.gate.weight", c["num_experts"], d)
            for e in range(c["num_experts"]):
                linear(p + f"mlp.experts.{e}.gate_proj.weight", f, d)
                linear(p + f"mlp.experts.{e}.up_proj.weight", f, d)
                linear(p + f"mlp.experts.{e}.down_proj.weight", d, f)
    norm("model.norm.weight", d)
    linear("lm_head.weight", c["vocab_size"], d)
    # Stored as float32; the reference computes with exactly those values.
    return {name: value.astype(np.float32) for name, value in w.items()}


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope(x, positions, theta):
    # x [T, heads, hd], rotate-half.
    hd = x.shape[-1]
    inv_freq = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    angles = positions[:, None] * inv_freq[None, :]
    cos = np.concatenate([np.cos(angles)] * 2, axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(angles)] * 2, axis=-1)[:, None, :]
    half = hd // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def forward(w, ids):
    """Logits [T, V] and the smallest router margin over all tokens and MoE layers."""
    c = CONFIG
    w = {name: value.astype(np.float64) for name, value in w.items()}
    t = len(ids)
    h, kv, hd, eps = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"]
    positions = np.arange(t, dtype=np.float64)
    x = w["model.embed_tokens.weight"][ids]
    margin = np.inf
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        a = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (a @ w[p + "self_attn.q_proj.weight"].T).reshape(t, h, hd)
        k = (a @ w[p + "self_attn.k_proj.weight"].T).reshape(t, kv, hd)
        v = (a @ w[p + "self_attn.v_proj.weight"].T).reshape(t, kv, hd)
        q = rope(rms_norm(q, w[p + "self_attn.q_norm.weight"], eps), positions, c["rope_theta"])
        k = rope(rms_norm(k, w[p + "self_attn.k_norm.weight"], eps), positions, c["rope_theta"])
        out = np.zeros((t, h, hd))
        causal = np.tril(np.ones((t, t), dtype=bool))
        for head in range(h):
            kv_head = head // (h // kv)
            scores = q[:, head] @ k[:, kv_head].T / np.sqrt(hd)
            scores = np.where(causal, scores, -np.inf)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            out[:, head] = scores @ v[:, kv_head]
        x = x + out.reshape(t, h * hd) @ w[p + "self_attn.o_proj.weight"].T

        m = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        if layer in c["mlp_only_layers"]:
            gate = m @ w[p + "mlp.gate_proj.weight"].T
            up = m @ w[p + "mlp.up_proj.weight"].T
            y = (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
        else:
            logits = m @ w[p + "mlp.gate.weight"].T
            probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            k_top = c["num_experts_per_tok"]
            y = np.zeros_like(m)
            for token in range(t):
                order = np.argsort(-logits[token], kind="stable")
                margin = min(margin, logits[token, order[k_top - 1]] - logits[token, order[k_top]])
                chosen = order[:k_top]
                weights = probs[token, chosen]
                if c["norm_topk_prob"]:
                    weights = weights / weights.sum()
                for e, weight in zip(chosen, weights):
                    e_p = p + f"mlp.experts.{e}."
                    hidden = silu(m[token] @ w[e_p + "gate_proj.weight"].T) * (
                        m[token] @ w[e_p + "up_proj.weight"].T)
                    y[token] += weight * (hidden @ w[e_p + "down_proj.weight"].T)
        x = x + y
    x = rms_norm(x, w["model.norm.weight"], eps)
    return x @ w["lm_head.weight"].T, margin


def reference_for(w, ids):
    """Prompt logits, greedy continuation and the smallest margin seen, or None when too close."""
    logits, margin = forward(w, ids)
    tokens = list(ids)
    step_logits = logits[-1]
    greedy = []
    for _ in range(GREEDY_TOKENS):
        top2 = np.sort(step_logits)[-2:]
        margin = min(margin, top2[1] - top2[0])
        greedy.append(int(np.argmax(step_logits)))
        tokens.append(greedy[-1])
        all_logits, router_margin = forward(w, np.array(tokens))
        margin = min(margin, router_margin)
        step_logits = all_logits[-1]
    return logits, greedy, margin


def main():
    rng = np.random.default_rng(20240607)
    weights = make_weights(rng)
    out_dir = os.path.join(HERE, "testdata", "qwen3moe-tiny-f32")
    os.makedirs(out_dir, exist_ok=True)
    reference = {}
    smallest = np.inf
    for name, length in (("seq0", 7), ("seq1", 19)):
        for _ in range(1000):
            ids = rng.integers(3, CONFIG["vocab_size"], size=length)
            logits, greedy, margin = reference_for(weights, ids)
            if margin >= MARGIN:
                break
        else:
            raise SystemExit(f"no {name} with margins >= {MARGIN} found")
        smallest = min(smallest, margin)
        reference[f"{name}.input_ids"] = ids.astype(np.int64)
        reference[f"{name}.logits"] = logits.astype(np.float32)
        reference[f"{name}.greedy_ids"] = np.array(greedy, dtype=np.int64)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out_dir, "model.safetensors"), weights, {"format": "pt"})
    write_safetensors(os.path.join(out_dir, "reference.safetensors"), reference,
                      {"min_margin": f"{smallest:.5f}"})
    print(f"wrote {out_dir} (smallest router/greedy margin {smallest:.5f})")


if __name__ == "__main__":
    main()
