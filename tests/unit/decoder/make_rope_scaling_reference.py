#!/usr/bin/env python3
"""Writes the references of scaled RoPE (YaRN and linear) from Hugging Face transformers 4.46.3.

1. testdata/rope_scaling_reference.json: the inverse frequencies and the cos/sin scale that
   transformers' ROPE_INIT_FUNCTIONS compute for several head sizes, thetas and rope_scaling
   objects.
2. testdata/qwen2moe-yarn-tiny-f32: a tiny random Qwen2-MoE checkpoint whose config asks for YaRN
   (factor 4), with its expected outputs computed by transformers' Qwen2MoeForCausalLM in
   float64, in the format of tests/fixtures (README there): seqS.input_ids, seqS.logits (every
   position), seqS.greedy_ids. The prompts run past max_position_embeddings (64) into the
   context YaRN opens (256). Sequences are drawn until no router top-k boundary and no greedy
   step's two best logits are closer than 1e-3, so float32 compute picks the same experts and
   tokens.

transformers releases disagree on YaRN when rope_scaling names original_max_position_embeddings
(4.46 ignores it; later releases derive `factor` from it and max_position_embeddings), so these
configs leave it out: every release, and vLLM, then compute the same frequencies.

Not run by the tests (they read the files). Needs transformers==4.46.3, torch and safetensors:

    python3 -m venv /tmp/rope-ref && /tmp/rope-ref/bin/pip install transformers==4.46.3 torch
    /tmp/rope-ref/bin/python tests/unit/decoder/make_rope_scaling_reference.py
"""

import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import PretrainedConfig, Qwen2MoeConfig, Qwen2MoeForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "tools"))
from safetensors_io import write_safetensors  # noqa: E402

EXPECTED_TRANSFORMERS = "4.46.3"
MARGIN = 1e-3
GREEDY_TOKENS = 8

# (head_dim, rope_theta, max_position_embeddings, rope_scaling)
FREQUENCY_CASES = [
    (16, 10000.0, 64, {"rope_type": "yarn", "factor": 4.0}),
    (128, 1000000.0, 32768, {"rope_type": "yarn", "factor": 4.0}),
    (64, 10000.0, 4096, {"rope_type": "yarn", "factor": 2.0, "beta_fast": 16, "beta_slow": 2}),
    (128, 1000000.0, 40960, {"rope_type": "yarn", "factor": 8.0, "attention_factor": 1.2}),
    (64, 500000.0, 8192, {"rope_type": "linear", "factor": 2.5}),
    (32, 10000.0, 2048, {"type": "linear", "factor": 4.0}),
]

MODEL_CONFIG = {
    "architectures": ["Qwen2MoeForCausalLM"],
    "model_type": "qwen2_moe",
    "vocab_size": 192,
    "hidden_size": 64,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "norm_topk_prob": False,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "qkv_bias": True,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "rope_scaling": {"rope_type": "yarn", "factor": 4.0},
    "max_position_embeddings": 64,
    "use_sliding_window": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}


def frequency_reference():
    cases = []
    for head_dim, theta, max_positions, scaling in FREQUENCY_CASES:
        config = PretrainedConfig()
        config.rope_theta = theta
        config.head_dim = head_dim
        config.hidden_size = head_dim * 4
        config.num_attention_heads = 4
        config.max_position_embeddings = max_positions
        config.rope_scaling = dict(scaling)
        kind = scaling.get("rope_type", scaling.get("type"))
        inv_freq, scale = ROPE_INIT_FUNCTIONS[kind](config, "cpu")
        cases.append({
            "head_dim": head_dim,
            "rope_theta": theta,
            "max_position_embeddings": max_positions,
            "rope_scaling": scaling,
            "inv_freq": [float(v) for v in inv_freq.double()],
            "attention_scale": float(scale),
        })
    path = os.path.join(HERE, "testdata", "rope_scaling_reference.json")
    with open(path, "w") as f:
        json.dump({"source": f"transformers {transformers.__version__} ROPE_INIT_FUNCTIONS",
                   "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {path} ({len(cases)} cases)")


def forward(model, ids):
    """Logits [T, V] and the smallest router top-k margin over every token and MoE layer."""
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_router_logits=True)
    k = MODEL_CONFIG["num_experts_per_tok"]
    margin = np.inf
    for router in out.router_logits:
        ordered = torch.sort(router.double(), dim=-1, descending=True).values
        margin = min(margin, float((ordered[:, k - 1] - ordered[:, k]).min()))
    return out.logits[0].double().numpy(), margin


def model_reference():
    torch.manual_seed(20241124)
    fields = {k: v for k, v in MODEL_CONFIG.items() if k not in ("architectures", "model_type")}
    config = Qwen2MoeConfig(**fields, attn_implementation="eager")
    model = Qwen2MoeForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.copy_(1.0 + 0.1 * torch.randn_like(parameter))
            elif name.endswith("bias"):
                parameter.copy_(0.1 * torch.randn_like(parameter))
            else:
                parameter.copy_(torch.randn_like(parameter) / parameter.shape[-1] ** 0.5)
    weights = {name: tensor.float().numpy().copy() for name, tensor in model.state_dict().items()}
    model64 = model.double()

    rng = np.random.default_rng(20241124)
    reference = {}
    smallest = np.inf
    for name, length in (("seq0", 90), ("seq1", 150)):
        for _ in range(200):
            ids = [int(v) for v in rng.integers(3, MODEL_CONFIG["vocab_size"], size=length)]
            logits, margin = forward(model64, ids)
            tokens, last = list(ids), logits[-1]
            greedy = []
            for _ in range(GREEDY_TOKENS):
                top2 = np.sort(last)[-2:]
                margin = min(margin, top2[1] - top2[0])
                greedy.append(int(np.argmax(last)))
                tokens.append(greedy[-1])
                step_logits, step_margin = forward(model64, tokens)
                margin = min(margin, step_margin)
                last = step_logits[-1]
            if margin >= MARGIN:
                break
        else:
            raise SystemExit(f"no {name} with margins >= {MARGIN} found")
        smallest = min(smallest, margin)
        reference[f"{name}.input_ids"] = np.array(ids, dtype=np.int64)
        reference[f"{name}.logits"] = logits.astype(np.float32)
        reference[f"{name}.greedy_ids"] = np.array(greedy, dtype=np.int64)

    out_dir = os.path.join(HERE, "testdata", "qwen2moe-yarn-tiny-f32")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(MODEL_CONFIG, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out_dir, "model.safetensors"), weights, {"format": "pt"})
    write_safetensors(os.path.join(out_dir, "reference.safetensors"), reference,
                      {"min_margin": f"{smallest:.5f}",
                       "source": f"transformers {transformers.__version__}, float64"})
    print(f"wrote {out_dir} (smallest router/greedy margin {smallest:.5f})")


def main():
    if transformers.__version__ != EXPECTED_TRANSFORMERS:
        raise SystemExit(f"needs transformers {EXPECTED_TRANSFORMERS} (YaRN's semantics differ "
                         f"between releases), found {transformers.__version__}")
    frequency_reference()
    model_reference()


if __name__ == "__main__":
    main()
