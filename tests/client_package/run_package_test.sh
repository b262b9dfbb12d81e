#!/usr/bin/env bash
# The client's CMake package, as another project uses it: installs component "client" of the
# build BUILD into a temporary prefix, checks what was installed, configures and builds the
# consumer project beside this script against it (find_package(moe-client CONFIG)), runs it
# without a server, then against a moe-server (SERVER) started on a free loopback port.
#   run_package_test.sh BUILD SERVER
set -euo pipefail
build=$(cd "$1" && pwd)
server=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/moe-client-package.XXXXXX")
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "client package test: $*" >&2
  exit 1
}

prefix=$work/prefix
cmake --install "$build" --component client --prefix "$prefix" >"$work/install.log" ||
  { cat "$work/install.log"; fail "cmake --install --component client failed"; }

# The client, its proto library and headers, the package files; nothing else.
for f in include/moe/client/client.h include/moe/v1/moe_service.pb.h; do
  [[ -f $prefix/$f ]] || fail "$f was not installed"
done
config=$(find "$prefix" -name moe-clientConfig.cmake)
[[ -n $config ]] || fail "moe-clientConfig.cmake was not installed"
cmake_dir=$(dirname "$config")
for f in moe-clientConfigVersion.cmake moe-clientTargets.cmake; do
  [[ -f $cmake_dir/$f ]] || fail "$f was not installed beside moe-clientConfig.cmake"
done
[[ -n $(find "$prefix" -name 'libmoe_client.*') ]] || fail "libmoe_client was not installed"
[[ -n $(find "$prefix" -name 'libmoe_proto.*') ]] || fail "libmoe_proto was not installed"
others=$(find "$prefix" -type f \( -name 'moe-server' -o -name '*_test' -o -name 'libmoe_kernels*' \
  -o -name 'libmoe_engine*' -o -path '*/server/*' \))
[[ -z $others ]] || fail "component client installed more than the client: $others"
# The package must not point into the build tree.
if grep -rl -- "$build" "$cmake_dir" >/dev/null; then
  fail "the installed package refers to the build tree $build: $(grep -rl -- "$build" "$cmake_dir")"
fi

cmake -S "$here" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; fail "configuring the consumer against the package failed"; }
cmake --build "$work/build" -j2 >"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; fail "building the consumer failed"; }
consumer=$work/build/moe-client-consumer

"$consumer" || fail "the consumer failed without a server"

[[ -x $server ]] || fail "no server binary at $server (build the moe-server target)"
port=$(/usr/bin/python3 -c \
  'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$server" --address "127.0.0.1:$port" --metrics-port 0 --backend cpu >"$work/server.log" 2>&1 &
server_pid=$!
if ! "$consumer" "127.0.0.1:$port"; then
  tail -n 30 "$work/server.log" >&2
  fail "the consumer failed against the server"
fi
echo "client package test: passed"
