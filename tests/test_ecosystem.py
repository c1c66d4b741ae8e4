"""The kernel among the tools of the Jupyter ecosystem.

IPython's display objects and rich reprs, extensions and magics, the pager;
the ``jupyter execute`` (nbclient) and ``jupyter nbconvert --execute`` command
lines; and jupyter_server's kernel REST and websocket API, including a
subshell created over the websocket's control channel.

Kernel-level tests share the module-scoped ``kernel`` (asyncio backend); the
command-line and server tests start their own kernels through those tools,
with the kernelspecs the conftest writes into a private JUPYTER_PATH.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from .jupyter_servers import Server, WsClient, stdout

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# the smallest valid PNG: 1x1 pixel, greyscale
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


def plain(text: str) -> str:
    return ANSI.sub("", text)


def of_type(msgs: list[dict], msg_type: str) -> list[dict]:
    return [m for m in msgs if m["msg_type"] == msg_type]


def ok(reply: dict) -> dict:
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]


def run_ok(kernel, code: str, timeout: float = 30):
    """Run ``code``; assert the reply is ok; return (reply content, iopub, stdout)."""
    reply, msgs = kernel.run(code, timeout=timeout)
    content = ok(reply)
    return content, msgs, kernel.stdout(reply["parent_header"]["msg_id"])


def result_data(msgs: list[dict]) -> dict:
    (res,) = of_type(msgs, "execute_result")
    return res["content"]["data"]


def jupyter_command(name: str) -> str:
    """The ``jupyter-<name>`` script of this interpreter's environment."""
    here = Path(sys.executable).parent / f"jupyter-{name}"
    if here.exists():
        return str(here)
    found = shutil.which(f"jupyter-{name}")
    if not found:
        pytest.skip(f"jupyter-{name} is not installed")
    return found


# -- IPython display objects and rich reprs --------------------------------------------------
@pytest.mark.parametrize(
    "expr, mime, check",
    [
        ("Markdown('# Title *em*')", "text/markdown", lambda v: v == "# Title *em*"),
        (r"Latex(r'$\alpha^2$')", "text/latex", lambda v: v == r"$\alpha^2$"),
        ("JSON({'a': [1, 2], 'b': None})", "application/json",
         lambda v: v == {"a": [1, 2], "b": None}),
        ("SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"4\" height=\"4\">"
         "<rect width=\"4\" height=\"4\"/></svg>')",
         "image/svg+xml", lambda v: "<svg" in v and "<rect" in v),
    ],
    ids=["markdown", "latex", "json", "svg"],
)
def test_display_objects_as_result_and_display(kernel, expr, mime, check):
    code = f"from IPython.display import *\nobj = {expr}\ndisplay(obj)\nobj"
    _, msgs, _ = run_ok(kernel, code)
    (disp,) = of_type(msgs, "display_data")
    assert check(disp["content"]["data"][mime]), disp["content"]
    assert "text/plain" in disp["content"]["data"]
    data = result_data(msgs)
    assert check(data[mime]), data
    # a display is always published before the cell's result
    assert msgs.index(disp) < msgs.index(of_type(msgs, "execute_result")[0])


def test_image_png_bytes_base64(kernel, tmp_path):
    png = tmp_path / "pixel.png"
    png.write_bytes(PNG_1X1)
    code = (
        "from IPython.display import Image, display\n"
        f"display(Image(filename={str(png)!r}))\n"
        f"Image(data=open({str(png)!r}, 'rb').read(), width=7)"
    )
    _, msgs, _ = run_ok(kernel, code)
    (disp,) = of_type(msgs, "display_data")
    assert base64.b64decode(disp["content"]["data"]["image/png"]) == PNG_1X1
    res = of_type(msgs, "execute_result")[0]["content"]
    assert base64.b64decode(res["data"]["image/png"]) == PNG_1X1
    assert res["metadata"]["image/png"]["width"] == 7


def test_custom_repr_html_and_mimebundle(kernel):
    code = (
        "class Rich:\n"
        "    def _repr_html_(self):\n"
        "        return '<i>rich html</i>'\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        return {'application/x-eco+json': {'k': 1}, 'text/plain': 'Rich!'}\n"
        "class HtmlOnly:\n"
        "    def _repr_html_(self):\n"
        "        return '<u>only html</u>'\n"
        "display(HtmlOnly())\n"
        "Rich()"
    )
    _, msgs, _ = run_ok(kernel, code)
    (disp,) = of_type(msgs, "display_data")
    assert disp["content"]["data"]["text/html"] == "<u>only html</u>"
    data = result_data(msgs)
    assert data["application/x-eco+json"] == {"k": 1}
    assert data["text/plain"] == "Rich!"
    # IPython fills the types the mimebundle lacks from the other formatters
    assert data["text/html"] == "<i>rich html</i>"


def test_display_handle_update(kernel):
    code = (
        "from IPython.display import display, HTML\n"
        "h = display(HTML('<p>v1</p>'), display_id=True)\n"
        "h.update(HTML('<p>v2</p>'))\n"
        "h.display_id"
    )
    _, msgs, _ = run_ok(kernel, code)
    (disp,) = of_type(msgs, "display_data")
    (upd,) = of_type(msgs, "update_display_data")
    did = disp["content"]["transient"]["display_id"]
    assert did and upd["content"]["transient"]["display_id"] == did
    assert result_data(msgs)["text/plain"] == repr(did)
    assert disp["content"]["data"]["text/html"] == "<p>v1</p>"
    assert upd["content"]["data"]["text/html"] == "<p>v2</p>"
    assert msgs.index(disp) < msgs.index(upd)

    # a later cell can update a display made by an earlier one
    _, msgs, _ = run_ok(kernel, "h.update(HTML('<p>v3</p>'))")
    assert not of_type(msgs, "display_data")
    (upd,) = of_type(msgs, "update_display_data")
    assert upd["content"]["transient"]["display_id"] == did
    assert upd["content"]["data"]["text/html"] == "<p>v3</p>"


def test_clear_output_wait_between_displays(kernel):
    code = (
        "from IPython.display import display, clear_output, Markdown\n"
        "for i in range(3):\n"
        "    clear_output(wait=True)\n"
        "    display(Markdown(f'frame {i}'))\n"
    )
    _, msgs, _ = run_ok(kernel, code)
    seq = [
        (m["msg_type"], m["content"].get("wait"), m["content"].get("data", {}).get("text/markdown"))
        for m in msgs if m["msg_type"] in ("clear_output", "display_data")
    ]
    assert seq == [
        ("clear_output", True, None), ("display_data", None, "frame 0"),
        ("clear_output", True, None), ("display_data", None, "frame 1"),
        ("clear_output", True, None), ("display_data", None, "frame 2"),
    ]


# -- extensions and magics -------------------------------------------------------------------
EXTENSION = '''
"""A tiny IPython extension for the ecosystem tests."""

loaded = []


def eco_magic(line):
    print("eco-magic saw:", line)
    return line.upper()


def load_ipython_extension(ipython):
    loaded.append(True)
    ipython.register_magic_function(eco_magic, "line", "eco")


def unload_ipython_extension(ipython):
    loaded.append(False)
'''


def test_load_ext_registers_magic(kernel, tmp_path):
    ext_dir = tmp_path / "ext"
    ext_dir.mkdir()
    (ext_dir / "eco_ext.py").write_text(EXTENSION)
    run_ok(kernel, f"import sys\nsys.path.insert(0, {str(ext_dir)!r})")
    try:
        content, msgs, out = run_ok(kernel, "%load_ext eco_ext")
        assert not of_type(msgs, "error")
        content, msgs, out = run_ok(kernel, "%eco hello world")
        assert out == "eco-magic saw: hello world\n"
        assert result_data(msgs)["text/plain"] == "'HELLO WORLD'"
        # loading again is a no-op IPython reports; unloading calls the hook
        run_ok(kernel, "%reload_ext eco_ext")
        _, msgs, _ = run_ok(kernel, "import eco_ext\neco_ext.loaded")
        assert result_data(msgs)["text/plain"] == "[True]"  # reloaded module: fresh list
        run_ok(kernel, "%unload_ext eco_ext")
        _, msgs, _ = run_ok(kernel, "eco_ext.loaded")
        assert result_data(msgs)["text/plain"] == "[True, False]"
    finally:
        run_ok(kernel, f"sys.path.remove({str(ext_dir)!r})")


def test_timeit_magic(kernel):
    _, msgs, out = run_ok(kernel, "%timeit -n1 -r1 pass")
    assert re.search(r"per loop \(mean ± std\. dev\. of 1 run, 1 loop each\)", out), out
    _, msgs, out = run_ok(kernel, "r = %timeit -o -q -n2 -r2 sum(range(10))\n(r.loops, r.repeat)")
    assert out == ""
    assert result_data(msgs)["text/plain"] == "(2, 2)"


def test_pip_magic_prints(kernel):
    _, msgs, out = run_ok(kernel, "%pip --version", timeout=60)
    assert re.search(r"^pip \d+", out, re.M), (out, msgs)
    # pip runs in the kernel's own interpreter
    _, msgs, _ = run_ok(kernel, "import sys; sys.prefix")
    prefix = result_data(msgs)["text/plain"].strip("'")
    assert prefix in out


def test_env_magic(kernel):
    _, msgs, out = run_ok(kernel, "%env ECO_TEST_VAR=eco value")
    assert "env: ECO_TEST_VAR=eco value" in out
    _, msgs, _ = run_ok(kernel, "%env ECO_TEST_VAR")
    assert result_data(msgs)["text/plain"] == "'eco value'"
    code = "import os\nprint(os.environ['ECO_TEST_VAR'])\n!echo $ECO_TEST_VAR"
    _, msgs, out = run_ok(kernel, code)
    # ``!cmd`` output comes through a pty (pexpect): "\r\n", as with ipykernel
    assert out.replace("\r\n", "\n") == "eco value\neco value\n"
    run_ok(kernel, "del os.environ['ECO_TEST_VAR']")


def test_cd_and_pwd_magics(kernel, tmp_path):
    _, msgs, _ = run_ok(kernel, "import os; _eco_old_cwd = os.getcwd(); _eco_old_cwd")
    old = result_data(msgs)["text/plain"]
    try:
        _, msgs, out = run_ok(kernel, f"%cd {tmp_path}")
        assert out.strip() == str(tmp_path)
        _, msgs, _ = run_ok(kernel, "%pwd")
        assert result_data(msgs)["text/plain"] == repr(str(tmp_path))
        (tmp_path / "marker.txt").write_text("here")
        _, msgs, out = run_ok(kernel, "!ls\nprint(open('marker.txt').read())")
        assert "marker.txt" in out and "here" in out
        _, msgs, out = run_ok(kernel, "%cd -")
        assert out.strip() == old.strip("'")
    finally:
        run_ok(kernel, "os.chdir(_eco_old_cwd)")


def test_pager_payload_for_help(kernel):
    reply, msgs = kernel.run("len?")
    payload = ok(reply)["payload"]
    (page,) = [p for p in payload if p["source"] == "page"]
    text = plain(page["data"]["text/plain"])
    assert "Return the number of items in a container" in text
    assert page.get("start", 0) == 0
    # the pager goes to the reply, not to iopub
    assert not of_type(msgs, "stream") and not of_type(msgs, "display_data")

    run_ok(kernel, "def eco_func(x):\n    'eco docstring'\n    return x * 42\n")
    reply, _ = kernel.run("eco_func??")
    (page,) = [p for p in ok(reply)["payload"] if p["source"] == "page"]
    text = plain(page["data"]["text/plain"])
    assert "return x * 42" in text and "eco docstring" in text

    reply, _ = kernel.run("?eco_func")
    (page,) = [p for p in ok(reply)["payload"] if p["source"] == "page"]
    text = plain(page["data"]["text/plain"])
    assert "eco docstring" in text and "return x * 42" not in text


# -- nbclient and nbconvert command lines ----------------------------------------------------
def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import sys\nprint('hello from', sys.implementation.name)"),
        nbformat.v4.new_code_cell("from IPython.display import Markdown\nMarkdown('**md**')"),
        nbformat.v4.new_code_cell("import os\nos.environ.get('JPY_PARENT_PID') is None, 6 * 7"),
        nbformat.v4.new_code_cell(
            "import subshell_kernel, sys\nsys.modules.get('tornado') is None and "
            "type(get_ipython()).__module__.startswith('subshell_kernel')"
        ),
    ]
    # the notebook names ipykernel; --kernel_name must win
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def _check_executed(nb) -> None:
    c0, c1, c2, c3 = nb.cells
    assert [c.execution_count for c in nb.cells] == [1, 2, 3, 4]
    assert c0.outputs[0]["output_type"] == "stream"
    assert c0.outputs[0]["text"] == "hello from cpython\n"
    assert c1.outputs[0]["data"]["text/markdown"] == "**md**"
    assert c2.outputs[0]["data"]["text/plain"].endswith("42)")
    # the cells ran on subshell_kernel, not on the kernelspec in the notebook
    assert c3.outputs[0]["data"]["text/plain"] == "True", c3.outputs


def test_jupyter_execute_cli(tmp_path):
    nb_path = _notebook(tmp_path / "eco.ipynb")
    proc = subprocess.run(
        [jupyter_command("execute"), "--kernel_name=subshell", "--inplace", "--timeout=60",
         str(nb_path)],
        capture_output=True, text=True, timeout=90, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    _check_executed(nbformat.read(nb_path, as_version=4))


def test_jupyter_execute_cli_reports_errors(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 / 0"), nbformat.v4.new_code_cell("print('after')")]
    path = tmp_path / "err.ipynb"
    nbformat.write(nb, path)
    cmd = [jupyter_command("execute"), "--kernel_name=subshell", "--inplace", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert proc.returncode != 0
    assert "ZeroDivisionError" in proc.stderr + proc.stdout

    proc = subprocess.run(cmd + ["--allow-errors"], capture_output=True, text=True, timeout=90,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = nbformat.read(path, as_version=4)
    assert out.cells[0].outputs[0]["ename"] == "ZeroDivisionError"
    assert out.cells[1].outputs[0]["text"] == "after\n"


def test_nbconvert_execute(tmp_path):
    pytest.importorskip("nbconvert")
    nb_path = _notebook(tmp_path / "conv.ipynb")
    proc = subprocess.run(
        [jupyter_command("nbconvert"), "--to", "notebook", "--execute",
         "--ExecutePreprocessor.kernel_name=subshell", "--ExecutePreprocessor.timeout=60",
         "--output", "conv.out", str(nb_path)],
        capture_output=True, text=True, timeout=90, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    _check_executed(nbformat.read(tmp_path / "conv.out.ipynb", as_version=4))


# -- jupyter_server: kernel REST and websocket API -------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("jupyter_server")
    srv = Server(tmp_path_factory.mktemp("jupyter-server"))
    yield srv
    srv.close()


def test_server_lists_kernelspec(server):
    status, specs = server.request("GET", "/api/kernelspecs")
    assert status == 200
    assert "subshell" in specs["kernelspecs"], sorted(specs["kernelspecs"])
    spec = specs["kernelspecs"]["subshell"]["spec"]
    assert spec["language"] == "python"
    assert spec["argv"][1:3] == ["-m", "subshell_kernel"]
    assert spec["interrupt_mode"] == "signal"


def test_server_kernel_rest_and_websocket(server):
    status, model = server.request("POST", "/api/kernels", {"name": "subshell"})
    assert status == 201, model
    kid = model["id"]
    assert model["name"] == "subshell"
    ws = None
    try:
        status, listed = server.request("GET", "/api/kernels")
        assert kid in [k["id"] for k in listed]
        ws = WsClient(server, kid)

        # kernel_info over the websocket names protocol 5.5 and the subshell feature
        msg_id = ws.send("shell", "kernel_info_request", {})
        info = ws.reply(msg_id)["content"]
        assert info["status"] == "ok"
        assert info["protocol_version"] == "5.5"
        assert "kernel subshells" in info.get("supported_features", []), info

        reply, msgs = ws.execute("print('hello over the websocket')\n6 * 7")
        assert reply["msg_type"] == "execute_reply"
        assert reply["content"]["status"] == "ok", reply["content"]
        assert stdout(msgs) == "hello over the websocket\n"
        (res,) = [m for m in msgs if m["msg_type"] == "execute_result"]
        assert res["content"]["data"]["text/plain"] == "42"
        states = [m["content"]["execution_state"] for m in msgs if m["msg_type"] == "status"]
        assert states[0] == "busy" and states[-1] == "idle"

        # a subshell, created on the control channel of the same websocket
        msg_id = ws.send("control", "create_subshell_request", {})
        created = ws.reply(msg_id, channel="control")
        assert created["msg_type"] == "create_subshell_reply"
        assert created["content"]["status"] == "ok", created["content"]
        sid = created["content"]["subshell_id"]

        reply, msgs = ws.execute(
            "import threading\nprint('in subshell', threading.current_thread().name)", sid
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        assert reply["parent_header"]["subshell_id"] == sid
        assert all(m["parent_header"]["subshell_id"] == sid for m in msgs)
        assert stdout(msgs).startswith("in subshell subshell-"), stdout(msgs)
        # JEP 91: the subshell counts its own executions
        assert reply["content"]["execution_count"] == 1

        msg_id = ws.send("control", "list_subshell_request", {})
        assert ws.reply(msg_id, channel="control")["content"]["subshell_id"] == [sid]
        msg_id = ws.send("control", "delete_subshell_request", {"subshell_id": sid})
        assert ws.reply(msg_id, channel="control")["content"]["status"] == "ok"

        # the parent subshell still answers, with its own count
        reply, msgs = ws.execute("'parent again'")
        assert reply["content"]["status"] == "ok"
        assert reply["content"]["execution_count"] == 2
    finally:
        if ws is not None:
            ws.close()
        status, _ = server.request("DELETE", f"/api/kernels/{kid}")
    assert status == 204
    status, listed = server.request("GET", "/api/kernels")
    assert kid not in [k["id"] for k in listed]


def test_server_interrupt_and_restart(server):
    status, model = server.request("POST", "/api/kernels", {"name": "subshell"})
    kid = model["id"]
    ws = WsClient(server, kid)
    try:
        msg_id = ws.send("shell", "execute_request",
                         {"code": "import time\nprint('sleeping', flush=True)\ntime.sleep(30)",
                          "silent": False, "store_history": True, "user_expressions": {},
                          "allow_stdin": False, "stop_on_error": True})
        ws.until(lambda m: m["msg_type"] == "stream"
                 and m["parent_header"].get("msg_id") == msg_id)
        t0 = time.monotonic()
        status, _ = server.request("POST", f"/api/kernels/{kid}/interrupt")
        assert status == 204
        reply = ws.reply(msg_id)
        assert time.monotonic() - t0 < 10
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"

        status, _ = server.request("POST", f"/api/kernels/{kid}/restart")
        assert status == 200
    finally:
        ws.close()
    ws = WsClient(server, kid)
    try:
        reply, msgs = ws.execute("'after restart'")
        assert reply["content"]["status"] == "ok"
        assert reply["content"]["execution_count"] == 1
    finally:
        ws.close()
        server.request("DELETE", f"/api/kernels/{kid}")
