"""subshell_kernel: a Jupyter kernel for Python on AnyIO, with kernel subshells.

Layering, bottom up:

- ``protocol``: the wire format, sans IO (parse, verify, build, sign).
- ``iopub``, ``router``, ``control``: the threads that own the sockets.
- ``subshell``, ``handlers``: one AnyIO loop per subshell and what it does
  with each request; ``shell``, ``streams``, ``stdin``, ``comms``: IPython and
  the libraries around it, made safe for concurrent subshells.
- ``kernel``: wires it together; ``app`` and ``kernelspec``: the command line.
"""

__version__ = "0.1.0"
