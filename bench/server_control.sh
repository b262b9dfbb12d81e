# shellcheck shell=bash
# Shell functions the serving benchmarks share (source it; not a script of its own): start
# moe-server on free loopback ports, stop it with SIGTERM and check its exit code.
#
# The caller sets: bench_name (for messages), server and client (the binaries), maker
# (moe-make-synthetic, for make_synthetic_model).
# require_binaries checks them; make_work_dir sets work (a scratch directory, removed at exit);
# start_server "$@" sets server_pid, address (gRPC HOST:PORT), metrics_port and server_log;
# client_bench runs `moe-client bench` against it.
# shellcheck disable=SC2154  # bench_name, server, client, maker: set by the caller, see above

# Exits with a message unless each argument is an executable file, or python3 (which prints
# the tables) is missing; sets python.
require_binaries() {
  local binary
  for binary in "$@"; do
    if [[ ! -x $binary ]]; then
      echo "$bench_name: $binary not found: build first (scripts/build.sh, or --build DIR)" >&2
      exit 1
    fi
  done
  python=$(command -v python3 || true)
  if [[ -z $python ]]; then
    echo "$bench_name: python3 is needed to print the table" >&2
    exit 1
  fi
}

# A scratch directory in $work; at exit it is removed and a server still running is killed.
make_work_dir() {
  work=$(mktemp -d)
  server_pid=""
  trap 'if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
          kill -KILL "$server_pid"; fi
        rm -rf "$work"' EXIT
}

# client_bench WHAT ARGS...: `moe-client --target $address bench ARGS...`, its output printed.
# On failure says WHAT failed, prints the server's log and returns 1 (call it as
# `line=$(client_bench ...) || exit 1`).
client_bench() {
  local what=$1
  shift
  local out
  if ! out=$("$client" --target "$address" bench "$@"); then
    echo "$bench_name: moe-client bench failed ($what); the server's log:" >&2
    cat "$server_log" >&2
    return 1
  fi
  printf '%s\n' "$out"
}

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts moe-server on the CPU backend with "$@" (a new log file each time: the shell truncates
# a reused one only once the child runs). Metrics get a free port unless "$@" names one.
server_runs=0
start_server() {
  server_runs=$((server_runs + 1))
  server_log=$work/server-$server_runs.log
  local log=$server_log
  local metrics_flags=()
  metrics_port=""
  if [[ " $* " != *" --metrics-port "* ]]; then
    metrics_port=$(free_port)
    metrics_flags=(--metrics-port "$metrics_port")
  fi
  "$server" --address 127.0.0.1:0 --backend cpu "${metrics_flags[@]}" "$@" >"$log" 2>&1 &
  server_pid=$!
  address=""
  for _ in $(seq 1 600); do
    address=$(grep -o ' address=127\.0\.0\.1:[1-9][0-9]*' "$log" | head -n 1 | cut -d= -f2 || true)
    [[ -n $address ]] && return 0
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "$bench_name: moe-server $* did not start; its log:" >&2
  cat "$log" >&2
  exit 1
}

stop_server() {
  kill -TERM "$server_pid"
  local code=0
  wait "$server_pid" || code=$?
  server_pid=""
  if ((code != 0)); then
    echo "$bench_name: moe-server exited with $code after SIGTERM; its log:" >&2
    cat "$server_log" >&2
    exit 1
  fi
}

# The serving benchmarks' synthetic MoEMLP (d 1024, ffn 2816, 8 experts, top-2, 2 blocks,
# ~550 MB), made once into "$1".
make_synthetic_model() {
  local dir=$1
  [[ -f $dir/config.json ]] && return 0
  if [[ ! -x $maker ]]; then
    echo "$bench_name: $maker not found: build the moe-make-synthetic target" >&2
    exit 1
  fi
  echo "$bench_name: making the synthetic model in $dir" >&2
  "$maker" --out "$dir" --force --input-dim 1024 --hidden 1024 --ffn 2816 --experts 8 \
    --top-k 2 --blocks 2 --output-dim 1024 --seed 1 >&2
}
