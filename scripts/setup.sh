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
#   xvfb, xauth: tests/test_gui.py (a virtual screen for the Qt and Tk windows)
#   libxcb-*, libxkbcommon-x11-0, libx11-xcb1, libegl1, libgl1, libfontconfig1, libdbus-1-3,
#   libglib2.0-0: what PySide6's xcb platform plugin loads (tests/test_gui.py); without
#   libxcb-icccm4 and libxcb-keysyms1 Qt says, misleadingly, that xcb-cursor0 is missing
#   libtk8.6: tkinter's Tk (tests/test_gui.py)
SYSTEM_PACKAGES=(chromium iproute2 openssh-server openssh-client
                 xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
                 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0
                 libx11-xcb1 libegl1 libgl1 libfontconfig1 libdbus-1-3 libglib2.0-0 libtk8.6)
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
