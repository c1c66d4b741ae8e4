#!/usr/bin/env bash
# Set up (if needed), lint, and run the test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
# -rs: say why each skipped test skipped; --durations: the slowest tests, to keep CI short
exec .venv/bin/python -m pytest -q -rs --durations=15 "$@"
