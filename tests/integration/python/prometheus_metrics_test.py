#!/usr/bin/env python3
"""moe-server's metrics as a real Prometheus server sees them.

Starts moe-server (built-in digits model, metrics on a free port) and the Prometheus server
(Debian package `prometheus`) on loopback, scraping it every second. Sends requests that ask
for their routing, adds up the experts each request was routed to, and checks through
Prometheus's HTTP query API that the per-expert token counters equal those sums. Also checks
the exposition with `promtool check metrics`, the request outcome counters and the window gauges
against the counters. (The dashboard's queries are checked against a live scrape by
deploy_assets_live_test.py.)

Run with the system python3 (python3-grpcio, python3-protobuf, python3-numpy):
    python3 prometheus_metrics_test.py [--server BIN] [--stubs DIR] [--source DIR]
ctest passes the paths in the environment, and MOE_PROMETHEUS / MOE_PROMTOOL for the binaries
(default: /usr/bin/prometheus and /usr/bin/promtool).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_server  # noqa: E402

ARGS, UNITTEST_ARGV = moe_server.parse_paths(__file__)
PROMETHEUS = os.environ.get("MOE_PROMETHEUS", "/usr/bin/prometheus")
PROMTOOL = os.environ.get("MOE_PROMTOOL", "/usr/bin/promtool")
for binary in (PROMETHEUS, PROMTOOL):
    if not os.access(binary, os.X_OK):
        moe_server.fail_setup(__file__, f"no {binary}: run scripts/setup.sh (it installs the "
                              "Debian package prometheus)")

try:
    import grpc
    import numpy as np
except ImportError as error:
    moe_server.fail_setup(__file__, f"missing Python module ({error}); {moe_server.SETUP_HINT}")
sys.path.insert(0, ARGS.stubs or "")
try:
    from kserve import grpc_predict_v2_pb2 as pb
    from kserve import grpc_predict_v2_pb2_grpc as pb_grpc
except ImportError as error:
    moe_server.fail_setup(__file__, f"cannot import the generated stubs from {ARGS.stubs!r} "
                          f"({error}); build the moe_python_stubs target")

MODEL = "digits"
LAYERS = 2
EXPERTS = 8
TOP_K = 2
TIMEOUT = 30
SAMPLE_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


def parse_exposition(text):
    """[(name, {label: value}, float)] of the text format."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE_LINE.match(line)
        if match is None:
            raise AssertionError(f"unparseable exposition line: {line!r}")
        labels = dict(LABEL.findall(match.group(3) or ""))
        samples.append((match.group(1), labels, float(match.group(4))))
    return samples


def server_ready(address):
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(
            pb.ServerReadyRequest(), timeout=1).ready


class PrometheusMetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.metrics_port = moe_server.free_loopback_port()
        # A long window, so that the window gauges cover every request of this test.
        cls.server = moe_server.ServerProcess(
            ARGS.server, ["--backend", "cpu", "--metrics-port", str(cls.metrics_port),
                          "--expert-timing-sample-rate", "0.5", "--metrics-window", "10m"],
            server_ready)
        cls.addClassCleanup(cls.server.close)
        cls.metrics_url = f"http://127.0.0.1:{cls.metrics_port}/metrics"
        cls.channel = grpc.insecure_channel(cls.server.address)
        cls.addClassCleanup(cls.channel.close)
        cls.kserve = pb_grpc.GRPCInferenceServiceStub(cls.channel)
        cls.heldout = moe_server.read_safetensors(
            os.path.join(ARGS.source, "models", "builtin", "heldout.safetensors"))
        cls.start_prometheus()
        # What the server answered, added up by the tests: the counters must equal these.
        cls.routed = np.zeros((LAYERS, EXPERTS), dtype=np.int64)
        cls.successes = 0

    @classmethod
    def start_prometheus(cls):
        cls.prometheus_dir = tempfile.mkdtemp(prefix="moe_prometheus_")
        cls.addClassCleanup(shutil.rmtree, cls.prometheus_dir, True)
        config = os.path.join(cls.prometheus_dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: moe-server\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{cls.metrics_port}']\n")
        log_path = os.path.join(cls.prometheus_dir, "prometheus.log")
        for _ in range(3):  # the port may be taken between picking and binding it
            port = moe_server.free_loopback_port()
            cls.prometheus_url = f"http://127.0.0.1:{port}"
            with open(log_path, "wb") as log:
                cls.prometheus = subprocess.Popen(
                    [PROMETHEUS, f"--config.file={config}",
                     f"--storage.tsdb.path={os.path.join(cls.prometheus_dir, 'data')}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and cls.prometheus.poll() is None:
                try:
                    http_get(f"{cls.prometheus_url}/-/ready", timeout=1)
                    cls.addClassCleanup(cls.stop_prometheus)
                    return
                except OSError:
                    time.sleep(0.2)
            cls.stop_prometheus()
        with open(log_path, "rb") as log:
            tail = log.read()[-4000:].decode("utf-8", "replace")
        raise RuntimeError(f"prometheus did not become ready; log tail:\n{tail}")

    @classmethod
    def stop_prometheus(cls):
        if cls.prometheus.poll() is None:
            cls.prometheus.terminate()
            try:
                cls.prometheus.wait(timeout=30)
            except subprocess.TimeoutExpired:
                cls.prometheus.kill()
                cls.prometheus.wait()

    # --- helpers ---

    def query(self, expression):
        """Prometheus instant query: [(labels, value)]."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression})
        answer = json.loads(http_get(url))
        self.assertEqual(answer["status"], "success", answer)
        return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]

    def send_with_routing(self, rows):
        """One ModelInfer asking for routing; adds the experts it was routed to."""
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
        request.raw_input_contents.append(rows.astype("<f4").tobytes())
        request.parameters["routing"].bool_param = True
        response = self.kserve.ModelInfer(request, timeout=TIMEOUT)
        for index, tensor in enumerate(response.outputs):
            if tensor.name == "routing_expert_ids":
                ids = np.frombuffer(response.raw_output_contents[index], dtype="<i4")
                ids = ids.reshape(list(tensor.shape))  # [rows, layers, top_k]
                for layer in range(LAYERS):
                    np.add.at(type(self).routed[layer], ids[:, layer, :].ravel(), 1)
                type(self).successes += 1
                return
        self.fail(f"no routing_expert_ids in the response: {[t.name for t in response.outputs]}")

    def send_traffic(self, seed, requests):
        rng = np.random.default_rng(seed)
        features = self.heldout["features"]
        for _ in range(requests):
            count = int(rng.integers(1, 9))
            picks = rng.choice(features.shape[0], size=count, replace=False)
            self.send_with_routing(np.ascontiguousarray(features[picks], dtype=np.float32))

    def wait_for_scrape_of_all_successes(self):
        """Waits until Prometheus has scraped the server after the last success."""
        expression = f'moe_requests_total{{model="{MODEL}",outcome="success"}}'
        deadline = time.monotonic() + 60
        seen = None
        while time.monotonic() < deadline:
            result = self.query(expression)
            seen = result[0][1] if result else None
            if seen == self.successes:
                return
            time.sleep(0.25)
        self.fail(f"Prometheus never saw {self.successes} successes (last: {seen})")

    # --- tests ---

    def test_1_expert_token_counters_equal_the_routing_through_prometheus(self):
        seed = int.from_bytes(os.urandom(4), "little")
        print(f"traffic seed {seed}", file=sys.stderr)
        self.send_traffic(seed, requests=60)
        self.wait_for_scrape_of_all_successes()
        result = self.query(f'moe_expert_tokens_total{{model="{MODEL}"}}')
        self.assertEqual(len(result), LAYERS * EXPERTS, result)
        scraped = np.full((LAYERS, EXPERTS), -1, dtype=np.int64)
        for labels, value in result:
            scraped[int(labels["layer"]), int(labels["expert"])] = int(value)
        np.testing.assert_array_equal(scraped, self.routed,
                                      err_msg=f"moe_expert_tokens_total vs routing (seed {seed})")
        rows_times_k = self.routed.sum(axis=1)
        for labels, value in self.query(f'moe_layer_tokens_total{{model="{MODEL}"}}'):
            self.assertEqual(value, rows_times_k[int(labels["layer"])], labels)
        self.assertEqual(rows_times_k[0] % TOP_K, 0)
        # The batches and rows the scheduler ran add up to the same rows.
        [(_, rows)] = self.query(f'moe_batch_rows_sum{{model="{MODEL}"}}')
        self.assertEqual(rows * TOP_K, rows_times_k[0])

    def test_2_exposition_passes_promtool(self):
        text = http_get(self.metrics_url)
        checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                                 capture_output=True, timeout=60)
        self.assertEqual(checked.returncode, 0,
                         checked.stdout.decode() + checked.stderr.decode())
        self.assertEqual(checked.stdout.decode().strip() + checked.stderr.decode().strip(), "",
                         "promtool found problems")

    def test_3_window_gauges_agree_with_the_counters(self):
        self.send_traffic(int.from_bytes(os.urandom(4), "little"), requests=10)
        samples = parse_exposition(http_get(self.metrics_url))
        tokens = np.zeros((LAYERS, EXPERTS))
        shares = np.full((LAYERS, EXPERTS), -1.0)
        for name, labels, value in samples:
            if labels.get("model") != MODEL:
                continue
            if name == "moe_expert_tokens_total":
                tokens[int(labels["layer"]), int(labels["expert"])] = value
            elif name == "moe_expert_load_share":
                shares[int(labels["layer"]), int(labels["expert"])] = value
        gauges = {(name, labels.get("layer")): value for name, labels, value in samples
                  if labels.get("model") == MODEL}
        for layer in range(LAYERS):
            # Every request of this server is inside its 10-minute window.
            expected_shares = tokens[layer] / tokens[layer].sum()
            np.testing.assert_allclose(shares[layer], expected_shares, rtol=1e-12)
            self.assertAlmostEqual(gauges[("moe_layer_load_imbalance", str(layer))],
                                   tokens[layer].max() / tokens[layer].mean(), places=12)
            self.assertEqual(gauges[("moe_layer_idle_experts", str(layer))],
                             float((tokens[layer] == 0).sum()))
            entropy = gauges[("moe_layer_routing_entropy_nats", str(layer))]
            self.assertGreater(entropy, 0.0)
            self.assertLess(entropy, np.log(EXPERTS))

    def test_4_expert_time_is_measured_on_sampled_passes(self):
        self.send_traffic(int.from_bytes(os.urandom(4), "little"), requests=20)
        samples = parse_exposition(http_get(self.metrics_url))
        runs = {}
        seconds = {}
        for name, labels, value in samples:
            key = (labels.get("layer"), labels.get("expert"))
            if name == "moe_expert_compute_samples_total":
                runs[key] = value
            elif name == "moe_expert_compute_seconds_total":
                seconds[key] = value
        self.assertEqual(len(runs), LAYERS * EXPERTS)
        self.assertGreater(sum(runs.values()), 0, "rate 0.5: some passes were timed")
        for key, count in runs.items():
            self.assertEqual(count > 0, seconds[key] > 0, f"layer/expert {key}")

    def test_5_outcomes_are_counted(self):
        bad = pb.ModelInferRequest(model_name=MODEL)
        bad.inputs.add(name="input", datatype="FP32", shape=[1, 3]).contents.fp32_contents.extend(
            [1.0, 2.0, 3.0])
        with self.assertRaises(grpc.RpcError) as raised:
            self.kserve.ModelInfer(bad, timeout=TIMEOUT)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        unknown = pb.ModelInferRequest(model_name="no-such-model")
        with self.assertRaises(grpc.RpcError) as raised:
            self.kserve.ModelInfer(unknown, timeout=TIMEOUT)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.NOT_FOUND)
        samples = parse_exposition(http_get(self.metrics_url))
        counts = {(labels["model"], labels["outcome"]): value
                  for name, labels, value in samples if name == "moe_requests_total"}
        self.assertEqual(counts[(MODEL, "invalid")], 1)
        self.assertEqual(counts[("(unknown)", "invalid")], 1)
        self.assertEqual(counts[(MODEL, "success")], self.successes)
        self.assertEqual(counts[(MODEL, "internal")], 0)


if __name__ == "__main__":
    unittest.main(argv=UNITTEST_ARGV, verbosity=2)
