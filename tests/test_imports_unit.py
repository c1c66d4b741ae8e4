"""``adapter.imports.ImportWatch`` and what runs through it, in a fresh interpreter each.

A fresh ``python -c`` per test: what is imported, and when, is the point, and
the pytest process has imported most things already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str, cwd) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_around_runs_about_each_execution_and_the_module_keeps_its_loader(tmp_path):
    (tmp_path / "watched.py").write_text("import events\nevents.append('module runs')\n")
    (tmp_path / "events.py").write_text("")
    out = run_python("""
        import contextlib, inspect, sys
        sys.path.insert(0, '.')
        import events
        events.__dict__.setdefault('append', [].append)
        log = []
        events.append = log.append
        from subshell_kernel.adapter.imports import ImportWatch

        @contextlib.contextmanager
        def around(module):
            log.append('before ' + module.__name__)
            yield
            log.append('after')

        sys.meta_path.insert(0, ImportWatch({'watched': around}))
        import watched, importlib
        importlib.reload(watched)
        print(log)
        print(type(watched.__loader__).__name__, type(watched.__spec__.loader).__name__)
        print(inspect.getsource(watched).splitlines()[0])
    """, tmp_path)
    first, loaders, source = out.splitlines()
    # the import, then the reload, each run the module: each inside ``around``
    assert first == ("['before watched', 'module runs', 'after', "
                     "'before watched', 'module runs', 'after']")
    assert loaders == "SourceFileLoader SourceFileLoader"
    assert source == "import events"


def test_tqdm_sees_a_kernel_only_while_autonotebook_runs(tmp_path):
    probe = """
        import sys, warnings
        from IPython.core.interactiveshell import InteractiveShell
        from subshell_kernel.adapter.imports import ImportWatch
        from subshell_kernel.adapter.recognition import tqdm_sees_a_kernel

        InteractiveShell.instance()  # get_ipython() is a shell, as in a kernel
        if WATCH:
            sys.meta_path.insert(0, ImportWatch({'tqdm.autonotebook': tqdm_sees_a_kernel}))
        warnings.simplefilter('ignore')
        import tqdm.autonotebook, tqdm.notebook
        print(tqdm.autonotebook.tqdm is tqdm.notebook.tqdm, 'ipykernel.zmqshell' in sys.modules,
              'ipykernel' in sys.modules, 'tornado' in sys.modules)
    """
    # tqdm picks its notebook bar; afterwards no stand-in is left, and neither
    # ipykernel nor Tornado was imported
    assert run_python("WATCH = True\n" + textwrap.dedent(probe), tmp_path) == (
        "True False False False\n")
    assert run_python("WATCH = False\n" + textwrap.dedent(probe), tmp_path) == (
        "False False False False\n")
