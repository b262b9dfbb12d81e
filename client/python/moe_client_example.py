#!/usr/bin/env python3
"""A moe-server client in Python: plain grpcio with stubs generated from the repository's protos.

    python3 moe_client_example.py --target localhost:8001 [--model digits] [--stubs DIR]

It checks the server's health, lists the models it serves, then sends one request of random
rows to a model with the routing output turned on, and prints each row's best class (or
largest output) with the experts every MoE layer routed it to.

Stubs: the build generates them into BUILD/python (CMake target moe_python_stubs, from
proto/ with grpc_python_plugin), or make them yourself:
    python3 -m grpc_tools.protoc -I proto --python_out=OUT --grpc_python_out=OUT \\
        proto/kserve/grpc_predict_v2.proto proto/moe/v1/moe_service.proto
Needs grpcio, protobuf and numpy (Debian: python3-grpcio python3-protobuf python3-numpy).
"""

import argparse
import os
import sys


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="localhost:8001", help="the server, HOST:PORT")
    parser.add_argument("--model", default="digits", help="model to ask")
    parser.add_argument("--rows", type=int, default=3, help="random rows to send")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random rows")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    parser.add_argument("--stubs", default=os.environ.get("MOE_PYTHON_STUBS_DIR", ""),
                        help="directory of the generated stubs (default: $MOE_PYTHON_STUBS_DIR)")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.stubs:
        sys.path.insert(0, args.stubs)
    try:
        import grpc
        import numpy as np
        from kserve import grpc_predict_v2_pb2 as kserve
        from kserve import grpc_predict_v2_pb2_grpc as kserve_grpc
        from moe.v1 import moe_service_pb2 as moe
        from moe.v1 import moe_service_pb2_grpc as moe_grpc
    except ImportError as error:
        sys.exit(f"moe_client_example: {error} (install grpcio, protobuf and numpy; point "
                 "--stubs at the generated stubs)")

    with grpc.insecure_channel(args.target) as channel:
        inference = kserve_grpc.GRPCInferenceServiceStub(channel)
        models = moe_grpc.MoEServiceStub(channel)
        try:
            ready = inference.ServerReady(kserve.ServerReadyRequest(), timeout=args.timeout)
            print(f"server {args.target}: ready={ready.ready}")
            for info in models.ListModels(moe.ListModelsRequest(), timeout=args.timeout).models:
                print(f"  model {info.name}: {info.architecture}, {info.num_moe_layers} MoE "
                      f"layers x {info.num_experts} experts, top-{info.top_k}, "
                      f"{info.backend}, ready={info.ready}")
            info = models.GetModelInfo(moe.GetModelInfoRequest(name=args.model),
                                       timeout=args.timeout)

            rows = np.random.default_rng(args.seed).random(
                (args.rows, info.input_width), dtype=np.float32)
            request = kserve.ModelInferRequest(model_name=args.model)
            request.inputs.add(name=info.input_name, datatype="FP32", shape=list(rows.shape))
            request.raw_input_contents.append(rows.astype("<f4").tobytes())
            request.parameters["routing"].bool_param = True
            response = inference.ModelInfer(request, timeout=args.timeout)
        except grpc.RpcError as error:
            sys.exit(f"moe_client_example: {error.code().name}: {error.details()}")

    outputs = {}
    for index, tensor in enumerate(response.outputs):
        dtype = {"FP32": "<f4", "INT32": "<i4"}[tensor.datatype]
        outputs[tensor.name] = np.frombuffer(response.raw_output_contents[index],
                                             dtype=dtype).reshape(list(tensor.shape))
    values = outputs[info.output_name]
    experts = outputs["routing_expert_ids"]  # [rows, moe_layers, top_k]
    weights = outputs["routing_weights"]
    labels = list(info.output_labels)
    for row in range(values.shape[0]):
        best = int(values[row].argmax())
        name = labels[best] if best < len(labels) else str(best)
        routes = "; ".join(
            f"layer {layer}: " + ", ".join(
                f"expert {e} ({w:.2f})" for e, w in zip(experts[row, layer], weights[row, layer]))
            for layer in range(experts.shape[1]))
        print(f"row {row}: {info.output_name} argmax {name}  [{routes}]")
    params = response.parameters
    print(f"server: queue {params['queue_us'].int64_param} us, compute "
          f"{params['compute_us'].int64_param} us, batch of {params['batch_rows'].int64_param} rows")


if __name__ == "__main__":
    main()
