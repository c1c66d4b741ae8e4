"""The one compiled part: the control socket's reader in C (transport/native_control.py).

Optional: where it does not compile (no C compiler, no Python headers), the
kernel installs without it and reads control in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "subshell_kernel.transport._native_control",
            ["subshell_kernel/transport/_native_control.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
