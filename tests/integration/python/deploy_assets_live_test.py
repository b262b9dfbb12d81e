#!/usr/bin/env python3
"""The deploy/ assets against a real moe-server.

Starts moe-server with the flag files the Kubernetes manifests mount (deploy/k8s/base and the
cpu and gpu overlays: absl must accept every line, and the values must take effect), serving the
built-in model and a decoder language model (the Mixtral reference checkpoint), sends it
inferences and generations so that the per-layer, per-expert and generation series exist,
scrapes /metrics, and checks that
  * every query of the Grafana dashboard reads only metric families the server exports
    (tests/deploy/check_dashboard.py --metrics-text);
  * every expression of the Prometheus rules (deploy/prometheus/moe-serve-rules.yaml) reads
    only metric names present in the scrape;
  * every metric the prometheus-adapter rules (deploy/k8s/prometheus-adapter), which feed the
    HorizontalPodAutoscaler, read is present in the scrape.

Run with the system python3 (python3-grpcio, python3-protobuf, python3-numpy); the adapter check
runs tests/deploy/validate_manifests.py on the project's .venv (PyYAML).
    python3 deploy_assets_live_test.py [--server BIN] [--stubs DIR] [--source DIR]
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_server  # noqa: E402

ARGS, UNITTEST_ARGV = moe_server.parse_paths(__file__)
try:
    import grpc
    import numpy as np
except ImportError as error:
    moe_server.fail_setup(__file__, f"missing Python module ({error}); {moe_server.SETUP_HINT}")
sys.path.insert(0, ARGS.stubs or "")
try:
    from kserve import grpc_predict_v2_pb2 as pb
    from kserve import grpc_predict_v2_pb2_grpc as pb_grpc
    from moe.v1 import moe_service_pb2 as moe_pb
    from moe.v1 import moe_service_pb2_grpc as moe_grpc
except ImportError as error:
    moe_server.fail_setup(__file__, f"cannot import the generated stubs from {ARGS.stubs!r} "
                          f"({error}); build the moe_python_stubs target")

DEPLOY_TESTS = os.path.join(ARGS.source, "tests", "deploy")
sys.path.insert(0, DEPLOY_TESTS)
import check_dashboard  # noqa: E402

VENV_PYTHON = os.path.join(ARGS.source, ".venv", "bin", "python")
FLAG_FILES = [os.path.join(ARGS.source, "deploy", "k8s", "base", "serving.flags"),
              os.path.join(ARGS.source, "deploy", "k8s", "cpu", "backend.flags")]
MODEL = "digits"
LM = "mix"
LM_DIR = os.path.join(ARGS.source, "tests", "fixtures", "mixtral-tiny-bf16")
REQUESTS = 24
TIMEOUT = 30


def server_ready(address):
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(
            pb.ServerReadyRequest(), timeout=1).ready


def flag_file_values():
    values = {}
    for path in FLAG_FILES:
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"^--([a-z0-9_]+)=(.*)$", line.strip())
                if m:
                    values[m.group(1)] = m.group(2)
    return values


class DeployAssetsLiveTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.metrics_port = moe_server.free_loopback_port()
        cls.server = moe_server.ServerProcess(
            ARGS.server, ["--metrics-port", str(cls.metrics_port),
                          "--flagfile", ",".join(FLAG_FILES),
                          "--model", f"{MODEL}={os.path.join(ARGS.source, 'models', 'builtin')}",
                          "--model", f"{LM}={LM_DIR}"], server_ready)
        cls.addClassCleanup(cls.server.close)
        cls.tmp = tempfile.TemporaryDirectory(prefix="moe_deploy_live_")
        cls.addClassCleanup(cls.tmp.cleanup)

        heldout = moe_server.read_safetensors(
            os.path.join(ARGS.source, "models", "builtin", "heldout.safetensors"))["features"]
        rng = np.random.default_rng(7)
        with grpc.insecure_channel(cls.server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(REQUESTS):
                rows = heldout[rng.choice(heldout.shape[0], size=int(rng.integers(1, 9)),
                                          replace=False)].astype("<f4")
                request = pb.ModelInferRequest(model_name=MODEL)
                request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
                request.raw_input_contents.append(rows.tobytes())
                stub.ModelInfer(request, timeout=TIMEOUT)
            generator = moe_grpc.MoEServiceStub(channel)
            for _ in range(4):
                prompt = [int(t) for t in rng.integers(3, 500, size=int(rng.integers(2, 12)))]
                request = moe_pb.GenerateRequest(model=LM, prompt_token_ids=prompt,
                                                 max_new_tokens=8, ignore_eos=True)
                for _ in generator.Generate(request, timeout=TIMEOUT):
                    pass
        url = f"http://127.0.0.1:{cls.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            cls.scrape = response.read().decode("utf-8")
        cls.scrape_path = os.path.join(cls.tmp.name, "metrics.prom")
        with open(cls.scrape_path, "w", encoding="utf-8") as f:
            f.write(cls.scrape)
        cls.exported = check_dashboard.parse_exposition(cls.scrape_path)

    def test_1_flag_files_of_the_manifests_take_effect(self):
        # The `serving` log line reports the batching settings the server runs with.
        values = flag_file_values()
        log = self.server.log_tail(20000)
        serving = [line for line in log.splitlines() if "event=serving" in line]
        self.assertTrue(serving, f"no serving line in the log:\n{log}")
        for flag in ("max_batch_tokens", "max_queue", "max_queue_delay_us"):
            self.assertIn(f"{flag}={values[flag]}", serving[0],
                          f"{flag} from {FLAG_FILES} not in effect: {serving[0]}")
        self.assertIn(f'moe_queue_capacity_requests{{model="{MODEL}"}} {values["max_queue"]}',
                      self.scrape)

    def test_2_dashboard_reads_only_exported_metrics(self):
        # Only the scrape's verdict counts here: the dashboard's other checks (JSON, data
        # sources, documentation coverage) are deploy_grafana_dashboard_check's.
        errors = check_dashboard.check(check_dashboard.DEFAULT_DASHBOARD,
                                       check_dashboard.DEFAULT_DOC, check_dashboard.DEFAULT_RULES,
                                       metrics_text=self.scrape_path)
        about_scrape = [e for e in errors if e.startswith(self.scrape_path)]
        self.assertEqual(about_scrape, [],
                         "the dashboard reads metric families the server does not export")

    def test_3_rules_read_only_exported_metrics(self):
        # The parse must tell names apart, or this test could not fail: a misspelling of an
        # exported counter is absent.
        self.assertIn("moe_requests_total", self.exported)
        self.assertNotIn("moe_request_total", self.exported)
        rules = check_dashboard.parse_rules(
            os.path.join(ARGS.source, "deploy", "prometheus", "moe-serve-rules.yaml"))
        self.assertTrue(rules, "no rules parsed")
        missing = []
        for kind, name, expr in rules:
            self.assertTrue(expr, f"{kind} {name}: no expr")
            for token in check_dashboard.METRIC_TOKEN.findall(expr):
                if token not in self.exported:
                    missing.append(f"{kind} {name}: {token}")
        self.assertEqual(missing, [], "rule expressions read metrics the server does not export")

    def test_4_autoscaling_metrics_are_exported(self):
        if not os.access(VENV_PYTHON, os.X_OK):
            moe_server.fail_setup(__file__, f"no {VENV_PYTHON}: {moe_server.SETUP_HINT}")
        checked = subprocess.run(
            [VENV_PYTHON, os.path.join(DEPLOY_TESTS, "validate_manifests.py"),
             "--adapter-metrics-only", "--metrics-text", self.scrape_path],
            capture_output=True, text=True, check=False)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)

    def test_5_gpu_overlay_flag_files_are_accepted(self):
        # The gpu overlay's backend.flags selects CUDA, which a CPU build (or a machine without
        # a GPU) cannot start; a later --backend=cpu overrides that one value, so the server
        # starts exactly when absl accepts every line of the files.
        files = [FLAG_FILES[0],
                 os.path.join(ARGS.source, "deploy", "k8s", "gpu", "backend.flags")]
        server = moe_server.ServerProcess(
            ARGS.server, ["--flagfile", ",".join(files), "--backend", "cpu"], server_ready)
        try:
            self.assertIsNone(server.process.poll(), server.log_tail())
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main(argv=UNITTEST_ARGV, verbosity=2)
