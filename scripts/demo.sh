#!/usr/bin/env bash
# Set up, register the kernelspec, and run the demo notebooks headless with this kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/run_notebooks.py "$@"
