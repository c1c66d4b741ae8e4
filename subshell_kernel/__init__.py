"""subshell_kernel: a Jupyter kernel for Python on AnyIO, with kernel subshells.

Layering, bottom up (docs/architecture.md draws it; tests/test_structure.py
holds the code to it: each layer imports only from itself and below):

- ``core``: sans IO: the wire format, the request lifecycle, kernel_info.
- ``transport``: the zmq sockets and the threads that own or read them.
- ``runtime``: subshells (a thread and an AnyIO loop each), their registry,
  which request the running code works for, and its output.
- ``adapter``: IPython and the libraries around it, made safe for
  concurrent subshells.
- ``kernel`` builds the parts; ``hooks`` makes every process-wide change;
  ``app`` and ``kernelspec`` are the command line.
"""

__version__ = "0.1.0"
