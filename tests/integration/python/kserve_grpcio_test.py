#!/usr/bin/env python3
"""moe-server through plain grpcio with stubs generated from the repository's protos.

Run with the system python3 (Debian's python3-grpcio, python3-protobuf, python3-numpy):
    python3 kserve_grpcio_test.py [--server BIN] [--stubs DIR] [--source DIR] [unittest args]
ctest passes the paths in MOE_SERVER_BINARY, MOE_PYTHON_STUBS_DIR and MOE_SOURCE_DIR. Starts its
own server (the built-in digits model) on a free port. The expected numbers come from
models/builtin/heldout.safetensors (labels, and the logits PyTorch computed when training), not
from the C++ code under test.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_server  # noqa: E402

ARGS, UNITTEST_ARGV = moe_server.parse_paths(__file__)

try:
    import grpc
    import numpy as np
except ImportError as error:
    moe_server.fail_setup(__file__, f"missing Python module ({error}); {moe_server.SETUP_HINT}")

if not ARGS.stubs or not os.path.isdir(os.path.join(ARGS.stubs, "kserve")):
    moe_server.fail_setup(
        __file__, f"no generated Python stubs in {ARGS.stubs!r}: build the moe_python_stubs target "
        "(needs grpc_python_plugin from protobuf-compiler-grpc), or pass --stubs")
sys.path.insert(0, ARGS.stubs)
try:
    import health_pb2
    import health_pb2_grpc
    from kserve import grpc_predict_v2_pb2 as pb
    from kserve import grpc_predict_v2_pb2_grpc as pb_grpc
    from moe.v1 import moe_service_pb2 as moe_pb
    from moe.v1 import moe_service_pb2_grpc as moe_pb_grpc
except ImportError as error:
    moe_server.fail_setup(__file__, f"cannot import the generated stubs ({error}); "
                          f"{moe_server.SETUP_HINT}")

WIDTH = 64
CLASSES = 10
TIMEOUT = 30


def server_ready(address):
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(
            pb.ServerReadyRequest(), timeout=1).ready


def infer_request(model, rows, datatype="FP32", raw=False, routing=False, request_id=""):
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    tensor = request.inputs.add(name="input", datatype=datatype, shape=list(rows.shape))
    if datatype == "FP16":
        request.raw_input_contents.append(rows.astype("<f2").tobytes())
    elif raw:
        request.raw_input_contents.append(rows.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(rows.astype(np.float32).ravel().tolist())
    if routing:
        request.parameters["routing"].bool_param = True
    return request


def output(response, name):
    """An output as a numpy array, from raw_output_contents or typed contents."""
    for index, tensor in enumerate(response.outputs):
        if tensor.name != name:
            continue
        dtype = {"FP32": "<f4", "INT32": "<i4"}[tensor.datatype]
        if response.raw_output_contents:
            values = np.frombuffer(response.raw_output_contents[index], dtype=dtype)
        elif tensor.datatype == "FP32":
            values = np.array(tensor.contents.fp32_contents, dtype=np.float32)
        else:
            values = np.array(tensor.contents.int_contents, dtype=np.int32)
        return values.reshape(list(tensor.shape))
    raise AssertionError(f"response has no output {name!r}: {[t.name for t in response.outputs]}")


class KServeGrpcioTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = moe_server.ServerProcess(ARGS.server, ["--backend", "cpu"], server_ready)
        # Class cleanups run even when the rest of setUpClass raises (tearDownClass does not),
        # in reverse order: the channel closes before the server stops.
        cls.addClassCleanup(cls.server.close)
        cls.channel = grpc.insecure_channel(cls.server.address)
        cls.addClassCleanup(cls.channel.close)
        cls.kserve = pb_grpc.GRPCInferenceServiceStub(cls.channel)
        cls.moe = moe_pb_grpc.MoEServiceStub(cls.channel)
        cls.health = health_pb2_grpc.HealthStub(cls.channel)
        cls.heldout = moe_server.read_safetensors(
            os.path.join(ARGS.source, "models", "builtin", "heldout.safetensors"))

    def infer(self, request):
        return self.kserve.ModelInfer(request, timeout=TIMEOUT)

    def assertCode(self, call, code, substring):
        with self.assertRaises(grpc.RpcError) as raised:
            call()
        self.assertEqual(raised.exception.code(), code, raised.exception.details())
        self.assertIn(substring, raised.exception.details())

    # --- health and metadata ---

    def test_server_live_and_ready(self):
        self.assertTrue(self.kserve.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT).live)
        self.assertTrue(self.kserve.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT).ready)

    def test_server_metadata(self):
        metadata = self.kserve.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT)
        self.assertEqual(metadata.name, "moe-serve")
        self.assertTrue(metadata.version)

    def test_model_ready(self):
        self.assertTrue(self.kserve.ModelReady(pb.ModelReadyRequest(name="digits"),
                                               timeout=TIMEOUT).ready)

    def test_model_metadata(self):
        metadata = self.kserve.ModelMetadata(pb.ModelMetadataRequest(name="digits"),
                                             timeout=TIMEOUT)
        self.assertEqual(metadata.name, "digits")
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in metadata.inputs],
                         [("input", "FP32", [-1, WIDTH])])
        self.assertEqual((metadata.outputs[0].name, metadata.outputs[0].datatype,
                          list(metadata.outputs[0].shape)), ("logits", "FP32", [-1, CLASSES]))

    def test_health_check(self):
        for service in ("", "digits"):
            response = self.health.Check(health_pb2.HealthCheckRequest(service=service),
                                         timeout=TIMEOUT)
            self.assertEqual(response.status, health_pb2.HealthCheckResponse.SERVING, service)

    # --- moe.v1 ---

    def test_list_models(self):
        models = self.moe.ListModels(moe_pb.ListModelsRequest(), timeout=TIMEOUT).models
        self.assertEqual([m.name for m in models], ["digits"])

    def test_get_model_info(self):
        info = self.moe.GetModelInfo(moe_pb.GetModelInfoRequest(name="digits"), timeout=TIMEOUT)
        self.assertEqual(info.architecture, "MoEMLP")
        self.assertTrue(info.ready)
        self.assertTrue(info.tensor_servable)
        self.assertEqual((info.num_moe_layers, info.num_experts, info.top_k), (2, 8, 2))
        self.assertEqual((info.input_name, info.input_width), ("input", WIDTH))
        self.assertEqual((info.output_name, info.output_width), ("logits", CLASSES))
        self.assertEqual(list(info.output_labels), [str(d) for d in range(10)])
        self.assertEqual(info.backend, "cpu")

    # --- inference, checked against numbers from outside the C++ code ---

    def test_heldout_digits_are_classified_as_trained(self):
        features = self.heldout["features"]
        labels = self.heldout["labels"]
        trained = self.heldout["logits"]
        logits = []
        for start in range(0, len(features), 200):
            response = self.infer(infer_request("digits", features[start:start + 200],
                                                request_id=f"heldout-{start}"))
            self.assertEqual(response.id, f"heldout-{start}")
            logits.append(output(response, "logits"))
        logits = np.concatenate(logits)
        self.assertEqual(logits.shape, (len(features), CLASSES))
        accuracy = float((logits.argmax(axis=1) == labels).mean())
        # models/builtin/training_report.json: heldout_accuracy 0.9833
        self.assertGreaterEqual(accuracy, 0.97)
        self.assertGreaterEqual(int((logits.argmax(axis=1) == trained.argmax(axis=1)).sum()),
                                len(features) - 2)
        close = np.abs(logits - trained).max(axis=1) <= 1e-3
        self.assertGreaterEqual(int(close.sum()), len(features) * 95 // 100,
                                "rows within 1e-3 of the training script's logits")

    def test_raw_and_typed_give_the_same_logits(self):
        rows = self.heldout["features"][:7]
        typed = self.infer(infer_request("digits", rows))
        raw = self.infer(infer_request("digits", rows, raw=True))
        self.assertEqual(len(typed.raw_output_contents), 0)
        self.assertEqual(len(raw.raw_output_contents), 1)
        np.testing.assert_array_equal(output(raw, "logits"), output(typed, "logits"))

    def test_fp16_input_equals_fp32_of_the_rounded_values(self):
        rows = self.heldout["features"][10:15]
        half = self.infer(infer_request("digits", rows.astype(np.float16), datatype="FP16"))
        full = self.infer(infer_request("digits", rows.astype(np.float16).astype(np.float32)))
        np.testing.assert_array_equal(output(half, "logits"), output(full, "logits"))

    def test_routing_outputs(self):
        rows = self.heldout["features"][:5]
        response = self.infer(infer_request("digits", rows, routing=True))
        ids = output(response, "routing_expert_ids")
        weights = output(response, "routing_weights")
        self.assertEqual(ids.shape, (5, 2, 2))
        self.assertEqual(weights.shape, (5, 2, 2))
        self.assertTrue(((ids >= 0) & (ids < 8)).all(), ids)
        self.assertTrue((ids[:, :, 0] != ids[:, :, 1]).all(), ids)
        np.testing.assert_allclose(weights.sum(axis=2), 1.0, rtol=1e-5)

    def test_response_parameters(self):
        response = self.infer(infer_request("digits", self.heldout["features"][:3]))
        for key in ("queue_us", "compute_us", "batch_rows"):
            self.assertIn(key, response.parameters)
        self.assertEqual(response.parameters["batch_rows"].int64_param, 3)

    # --- errors ---

    def test_wrong_width_is_invalid_argument(self):
        rows = np.zeros((2, WIDTH - 1), dtype=np.float32)
        self.assertCode(lambda: self.infer(infer_request("digits", rows)),
                        grpc.StatusCode.INVALID_ARGUMENT, "shape")

    def test_unknown_model_is_not_found(self):
        rows = np.zeros((1, WIDTH), dtype=np.float32)
        self.assertCode(lambda: self.infer(infer_request("no-such-model", rows)),
                        grpc.StatusCode.NOT_FOUND, "no-such-model")
        self.assertCode(lambda: self.moe.GetModelInfo(
            moe_pb.GetModelInfoRequest(name="no-such-model"), timeout=TIMEOUT),
            grpc.StatusCode.NOT_FOUND, "no-such-model")


if __name__ == "__main__":
    unittest.main(argv=UNITTEST_ARGV, verbosity=2)
