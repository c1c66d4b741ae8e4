#!/usr/bin/env bash
# Create .venv (if missing), install the kernel with its test extras into it, register the
# kernelspec, and install the Debian packages the tests drive (when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# Debian packages, each for the tests named beside it:
#   chromium: tests/test_jupyterlab.py (JupyterLab in a real browser)
#   iproute2, openssh-server, openssh-client: tests/test_gateways.py (a second "host": a
#     network namespace with its own address and an sshd, for the gateways' SSH launchers)
SYSTEM_PACKAGES=(chromium iproute2 openssh-server openssh-client)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "not installed (run as root to install): ${missing[*]}; the tests that need them skip" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m subshell_kernel install --sys-prefix >/dev/null
# An editable install leaves our own modules uncompiled, and PYTHONDONTWRITEBYTECODE
# (set on some machines) keeps them so: each kernel start then spent ~10 ms compiling.
.venv/bin/python -m compileall -q subshell_kernel
