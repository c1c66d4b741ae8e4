"""The one compiled part: the control socket's reader in C, and whole zmq messages sent
and received in one call (transport/native_control.py).

Optional: where it does not compile (no C compiler, no Python headers), the
kernel installs without it and reads control in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "subshell_kernel.transport._native_control",
            [f"subshell_kernel/transport/_native_{name}.c"
             for name in ("control", "hmac", "header", "lock", "history", "frames")],
            depends=["subshell_kernel/transport/_native.h"],
            # only PyInit__native_control is exported: the files share plain C names
            extra_compile_args=["-O2", "-fvisibility=hidden"],
            optional=True,
        )
    ]
)
