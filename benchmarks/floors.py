"""What the machine costs before any kernel: the floors of the kernel rows.

A Python kernel's `pass` round trip cannot beat a zmq round trip plus what
IPython's own ``run_cell`` does, and its startup cannot beat starting the
interpreter and building an ``InteractiveShell``. These are measured in the
same run as the kernels (the machine is shared and its speed drifts), with
the interpreter running the benchmark:

- ``zmq_rtt``: a DEALER (this process) sends a message shaped like an
  ``execute_request`` (delimiter, signature, header, parent, metadata,
  content) to a ROUTER in another process on tcp loopback, which sends it
  back; one thread each side.
- ``run_cell``: ``InteractiveShell.run_cell('pass', store_history=False)``
  in a bare process, one call timed at a time; then the same calls, each
  after a sleep (``run.FLOOR_IDLE``, 1 ms), as a kernel's main thread sleeps
  between two requests.  On a virtual machine the second costs more (the
  figures are in benchmarks/README.md, *Floors*): code that wakes after a
  sleep finds its caches cold, and every request a kernel handles pays
  that, ours and its peers alike.
- ``python_startup`` and ``ipython_startup``: launch to exit of
  ``python -c pass``, and of a process that imports zmq and IPython and
  builds an ``InteractiveShell``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import zmq

ECHO_SERVER = """\
import sys, zmq
sock = zmq.Context().socket(zmq.ROUTER)
port = sock.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
while True:
    frames = sock.recv_multipart()
    if frames[-1] == b"stop":
        break
    sock.send_multipart(frames)
"""

RUN_CELL = """\
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
warmup, n, idles = int(sys.argv[1]), int(sys.argv[2]), [float(a) for a in sys.argv[3:]]
for _ in range(warmup):
    shell.run_cell("pass", store_history=False)
series = []
for idle in idles:
    samples = []
    for _ in range(n):
        if idle:
            time.sleep(idle)
        start = time.perf_counter()
        shell.run_cell("pass", store_history=False)
        samples.append((time.perf_counter() - start) * 1000)
    series.append(samples)
print(json.dumps(series))
"""

IPYTHON_STARTUP = (
    "import zmq\n"
    "from IPython.core.interactiveshell import InteractiveShell\n"
    "InteractiveShell.instance()\n"
)

#: frames of about the size of an execute_request for `pass`
MESSAGE = [
    b"<IDS|MSG>",
    b"0" * 64,
    json.dumps({"msg_id": "a" * 32, "msg_type": "execute_request", "username": "bench",
                "session": "b" * 32, "date": "2026-01-01T00:00:00.000000Z",
                "version": "5.5"}).encode(),
    b"{}",
    b"{}",
    json.dumps({"code": "pass", "silent": False, "store_history": False,
                "user_expressions": {}, "allow_stdin": False,
                "stop_on_error": False}).encode(),
]


def zmq_rtt(warmup: int, n: int) -> list[float]:
    """Milliseconds per echo round trip, ``n`` samples after ``warmup``."""
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE,
                              text=True)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(f"tcp://127.0.0.1:{int(server.stdout.readline())}")
        samples = []
        for i in range(warmup + n):
            start = time.perf_counter()
            sock.send_multipart(MESSAGE)
            if not sock.poll(5000):
                raise TimeoutError("the zmq echo server did not answer")
            sock.recv_multipart()
            if i >= warmup:
                samples.append((time.perf_counter() - start) * 1000)
        sock.send_multipart([b"stop"])
        server.wait(5)
        return samples
    finally:
        sock.close()
        if server.poll() is None:
            server.kill()
            server.wait()


def run_cell(warmup: int, n: int, idles: tuple[float, ...] = (0.0,)) -> list[list[float]]:
    """Milliseconds per bare ``run_cell('pass')``, in one process: ``n`` calls for each
    of ``idles``, each call after that many seconds asleep."""
    result = subprocess.run(
        [sys.executable, "-c", RUN_CELL, str(warmup), str(n), *map(str, idles)],
        capture_output=True, text=True, check=True, timeout=120)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _launch_to_exit(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    return time.perf_counter() - start


def python_startup() -> float:
    """Seconds from launch to exit of ``python -c pass``."""
    return _launch_to_exit("pass")


def ipython_startup() -> float:
    """Seconds from launch to exit of a process that builds an ``InteractiveShell``."""
    return _launch_to_exit(IPYTHON_STARTUP)
