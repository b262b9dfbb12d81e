#!/usr/bin/env python3
"""moe-server through the stock Triton client (tritonclient.grpc, unmodified, from PyPI).

Run with the virtual environment scripts/setup_python.sh makes:
    .venv/bin/python triton_client_test.py [--server BIN] [--source DIR] [unittest args]
Starts its own server (the built-in digits model) on a free port. Results are compared with the
same request sent through plain grpcio with the client's own generated protos (typed contents
instead of the client's raw bytes), and with the held-out digits' labels and the logits PyTorch
computed for them (models/builtin/heldout.safetensors).
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
    import tritonclient.grpc as triton
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import InferenceServerException
except ImportError as error:
    moe_server.fail_setup(__file__, f"missing Python module ({error}) in {sys.executable}; "
                          f"{moe_server.SETUP_HINT}")

WIDTH = 64
CLASSES = 10


def server_ready(address):
    return triton.InferenceServerClient(url=address).is_server_ready(client_timeout=1)


class TritonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = moe_server.ServerProcess(ARGS.server, ["--backend", "cpu"], server_ready)
        # Class cleanups run even when the rest of setUpClass raises (tearDownClass does not),
        # in reverse order: the client closes before the server stops.
        cls.addClassCleanup(cls.server.close)
        cls.client = triton.InferenceServerClient(url=cls.server.address)
        cls.addClassCleanup(cls.client.close)
        cls.heldout = moe_server.read_safetensors(
            os.path.join(ARGS.source, "models", "builtin", "heldout.safetensors"))

    def infer(self, rows, datatype="FP32", outputs=("logits",), **kwargs):
        tensor = triton.InferInput("input", list(rows.shape), datatype)
        tensor.set_data_from_numpy(rows)
        requested = [triton.InferRequestedOutput(name) for name in outputs]
        return self.client.infer("digits", [tensor], outputs=requested, **kwargs)

    def typed_grpcio_logits(self, rows):
        """The same rows through plain grpcio, typed fp32_contents in and out."""
        request = service_pb2.ModelInferRequest(model_name="digits")
        tensor = request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
        tensor.contents.fp32_contents.extend(rows.ravel().tolist())
        with grpc.insecure_channel(self.server.address) as channel:
            response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                request, timeout=30)
        self.assertEqual(len(response.raw_output_contents), 0)
        return np.array(response.outputs[0].contents.fp32_contents,
                        dtype=np.float32).reshape(list(response.outputs[0].shape))

    def test_health(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready("digits"))

    def test_server_metadata(self):
        metadata = self.client.get_server_metadata()
        self.assertEqual(metadata.name, "moe-serve")
        self.assertTrue(metadata.version)
        as_json = self.client.get_server_metadata(as_json=True)
        self.assertEqual(as_json["name"], "moe-serve")

    def test_model_metadata(self):
        metadata = self.client.get_model_metadata("digits")
        self.assertEqual(metadata.name, "digits")
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in metadata.inputs],
                         [("input", "FP32", [-1, WIDTH])])
        self.assertEqual((metadata.outputs[0].name, metadata.outputs[0].datatype,
                          list(metadata.outputs[0].shape)), ("logits", "FP32", [-1, CLASSES]))

    def test_infer_matches_grpcio_and_classifies_the_heldout_digits(self):
        features = self.heldout["features"][:200]
        labels = self.heldout["labels"][:200]
        result = self.infer(features, request_id="triton-1")
        logits = result.as_numpy("logits")
        self.assertEqual(logits.dtype, np.float32)
        self.assertEqual(logits.shape, (200, CLASSES))
        self.assertEqual(result.get_response().id, "triton-1")
        # The same rows alone on the server: the same batch, bit-identical logits.
        np.testing.assert_array_equal(logits, self.typed_grpcio_logits(features))
        self.assertGreaterEqual(float((logits.argmax(axis=1) == labels).mean()), 0.97)
        close = np.abs(logits - self.heldout["logits"][:200]).max(axis=1) <= 1e-3
        self.assertGreaterEqual(int(close.sum()), 190)

    def test_fp16_input(self):
        rows = self.heldout["features"][:9]
        half = self.infer(rows.astype(np.float16), datatype="FP16").as_numpy("logits")
        rounded = rows.astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(half, self.typed_grpcio_logits(rounded))

    def test_routing_outputs_by_parameter(self):
        rows = self.heldout["features"][:4]
        result = self.infer(rows, outputs=("logits", "routing_expert_ids", "routing_weights"))
        ids = result.as_numpy("routing_expert_ids")
        weights = result.as_numpy("routing_weights")
        self.assertEqual(ids.shape, (4, 2, 2))
        self.assertEqual(ids.dtype, np.int32)
        self.assertTrue(((ids >= 0) & (ids < 8)).all(), ids)
        np.testing.assert_allclose(weights.sum(axis=2), 1.0, rtol=1e-5)
        by_parameter = self.infer(rows, outputs=(), parameters={"routing": True})
        np.testing.assert_array_equal(by_parameter.as_numpy("routing_expert_ids"), ids)

    def test_errors_raise_inference_server_exception(self):
        bad = np.zeros((2, WIDTH - 1), dtype=np.float32)
        with self.assertRaises(InferenceServerException) as raised:
            self.infer(bad)
        self.assertEqual(raised.exception.status(), "StatusCode.INVALID_ARGUMENT")
        self.assertIn("shape", raised.exception.message())

        tensor = triton.InferInput("input", [1, WIDTH], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, WIDTH), dtype=np.float32))
        with self.assertRaises(InferenceServerException) as raised:
            self.client.infer("no-such-model", [tensor])
        self.assertEqual(raised.exception.status(), "StatusCode.NOT_FOUND")

        with self.assertRaises(InferenceServerException) as raised:
            self.client.get_model_metadata("no-such-model")
        self.assertEqual(raised.exception.status(), "StatusCode.NOT_FOUND")


if __name__ == "__main__":
    unittest.main(argv=UNITTEST_ARGV, verbosity=2)
