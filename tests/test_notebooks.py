"""The demo notebooks run cleanly with this kernel and show what they claim.

Each notebook is executed with nbclient on the ``subshell`` kernelspec (written
to a temporary JUPYTER_PATH by conftest). The widget notebook is run cell by
cell, with this test acting as the frontend: while the long cell runs, it sends
widget ``comm_msg``s on a subshell, as JupyterLab >= 4.4 does, to move the
slider and press Stop.
"""

from __future__ import annotations

import ast
import asyncio
import re
import sys
import time
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from packaging.requirements import Requirement

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _client(nb) -> NotebookClient:
    return NotebookClient(
        nb, kernel_name="subshell", timeout=60, startup_timeout=60,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )


def _run(name: str):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    _client(nb).execute()  # raises CellExecutionError on any error
    _assert_no_errors(nb)
    return nb


def _assert_no_errors(nb) -> None:
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{out.ename}: {out.evalue}"
            if out.output_type == "stream":
                assert out.name != "stderr", out.text


def _cell(nb, cell_id: str):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def _stdout(cell) -> str:
    return "".join(
        o.text for o in cell.get("outputs", [])
        if o.output_type == "stream" and o.name == "stdout"
    )


def _result(cell):
    """The cell's execute_result, evaluated from its text/plain repr."""
    out = next(o for o in cell.outputs if o.output_type == "execute_result")
    return ast.literal_eval(out.data["text/plain"])


def test_notebooks_are_clean():
    """Stored without outputs, on the subshell kernelspec."""
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert {
        "01-widgets-during-long-cells.ipynb",
        "02-subshells-from-a-client.ipynb",
        "03-anyio-asyncio-trio.ipynb",
    } <= {p.name for p in paths}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "subshell"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_what_the_notebooks_import_is_installed_by_the_demo_extra():
    """``pip install subshell_kernel[demo]`` is enough: each module a notebook imports
    is in the standard library, the kernel itself, or a distribution that the
    kernel's dependencies or its ``demo`` extra name.  Each notebook says so first."""
    declared = set()
    for line in metadata.requires("subshell_kernel") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": "demo"}):
            declared.add(_normalized(requirement.name))
    providers = metadata.packages_distributions()
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert "pip install subshell_kernel[demo]" in nb.cells[0].source, path.name
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            for line in cell.source.splitlines():
                found = re.match(r"(?:from|import)\s+([A-Za-z_][\w]*)", line)
                if not found:
                    continue
                module = found.group(1)
                if module in sys.stdlib_module_names or module == "subshell_kernel":
                    continue
                dists = {_normalized(d) for d in providers.get(module, [])}
                assert dists & declared, f"{path.name} imports {module}, from {dists}"


# -- 01: widgets during a long cell ---------------------------------------------------------

def test_widget_notebook_headless():
    """Nobody touches the widgets: the job runs to the end on its own."""
    start = time.monotonic()
    nb = _run("01-widgets-during-long-cells.ipynb")
    run = _result(_cell(nb, "result"))
    assert run["stopped_early"] is False
    assert run["position"] == 100
    assert run["speeds_seen"] == [1]
    assert 4 < run["elapsed"] < 8
    assert time.monotonic() - start < 60
    widget_view = "application/vnd.jupyter.widget-view+json"
    assert any(widget_view in o.get("data", {}) for o in _cell(nb, "widgets").outputs)
    assert any(widget_view in o.get("data", {}) for o in _cell(nb, "live-figure").outputs)
    assert _result(_cell(nb, "figure-result")) == {"built": 40, "frames": 0, "last_phase": None}


def test_widget_notebook_with_frontend_on_a_subshell():
    """Move the slider and press Stop from a subshell while the long cell runs."""
    nb = nbformat.read(NOTEBOOKS / "01-widgets-during-long-cells.ipynb", as_version=4)
    asyncio.run(_run_as_frontend(nb))
    _assert_no_errors(nb)

    long_cell = _cell(nb, "long-computation")
    assert "speed is now 4" in _stdout(long_cell)
    run = _result(_cell(nb, "result"))
    assert run["stopped_early"] is True, run
    assert run["speeds_seen"][0] == 1 and 4 in run["speeds_seen"], run
    assert run["position"] < 100, run
    assert run["elapsed"] < 4, run
    assert "was stopped early by the Stop button" in _stdout(_cell(nb, "result"))

    figures = _result(_cell(nb, "figure-result"))
    assert figures["built"] == 40, figures
    assert figures["frames"] >= 3, figures  # the live figure redrew while the others were built
    assert figures["last_phase"] is not None, figures


async def _run_as_frontend(nb) -> None:
    client = _client(nb)
    client.reset_execution_trackers()
    async with client.async_setup_kernel():
        for index, cell in enumerate(nb.cells):
            tags = cell.metadata.get("tags", [])
            if "long-running" in tags:
                await _steer_long_cell(client, cell, index)
            elif "figure-building" in tags:
                await _redraw_during(client, cell, index)
            else:
                await client.async_execute_cell(cell, index)


async def _steer_long_cell(client: NotebookClient, cell, index: int) -> None:
    kc = client.kc
    # The comm ids come from the comm_open messages nbclient read on iopub.
    models = {state.get("_model_name"): cid for cid, state in client.widget_state.items()}
    slider, button = models["IntSliderModel"], models["ButtonModel"]

    # One subshell for widget messages, like JupyterLab's "perCommTarget".
    subshell_id = (await _control(kc, "create_subshell_request"))["subshell_id"]

    def comm_msg(comm_id: str, data: dict) -> None:
        msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        msg["header"]["subshell_id"] = subshell_id
        kc.shell_channel.send(msg)

    cell.outputs = []
    task = asyncio.create_task(client.async_execute_cell(cell, index))
    try:
        await _wait_for_output(cell, task, "running at speed 1")
        await asyncio.sleep(0.3)
        comm_msg(slider, {"method": "update", "state": {"value": 4}, "buffer_paths": []})
        await _wait_for_output(cell, task, "speed is now 4")
        comm_msg(button, {"method": "custom", "content": {"event": "click"}})
        await asyncio.wait_for(asyncio.shield(task), 10)
    finally:
        if not task.done():
            task.cancel()
    reply = await _control(kc, "delete_subshell_request", {"subshell_id": subshell_id})
    assert reply["status"] == "ok", reply


async def _redraw_during(client: NotebookClient, cell, index: int) -> None:
    """As ipympl's frontend does after each ``draw_idle()``: ask for frames, on a subshell,
    while the cell builds other figures (the next request once the last one is handled)."""
    kc = client.kc
    canvas = next(cid for cid, state in client.widget_state.items()
                  if state.get("_model_name") == "MPLCanvasModel")
    subshell_id = (await _control(kc, "create_subshell_request"))["subshell_id"]
    task = asyncio.create_task(client.async_execute_cell(cell, index))
    try:
        while not task.done():
            msg = kc.session.msg("comm_msg", {"comm_id": canvas, "data": {
                "method": "custom", "content": {"type": "draw"}}})
            msg["header"]["subshell_id"] = subshell_id
            kc.shell_channel.send(msg)
            await asyncio.wait([task], timeout=0.1)
        task.result()
    finally:
        if not task.done():
            task.cancel()
    reply = await _control(kc, "delete_subshell_request", {"subshell_id": subshell_id})
    assert reply["status"] == "ok", reply


async def _wait_for_output(cell, task: asyncio.Task, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in _stdout(cell):
        if task.done():
            task.result()  # raise its error, if any
            pytest.fail(f"the cell ended before printing {text!r}: {_stdout(cell)!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} within {timeout} s: {_stdout(cell)!r}")
        await asyncio.sleep(0.02)


async def _control(kc, msg_type: str, content: dict | None = None) -> dict:
    msg = kc.session.msg(msg_type, content or {})
    kc.control_channel.send(msg)
    while True:
        reply = await kc.control_channel.get_msg(timeout=10)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"]


# -- 02: subshells from a client -------------------------------------------------------------

def test_subshells_from_a_client_notebook():
    nb = _run("02-subshells-from-a-client.ipynb")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot"

    timings = _result(_cell(nb, "timings"))
    for n, wall in zip(timings["n"], timings["parallel"]):
        assert wall < timings["sleep"] * 1.8, (n, wall)  # concurrent: about one sleep
    for n, wall in zip(timings["n"], timings["serial"]):
        assert wall > timings["sleep"] * n * 0.9, (n, wall)  # queued: n sleeps

    concurrent = _stdout(_cell(nb, "concurrent"))
    wall = float(re.search(r"at once: ([\d.]+) s", concurrent).group(1))
    assert 0.9 < wall < 1.8, concurrent
    deleted = _stdout(_cell(nb, "delete"))
    m = re.search(r"30 s loop ended after ([\d.]+) s: error KeyboardInterrupt", deleted)
    assert m and float(m.group(1)) < 2, deleted  # deleting a busy subshell interrupts it
    assert "remaining subshells: []" in deleted
    assert "kernel alive: False" in _stdout(_cell(nb, "shutdown"))


# -- 03: top-level await on asyncio and trio --------------------------------------------------

def test_anyio_asyncio_trio_notebook():
    nb = _run("03-anyio-asyncio-trio.ipynb")
    assert "on asyncio" in _stdout(_cell(nb, "anyio-sleep"))

    group = _stdout(_cell(nb, "task-group"))
    m = re.search(r"([\d.]+) s of sleeping took ([\d.]+) s", group)
    total, wall = float(m.group(1)), float(m.group(2))
    assert 0.5 <= wall < 0.8 * total, group  # the longest sleep, not the sum: they overlapped

    trio_out = _stdout(_cell(nb, "trio-kernel"))
    assert "(trio)" in trio_out and "on trio" in trio_out, trio_out

    interrupt = _stdout(_cell(nb, "interrupt"))
    m = re.search(r"await trio.sleep\(30\): KeyboardInterrupt after (\d+) ms", interrupt)
    assert m, interrupt
    assert int(m.group(1)) < 1000, interrupt
    assert "still alive" in _stdout(_cell(nb, "after-interrupt"))
