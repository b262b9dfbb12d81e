#!/bin/sh
# Runs a Python integration test with the interpreter it needs: run_python_test.sh PYTHON SCRIPT
# [ARGS...]. A missing interpreter fails (never skips) and says how to get it.
python=$1
shift
if [ ! -x "$python" ]; then
  echo "$python not found: run scripts/setup_python.sh (it installs what the Python integration tests need)" >&2
  exit 1
fi
exec "$python" "$@"
