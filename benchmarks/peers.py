"""Peer kernels for the benchmark, each from PyPI in a venv of its own.

A peer is installed on first use into ``benchmarks/.peers/<name>/`` (a venv of
the interpreter running the benchmark, so every kernel runs on the same
Python), at the exact version pinned here, and reused by later runs. The
kernelspec the package installs into its venv is what the benchmark launches,
with its ``python`` replaced by the venv's: the argv, environment and
interrupt mode a user of that package gets.

Versions are pinned so that runs compare like with like; a new version is a
deliberate edit here (the venv is rebuilt when the pin changes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent / ".peers"


@dataclass(frozen=True)
class Peer:
    package: str  # the PyPI name
    version: str  # pinned
    kernel_dir: str  # the kernelspec directory the package installs under share/jupyter/kernels
    label: str  # column title

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


PEERS: dict[str, Peer] = {
    "xeus-python": Peer("xeus-python", "0.19.0", "xpython", "xeus"),
    "ipymini": Peer("ipymini", "0.1.25", "py", "ipymini"),
    "async-kernel": Peer("async-kernel", "0.23.1", "async", "async"),
}


def venv_dir(name: str) -> Path:
    return PEERS_DIR / name


def _python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def ensure(name: str) -> Path:
    """The venv of peer ``name``, created and installed if missing or of another pin."""
    peer = PEERS[name]
    env_dir = venv_dir(name)
    marker = env_dir / "benchmark-pin.txt"
    if marker.exists() and marker.read_text().strip() == peer.requirement:
        return env_dir
    if env_dir.exists():
        shutil.rmtree(env_dir)
    print(f"installing {peer.requirement} into {env_dir} (once)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    done = subprocess.run([str(_python(env_dir)), "-m", "pip", "install", "-q",
                           peer.requirement], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip install {peer.requirement} failed:\n{done.stderr[-2000:]}")
    marker.write_text(peer.requirement + "\n")
    return env_dir


def kernelspec(name: str) -> dict:
    """The kernelspec of peer ``name`` as its package installed it, launched by its venv's
    Python (the spec names a bare ``python``, which would be whatever is on PATH)."""
    env_dir = ensure(name)
    spec_file = env_dir / "share" / "jupyter" / "kernels" / PEERS[name].kernel_dir / "kernel.json"
    spec = json.loads(spec_file.read_text())
    argv = list(spec["argv"])
    if Path(argv[0]).name.startswith("python"):
        argv[0] = str(_python(env_dir))
    spec["argv"] = argv
    spec["display_name"] = f"{name} {PEERS[name].version} (benchmark)"
    spec.setdefault("interrupt_mode", "signal")
    return spec


def installed_versions(name: str) -> dict[str, str]:
    """The versions of the peer and of the packages its speed depends on, as installed."""
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        f"for d in ({PEERS[name].package!r}, 'ipython', 'pyzmq', 'anyio', 'xeus-python-shell'):\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([str(_python(venv_dir(name))), "-c", code], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


if __name__ == "__main__":  # python benchmarks/peers.py: install (or check) every peer
    for peer_name in PEERS:
        ensure(peer_name)
        print(peer_name, installed_versions(peer_name), file=sys.stderr)
