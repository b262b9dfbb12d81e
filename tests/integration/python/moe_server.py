"""Starts moe-server on a free loopback port for the Python integration tests.

Uses only the standard library, so that both test scripts (system python3 with grpcio, and the
.venv with tritonclient) can import it. Paths come from the environment that ctest sets
(MOE_SERVER_BINARY, MOE_SOURCE_DIR, MOE_PYTHON_STUBS_DIR) or from command-line flags.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SETUP_HINT = "run scripts/setup_python.sh (it installs what the Python integration tests need)"


def fail_setup(script, message):
    """Exits with status 1 and a message: a missing dependency is a failure, never a skip."""
    sys.stderr.write(f"{os.path.basename(script)}: {message}\n")
    sys.exit(1)


def parse_paths(script):
    """Reads --server/--source/--stubs (default: the environment); returns (args, unittest argv)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--server", default=os.environ.get("MOE_SERVER_BINARY"))
    parser.add_argument("--source", default=os.environ.get("MOE_SOURCE_DIR"))
    parser.add_argument("--stubs", default=os.environ.get("MOE_PYTHON_STUBS_DIR"))
    args, rest = parser.parse_known_args()
    if args.source is None:
        args.source = os.path.abspath(os.path.join(os.path.dirname(script), "..", "..", ".."))
    if args.server is None:
        args.server = os.path.join(args.source, "build", "server", "moe-server")
    if not os.access(args.server, os.X_OK):
        fail_setup(script, f"no moe-server binary at {args.server} (build it, or pass --server)")
    return args, [sys.argv[0]] + rest


def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """moe-server with its output in a log file; `ready` is a callable(address) -> bool."""

    def __init__(self, binary, args, ready, timeout=60.0):
        self._dir = tempfile.mkdtemp(prefix="moe_py_test_")
        self.log_path = os.path.join(self._dir, "server.log")
        self.address = None
        self.process = None
        try:
            self._start(binary, args, ready, timeout)
        except BaseException:
            # Nothing else will clean up after an object whose constructor raised.
            self.close()
            raise

    def _start(self, binary, args, ready, timeout):
        last_error = None
        for _ in range(3):  # the port may be taken between picking and binding it
            self.address = f"127.0.0.1:{free_loopback_port()}"
            # Tests run in parallel: a metrics port of its own unless the test chose one.
            extra = [] if "--metrics-port" in args else [
                "--metrics-port", str(free_loopback_port())]
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    [binary, "--address", self.address] + extra + list(args),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            last_error = self._wait_ready(ready, timeout)
            if last_error is None:
                return
            if self.process.poll() is None or "in use" not in self.log_tail():
                break
        self.kill()
        raise RuntimeError(f"{binary} {' '.join(args)}: {last_error}\nlog tail:\n{self.log_tail()}")

    def _wait_ready(self, ready, timeout):
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            code = self.process.poll()
            if code is not None:
                return f"server exited with code {code} before it was ready"
            if time.monotonic() > deadline:
                return f"server not ready after {timeout} s (last: {last})"
            try:
                if ready(self.address):
                    return None
                last = "not ready"
            except Exception as error:  # connection refused and the like, until it listens
                last = repr(error)
            time.sleep(0.05)

    def log_tail(self, max_bytes=6000):
        try:
            with open(self.log_path, "rb") as log:
                data = log.read()
        except OSError:
            return ""
        return data[-max_bytes:].decode("utf-8", "replace")

    def terminate(self, timeout=60.0):
        """SIGTERM, then the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self):
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


def read_safetensors(path):
    """{name: numpy array} of a .safetensors file: 8-byte little-endian header length, JSON header
    {name: {dtype, shape, data_offsets}}, then the data buffer (little-endian)."""
    import json
    import struct

    import numpy as np

    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = np.dtype(dtypes[info["dtype"]]).newbyteorder("<")
        array = np.frombuffer(data[base + begin:base + end], dtype=dtype)
        tensors[name] = array.reshape(info["shape"])
    return tensors
