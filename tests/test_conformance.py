"""Conformance with the messaging spec, via ``jupyter_kernel_test.KernelTests``.

Every reply and iopub message is validated against the v5 message schemas by
``jupyter_kernel_test``; the samples below are the usual ones for IPython.
The kernelspecs ``subshell`` and ``subshell-trio`` come from ``conftest``.
"""

from __future__ import annotations

import jupyter_kernel_test


class TestSubshellKernelConformance(jupyter_kernel_test.KernelTests):
    kernel_name = "subshell"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"

    completion_samples = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "import itertoo", "matches": {"itertools"}},
    ]

    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2", "for i in range(3):"]
    invalid_code_samples = ["import = 7q"]

    code_page_something = "zip?"

    code_generate_error = "raise ValueError('boom')"

    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
        {"code": "'abc'.upper()", "result": "'ABC'"},
        {"code": "from IPython.display import HTML; HTML('<b>x</b>')", "mime": "text/html",
         "result": "<b>x</b>"},
    ]

    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
         "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))",
         "mime": "text/latex"},
    ]

    code_history_pattern = "1?2*"
    # Not "range": jupyter_kernel_test asks for the range of the current session by its
    # number and expects that number echoed, but IPython's HistoryManager (here as in
    # ipykernel, which fails that check the same way) returns current-session rows as
    # session 0.  test_core.test_history_tail_range_search covers range requests.
    supported_history_operations = ("tail", "search")

    code_inspect_sample = "zip"

    code_clear_output = "from IPython.display import clear_output; clear_output()"

    support_iopub_welcome = True  # JEP 65: iopub is an XPUB socket


class TestSubshellKernelConformanceTrio(TestSubshellKernelConformance):
    kernel_name = "subshell-trio"
