#!/usr/bin/env bash
# Create .venv (if missing) and install the kernel with its test extras into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m subshell_kernel install --sys-prefix >/dev/null
# An editable install leaves our own modules uncompiled, and PYTHONDONTWRITEBYTECODE
# (set on some machines) keeps them so: each kernel start then spent ~10 ms compiling.
.venv/bin/python -m compileall -q subshell_kernel
