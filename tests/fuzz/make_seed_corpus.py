#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora under tests/fuzz/corpus/<target>/ from the repository's own
files. Run from anywhere; needs python3 and protoc (already a build dependency). The output is
committed, so this only needs running again when the seeds should change; files it does not
write are left alone (inputs libFuzzer found and someone chose to keep).

  safetensors_fuzzer:  the built-in model's and the fixtures' checkpoints cut to a few KB (their
                       real headers, keeping the smallest tensors with their real bytes), plus
                       hand-made edge cases (every dtype, scalars, empty tensors, metadata) and
                       a few broken files (truncated, bad length, trailing bytes).
  config_json_fuzzer:  every config.json in the repository, plus a Qwen3-MoE variant and a
                       minimal MoEMLP config.
  infer_request_fuzzer: serialized ModelInferRequests for the built-in model (first byte 0x00:
                       protobuf mode), valid and invalid, and a few inputs for the builder mode
                       (first byte 0x01) laid out as infer_request_fuzzer.cc reads them.
"""
import json
import os
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
BUDGET = 4096  # bytes per safetensors seed


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


# ---- safetensors ----------------------------------------------------------------------------

def safetensors_image(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes), packed in this order."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    data = b""
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(payload)]}
        offset += len(payload)
        data += payload
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", None)
    tensors = []
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        tensors.append((name, entry["dtype"], entry["shape"], data[begin:end]))
    return blob, n, tensors, metadata


def safetensors_seeds():
    target = "safetensors_fuzzer"
    sources = [
        "models/builtin/model.safetensors",
        "models/builtin/heldout.safetensors",
        "tests/fixtures/mixtral-tiny-bf16/model.safetensors",
        "tests/fixtures/mixtral-tiny-bf16/reference.safetensors",
        "tests/fixtures/olmoe-tiny-f32/model.safetensors",
        "tests/fixtures/qwen2moe-tiny-f32/model.safetensors",
    ]
    for rel in sources:
        blob, header_size, tensors, metadata = read_safetensors(os.path.join(ROOT, rel))
        stem = rel.replace("/", "_").replace(".safetensors", "")
        # The smallest tensors, as many as fit the budget, with their real bytes.
        kept = []
        for tensor in sorted(tensors, key=lambda t: (len(t[3]), t[0])):
            if len(safetensors_image(kept + [tensor], metadata)) > BUDGET:
                break
            kept.append(tensor)
        if kept:
            write(target, f"cut_{stem}.safetensors", safetensors_image(kept, metadata))
        if 8 + header_size + 256 <= BUDGET:
            # The real header with the data cut short: refused as truncated.
            write(target, f"truncated_{stem}.safetensors", blob[:8 + header_size + 256])

    dtypes = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
              "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
    every_dtype = [(f"t.{name.lower()}", name, [2], bytes(range(2 * size)))
                   for name, size in dtypes.items()]
    write(target, "every_dtype.safetensors", safetensors_image(every_dtype, {"format": "pt"}))
    write(target, "scalar_and_empty.safetensors", safetensors_image([
        ("empty", "F32", [0, 4096], b""),
        ("scalar", "F32", [], struct.pack("<f", 1.5)),
        ("matrix", "BF16", [2, 3], bytes(12)),
        ("rank4", "F16", [1, 2, 1, 2], bytes(8)),
    ]))
    write(target, "no_tensors.safetensors", safetensors_image([]))
    write(target, "metadata_only.safetensors", safetensors_image([], {"a": "b", "format": "pt"}))
    good = safetensors_image([("w", "F32", [2, 2], bytes(16))])
    write(target, "trailing_byte.safetensors", good + b"\0")
    write(target, "length_past_end.safetensors", struct.pack("<Q", 1 << 20) + good[8:])
    overlap = json.dumps({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }, separators=(",", ":")).encode()
    write(target, "overlap.safetensors", struct.pack("<Q", len(overlap)) + overlap + bytes(12))


# ---- config.json ----------------------------------------------------------------------------

def config_seeds():
    target = "config_json_fuzzer"
    for rel in ["models/builtin/config.json",
                "tests/fixtures/mixtral-tiny-bf16/config.json",
                "tests/fixtures/olmoe-tiny-f32/config.json",
                "tests/fixtures/qwen2moe-tiny-f32/config.json"]:
        with open(os.path.join(ROOT, rel), "rb") as f:
            write(target, rel.replace("/", "_"), f.read())
    with open(os.path.join(ROOT, "tests/fixtures/qwen2moe-tiny-f32/config.json")) as f:
        qwen3 = json.load(f)
    qwen3.update({"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                  "norm_topk_prob": True, "head_dim": 16, "mlp_only_layers": [0],
                  "decoder_sparse_step": 1, "intermediate_size": 96,
                  "rope_scaling": None, "rope_parameters": {"rope_theta": 1000000.0}})
    for key in ["shared_expert_intermediate_size", "qkv_bias"]:
        qwen3.pop(key, None)
    write(target, "qwen3moe_variant.json", json.dumps(qwen3, indent=1))
    write(target, "moe_mlp_minimal.json", json.dumps({
        "architecture": "MoEMLP", "input_dim": 4, "hidden_size": 8, "output_dim": 2,
        "num_blocks": 1, "num_experts": 2, "top_k": 1, "expert_ffn_dim": 8,
        "activation": "gelu", "router_scoring": "sigmoid"}))
    write(target, "model_type_only.json", json.dumps({
        "model_type": "mixtral", "vocab_size": 32, "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2,
        "intermediate_size": 8, "torch_dtype": "bfloat16"}))


# ---- ModelInferRequest ----------------------------------------------------------------------

PROTO = "kserve/grpc_predict_v2.proto"


def encode_request(text):
    return subprocess.run(
        ["protoc", f"--proto_path={os.path.join(ROOT, 'proto')}",
         "--encode=inference.ModelInferRequest", PROTO],
        input=text.encode(), capture_output=True, check=True).stdout


def typed_input(rows, values=None, datatype="FP32", width=64, name="input"):
    values = values if values is not None else [((i * 7) % 17) / 16.0 for i in range(rows * width)]
    contents = " ".join(f"fp32_contents: {v!r}" for v in values)
    return (f'inputs {{ name: "{name}" datatype: "{datatype}" shape: {rows} shape: {width} '
            f'contents {{ {contents} }} }}')


def raw_input(rows, datatype, width=64):
    size = {"FP32": 4, "FP16": 2, "BF16": 2}.get(datatype, 4)
    payload = "".join(f"\\{b:03o}" for b in bytes((i * 37) % 61 for i in range(rows * width * size)))
    if datatype == "FP16":  # keep the values finite: clear the top exponent bit of each half
        payload = "".join(f"\\{b:03o}" for b in
                          bytes(((i * 37) % 61) & (0x3f if i % 2 else 0xff)
                                for i in range(rows * width * size)))
    return (f'inputs {{ name: "input" datatype: "{datatype}" shape: {rows} shape: {width} }} '
            f'raw_input_contents: "{payload}"')


def structured(*picks):
    """A builder-mode input: 0x01 then the bytes infer_request_fuzzer.cc's BuildRequest reads."""
    return bytes([1]) + bytes(picks)


def infer_seeds():
    target = "infer_request_fuzzer"
    requests = {
        "typed_fp32_1row": typed_input(1),
        "typed_fp32_3rows_routing": 'model_name: "digits" model_version: "1" '
                                    'parameters { key: "routing" value { bool_param: true } } '
                                    + typed_input(3),
        "raw_fp32_2rows": raw_input(2, "FP32"),
        "raw_fp16_1row": raw_input(1, "FP16"),
        "raw_bf16_8rows": raw_input(8, "BF16"),
        "outputs_and_parameters": 'id: "r1" '
                                  'parameters { key: "timeout" value { int64_param: 1000 } } '
                                  'parameters { key: "priority" value { uint64_param: 2 } } '
                                  'outputs { name: "logits" } outputs { name: "routing_weights" } '
                                  'outputs { name: "routing_expert_ids" } ' + typed_input(1),
        # Refused ones, each for one reason.
        "nan_value": typed_input(1, [float("nan")] + [0.0] * 63),
        "wrong_width": typed_input(1, [0.0] * 63, width=63),
        "int32_datatype": typed_input(1, datatype="INT32"),
        "too_many_rows": raw_input(9, "FP16"),
        "unknown_output": 'outputs { name: "probabilities" } ' + typed_input(1),
        "classification": 'outputs { name: "logits" parameters { key: "classification" '
                          'value { int64_param: 3 } } } ' + typed_input(1),
        "typed_and_raw": raw_input(1, "FP32").replace("} raw_input_contents",
                                                      "contents { fp32_contents: 1 } } "
                                                      "raw_input_contents"),
        "bad_version": 'model_version: "7" ' + typed_input(1),
        "no_inputs": 'model_name: "digits"',
    }
    for name, text in requests.items():
        write(target, f"proto_{name}.bin", b"\x00" + encode_request(text))

    values = bytes((i * 11) % 256 for i in range(64))
    # version none, no id, no parameters, no outputs, one input named "input", FP32, rank 2,
    # rows 1 + 0 % 8, width 64, then where/count/style.
    head = (0, 1, 0, 0, 1, 2, 0, 2, 2, 0, 4)
    write(target, "built_typed_fp32.bin", structured(*head, 2, 2, 1) + values + bytes([3, 3]))
    write(target, "built_raw_fp32.bin", structured(*head, 5, 2, 1) + values + bytes([3, 3]))
    write(target, "built_raw_bf16.bin",
          structured(0, 1, 0, 0, 1, 2, 5, 2, 2, 0, 4, 6, 2, 1) + values + bytes([3, 3]))
    # routing parameter true and all three outputs; 2 rows of FP16.
    write(target, "built_routing_fp16.bin",
          structured(0, 1, 1, 0, 1, 1, 3, 0, 1, 1, 1, 2, 1, 1, 2, 3, 2, 2, 1, 4, 5, 2, 1)
          + values + values + bytes([3, 3]))


def main():
    safetensors_seeds()
    config_seeds()
    infer_seeds()
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        print(f"{target}: {len(files)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
