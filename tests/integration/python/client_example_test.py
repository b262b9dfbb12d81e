#!/usr/bin/env python3
"""client/python/moe_client_example.py against a live moe-server.

Runs the example as a user would (a separate process, its own stubs path) and checks what it
prints: the server's readiness, the built-in model's description, one line per row with a
class and the experts of both MoE layers, the server's timing; and that an unknown model ends
it with a non-zero status naming NOT_FOUND.
"""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_server  # noqa: E402

ARGS, UNITTEST_ARGV = moe_server.parse_paths(__file__)
try:
    import grpc
except ImportError as error:
    moe_server.fail_setup(__file__, f"missing Python module ({error}); {moe_server.SETUP_HINT}")
sys.path.insert(0, ARGS.stubs or "")
try:
    from kserve import grpc_predict_v2_pb2 as pb
    from kserve import grpc_predict_v2_pb2_grpc as pb_grpc
except ImportError as error:
    moe_server.fail_setup(__file__, f"cannot import the generated stubs from {ARGS.stubs!r} "
                          f"({error}); build the moe_python_stubs target")

EXAMPLE = os.path.join(ARGS.source, "client", "python", "moe_client_example.py")


def server_ready(address):
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(
            pb.ServerReadyRequest(), timeout=1).ready


class ClientExampleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = moe_server.ServerProcess(ARGS.server, ["--backend", "cpu"], server_ready)
        cls.addClassCleanup(cls.server.close)

    def run_example(self, *extra):
        return subprocess.run(
            [sys.executable, EXAMPLE, "--target", self.server.address, "--stubs", ARGS.stubs,
             *extra], capture_output=True, text=True, timeout=60)

    def test_prints_health_models_and_routed_rows(self):
        done = self.run_example("--rows", "5", "--seed", "7")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        out = done.stdout
        self.assertIn(f"server {self.server.address}: ready=True", out)
        self.assertRegex(out, r"model digits: MoEMLP, 2 MoE layers x 8 experts, top-2, cpu, "
                              r"ready=True")
        rows = re.findall(r"^row (\d+): logits argmax (\d) +\[layer 0: expert (\d) \([0-9.]+\), "
                          r"expert (\d) \([0-9.]+\); layer 1: expert (\d) \([0-9.]+\), "
                          r"expert (\d) \([0-9.]+\)\]$", out, re.MULTILINE)
        self.assertEqual([int(r[0]) for r in rows], list(range(5)), out)
        for row in rows:
            self.assertNotEqual(row[2], row[3], "top-2 picks two different experts")
            self.assertNotEqual(row[4], row[5], "top-2 picks two different experts")
        self.assertRegex(out, r"server: queue \d+ us, compute \d+ us, batch of \d+ rows")

    def test_unknown_model_fails_naming_not_found(self):
        done = self.run_example("--model", "no-such-model")
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("NOT_FOUND", done.stderr)
        self.assertIn("no-such-model", done.stderr)


if __name__ == "__main__":
    unittest.main(argv=UNITTEST_ARGV, verbosity=2)
