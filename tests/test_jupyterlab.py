"""The widget notebook and a subshell console in a real JupyterLab, driven in Chromium.

What a person does, checked from what the page shows:

1. ``jupyter lab`` (JupyterLab >= 4.4 on jupyter_server) serves a temporary root
   holding a copy of ``notebooks/01-widgets-during-long-cells.ipynb``; the
   ``subshell`` kernelspec comes from the temporary JUPYTER_PATH that conftest
   writes (a subprocess inherits it). ``commsOverSubshells`` is set explicitly to
   ``perCommTarget`` in ``overrides.json`` of a temporary app settings dir.
2. Chromium (Debian's ``/usr/bin/chromium``, driven by playwright) opens the
   notebook and runs its cells in order with Shift+Enter; the widgets render in
   the output area.
3. "New Subshell Console for Notebook" is opened from the notebook's context menu.
4. While the long cell runs: code typed in the console prints before the cell
   finishes; the slider is dragged from 1 to 2 and the loop prints that it saw
   it; Stop is clicked and the cell ends early.
5. The final cell's output, read from the page, says the job was stopped early
   and saw speed 2.

Screenshots of each step go to ``test-artifacts/jupyterlab/`` (gitignored), with
the server log and the browser's console messages.
"""

from __future__ import annotations

import ast
import json
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from .jupyterlab_browser import ROOT, TOKEN, Shots, get_json, lab_session

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

from playwright.sync_api import Page, expect  # noqa: E402

NOTEBOOK = "01-widgets-during-long-cells.ipynb"
KERNELS_SETTINGS = "@jupyterlab/apputils-extension:kernels-settings"
SUBSHELL_CONSOLE_COMMAND = "notebook:create-subshell-console"
SUBSHELL_CONSOLE_LABEL = "New Subshell Console for Notebook"

# The notebook's cells, by position.
WIDGETS, RUN_INTRO, LONG, RESULT_INTRO, RESULT = 1, 2, 3, 4, 5
NEW_SPEED = 2  # the slowest change from 1: the most time left to press Stop


def _installed_comms_setting() -> dict:
    """The ``commsOverSubshells`` property of the installed JupyterLab's schema."""
    import jupyterlab

    schema = (Path(jupyterlab.__file__).parent / "schemas" / "@jupyterlab"
              / "apputils-extension" / "kernels-settings.json")
    assert schema.is_file(), f"no {schema}: this JupyterLab has no kernels settings"
    props = json.loads(schema.read_text())["properties"]
    assert "commsOverSubshells" in props, f"{schema} has no commsOverSubshells"
    return props["commsOverSubshells"]


def _installed_subshell_console_entry() -> dict:
    """The notebook context-menu entry for the subshell console, in the installed schema."""
    import jupyterlab

    schema = (Path(jupyterlab.__file__).parent / "schemas" / "@jupyterlab"
              / "notebook-extension" / "tracker.json")
    items = json.loads(schema.read_text())["jupyter.lab.menus"]["context"]
    entry = next((i for i in items if i.get("command") == SUBSHELL_CONSOLE_COMMAND), None)
    assert entry, f"{schema} has no context-menu entry for {SUBSHELL_CONSOLE_COMMAND}"
    return entry


# -- the page ------------------------------------------------------------------------------


class Lab:
    """Locators for the notebook and the console, and what a person does with them."""

    def __init__(self, page: Page):
        self.page = page
        self.notebook = page.locator(".jp-NotebookPanel")
        self.console = page.locator(".jp-ConsolePanel")

    def cell(self, index: int):
        return self.notebook.locator(
            f".jp-Notebook .jp-Cell[data-windowed-list-index='{index}']")

    def output(self, index: int):
        return self.cell(index).locator(".jp-Cell-outputArea")

    def prompt(self, index: int):
        return self.cell(index).locator(".jp-InputArea-prompt")

    @property
    def slider(self):
        return self.output(WIDGETS).locator(".widget-slider")

    def wait_until_done(self, index: int, timeout: float) -> None:
        expect(self.prompt(index)).to_have_text(re.compile(r"\[\d+\]:"), timeout=timeout)

    def shift_enter(self, times: int = 1) -> None:
        for _ in range(times):
            self.page.keyboard.press("Shift+Enter")

    def select(self, index: int) -> None:
        """Select a cell in command mode, as a click in its prompt area does."""
        self.prompt(index).click()
        self.page.keyboard.press("Escape")
        expect(self.cell(index)).to_have_class(re.compile(r"\bjp-mod-active\b"))

    def drag_slider_to(self, value: int) -> None:
        """Drag the IntSlider's handle (min 1, max 10) to ``value`` with the mouse."""
        slider = self.slider
        slider.scroll_into_view_if_needed()
        handle = slider.locator(".noUi-handle").bounding_box()
        base = slider.locator(".noUi-base").bounding_box()
        assert handle and base, "the slider is not laid out"
        y = handle["y"] + handle["height"] / 2
        x = base["x"] + base["width"] * (value - 1) / 9
        self.page.mouse.move(handle["x"] + handle["width"] / 2, y)
        self.page.mouse.down()
        self.page.mouse.move(x, y, steps=4)
        self.page.mouse.up()
        expect(slider.locator(".widget-readout")).to_have_text(str(value), timeout=5_000)


def _open_subshell_console(page: Page, lab: Lab) -> None:
    """Right-click in the notebook > New Subshell Console for Notebook."""
    lab.cell(WIDGETS).locator(".jp-InputArea-editor").click(button="right")
    item = page.locator(".lm-Menu-item", has_text=SUBSHELL_CONSOLE_LABEL)
    # The item shows only if the kernel's kernel_info lists "kernel subshells".
    expect(item, f"no '{SUBSHELL_CONSOLE_LABEL}' in the context menu").to_be_visible(
        timeout=10_000)
    item.click()
    expect(lab.console).to_be_visible(timeout=30_000)
    banner = lab.console.locator(".jp-CodeConsole-banner")
    expect(banner).to_contain_text("subshell_kernel", timeout=30_000)  # kernel_info answered
    expect(lab.console.locator(".jp-CodeConsole-promptCell .cm-content")).to_be_visible()


# JS run in the page at each animation frame: the console's output and, at that same
# instant, the long cell's prompt ("[*]:" while it runs).
_CONSOLE_AND_PROMPT = """([index, marker]) => {
  const out = document.querySelector('.jp-ConsolePanel .jp-CodeConsole-content');
  const text = out ? out.innerText : '';
  if (!text.includes(marker)) return false;
  const cell = document.querySelector(
    `.jp-NotebookPanel .jp-Cell[data-windowed-list-index='${index}'] .jp-InputArea-prompt`);
  return {console: text, prompt: cell ? cell.innerText : null};
}"""


def _run_in_console_while_busy(page: Page, lab: Lab, shots: Shots, attempt: int) -> dict:
    """Run code in the console; return its output and the long cell's prompt right then."""
    marker = f"console {attempt}: 42"
    lab.console.locator(".jp-CodeConsole-promptCell .cm-content").click()
    page.keyboard.type(
        f"import threading; print('console {attempt}:', 6 * 7, 'position', position, "
        "'thread', threading.current_thread().name)")
    page.keyboard.press("Shift+Enter")
    seen = page.wait_for_function(
        _CONSOLE_AND_PROMPT, arg=[LONG, marker], polling="raf", timeout=10_000,
    ).json_value()
    shots("console-output-while-notebook-busy")
    shots("subshell-console", lab.console)
    m = re.search(re.escape(marker) + r" position (\d+) thread (\S+)", seen["console"])
    assert m, seen
    seen.update(position=int(m.group(1)), thread=m.group(2))
    return seen


def _result_from_page(lab: Lab) -> tuple[str, dict]:
    out = lab.output(RESULT)
    expect(out).to_contain_text("speed values the loop saw", timeout=15_000)
    expect(out.locator(".jp-OutputArea-executeResult")).to_be_visible(timeout=15_000)
    text = out.inner_text()
    run = ast.literal_eval(out.locator(".jp-OutputArea-executeResult .jp-OutputArea-output")
                           .inner_text().strip())
    return text, run


def _notebook_only(page: Page, lab: Lab) -> None:
    """View > Appearance > Simple Interface, on a tall page: widgets and outputs at once."""
    page.locator(".lm-MenuBar-item", has_text="View").click()
    page.locator(".lm-Menu-item", has_text="Appearance").click()
    page.locator(".lm-Menu-item", has_text="Simple Interface").click()
    expect(lab.console).to_be_hidden()
    page.set_viewport_size({"width": 1400, "height": 2000})
    lab.cell(WIDGETS).scroll_into_view_if_needed()
    lab.cell(WIDGETS).evaluate("cell => cell.scrollIntoView({block: 'start'})")


def _steer_long_cell(page: Page, lab: Lab, shots: Shots, attempt: int,
                     console: dict) -> tuple[bool, dict]:
    """Move the slider to NEW_SPEED and press Stop while the long cell runs.

    Also runs code in the subshell console meanwhile, unless ``console`` already has
    an answer given while the cell ran. Returns (True, console) when Stop ended the
    cell early, (False, console) when the 5 s job reached its end first (a very slow
    machine): the caller reruns the cell.
    """
    expect(lab.prompt(LONG)).to_have_text("[*]:", timeout=10_000)
    expect(lab.output(LONG)).to_contain_text("running at speed 1", timeout=30_000)
    shots(f"long-cell-running-{attempt}")

    if console.get("prompt") != "[*]:":
        console = _run_in_console_while_busy(page, lab, shots, attempt)

    lab.drag_slider_to(NEW_SPEED)
    seen_new_speed = lab.output(LONG).filter(has_text=f"speed is now {NEW_SPEED}")
    done = lab.prompt(LONG).filter(has_text=re.compile(r"\[\d+\]:"))
    expect(seen_new_speed.or_(done).first).to_be_visible(timeout=10_000)  # (both: the job ended)
    if done.is_visible():
        return False, console
    shots("slider-moved-loop-saw-it")

    if done.is_visible():  # once more, right before the click
        return False, console
    lab.output(WIDGETS).get_by_role("button", name="Stop").click()
    lab.wait_until_done(LONG, timeout=10_000)
    shots("stopped")
    # The progress bar at 100%: the job covered its last steps before the click reached
    # it (a slow machine); that is no early stop, and the caller reruns the cell.
    page.wait_for_timeout(500)  # the last progress update (iopub) after the reply (shell)
    width = lab.output(WIDGETS).locator(".progress-bar").evaluate("e => e.style.width")
    return width != "100%", console


@contextmanager
def _lab_session(tmp_path: Path, prefix: str):
    """JupyterLab with the notebook open in Chromium, ``commsOverSubshells`` set to
    ``perCommTarget`` (explicit, whatever this JupyterLab's default is): yields
    (page, lab, shots); the artifacts are named with ``prefix``."""
    overrides = {KERNELS_SETTINGS: {"commsOverSubshells": "perCommTarget"}}
    with lab_session(tmp_path, [ROOT / "notebooks" / NOTEBOOK], NOTEBOOK, prefix,
                     overrides) as (base, page, shots):
        # The effective setting, as the server hands it to the page.
        settings = get_json(f"{base}/lab/api/settings/{KERNELS_SETTINGS}?token={TOKEN}")
        effective = settings["settings"].get(
            "commsOverSubshells",
            settings["schema"]["properties"]["commsOverSubshells"]["default"])
        assert effective == "perCommTarget", settings
        yield page, Lab(page), shots


def test_widgets_and_subshell_console_in_jupyterlab(tmp_path):
    comms = _installed_comms_setting()
    assert "perCommTarget" in {o["const"] for o in comms["oneOf"]}, comms
    assert _installed_subshell_console_entry()["selector"] == ".jp-Notebook"

    start = time.monotonic()
    with _lab_session(tmp_path, "") as (page, lab, shots):
        # Run the cells in order: the intro (markdown), then the widgets.
        lab.select(0)
        lab.shift_enter(2)
        expect(lab.slider).to_be_visible(timeout=30_000)
        expect(lab.output(WIDGETS).get_by_role("button", name="Stop")).to_be_visible()
        expect(lab.output(WIDGETS).locator(".widget-readout")).to_have_text("1")
        lab.wait_until_done(WIDGETS, timeout=10_000)
        shots("widgets-rendered")

        _open_subshell_console(page, lab)
        shots("subshell-console-opened")

        # Back in the notebook: the markdown before the long cell, then the long cell.
        lab.select(RUN_INTRO)
        lab.shift_enter(2)
        clicked, console = _steer_long_cell(page, lab, shots, 1, {})
        if not clicked:  # the job ended before Stop: set speed 1 again and rerun it
            lab.wait_until_done(LONG, timeout=10_000)
            lab.drag_slider_to(1)
            lab.select(LONG)
            lab.shift_enter()
            clicked, console = _steer_long_cell(page, lab, shots, 2, console)
        assert clicked, "the 5 s job ended twice before Stop could be clicked"

        # The console answered while the notebook's long cell was running
        # (the cell's prompt, read in the same frame as the console's output) ...
        assert console["prompt"] == "[*]:", console
        assert console["position"] < 100, console  # ... and its loop was mid-way,
        assert console["thread"].startswith("subshell-"), console  # on a subshell

        # The notebook goes on: the markdown, then the final cell.
        lab.select(RESULT_INTRO)
        lab.shift_enter(2)
        text, run = _result_from_page(lab)
        shots("result")
        _notebook_only(page, lab)
        shots("notebook-widgets-and-output")

    assert "The job was stopped early by the Stop button" in text, text
    m = re.search(r"stopped early by the Stop button: (\d+)/100", text)
    assert m and int(m.group(1)) < 100, text
    assert f"speed values the loop saw: [1, {NEW_SPEED}]" in text, text
    assert run["stopped_early"] is True and run["position"] < 100, run
    assert run["speeds_seen"] == [1, NEW_SPEED], run
    assert time.monotonic() - start < 120


# -- an ipympl figure redrawn while the notebook builds other figures -----------------------

# The notebook's figure cells, by position.
FIGURE_INTRO, LIVE_FIGURE, BUILD_INTRO, BUILD, FIGURE_RESULT = 7, 8, 9, 10, 11

# JS: every 50 ms, if the live figure's canvas shows a new image, record how much of it
# is ink (not white) and the building cell's prompt at that moment ("[*]:" while it runs).
_WATCH_CANVAS = """([index]) => {
  const frames = window.__liveFrames = [];
  const prompt = () => {
    const el = document.querySelector(
      `.jp-NotebookPanel .jp-Cell[data-windowed-list-index='${index}'] .jp-InputArea-prompt`);
    return el ? el.innerText : null;
  };
  let last = null;
  window.__liveWatch = setInterval(() => {
    const canvas = document.querySelector('.jupyter-matplotlib-canvas-div canvas');
    if (!canvas || !canvas.width) return;
    const url = canvas.toDataURL();
    if (url === last) return;
    last = url;
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let ink = 0, seen = 0;
    for (let i = 0; i < px.length; i += 4 * 7) {
      seen++;
      if (px[i + 3] > 0 && Math.min(px[i], px[i + 1], px[i + 2]) < 200) ink++;
    }
    frames.push({prompt: prompt(), ink: ink / seen});
  }, 50);
}"""


def test_ipympl_figure_redraws_while_a_cell_builds_figures(tmp_path):
    """The live figure (``%matplotlib widget``) of the demo notebook shows new frames,
    none blank, while the next cell builds 40 figures with mathtext on the main thread;
    no cell shows an error, and the kernel counted the frames it drew meanwhile."""
    with _lab_session(tmp_path, "figure-") as (page, lab, shots):
        lab.select(FIGURE_INTRO)
        lab.shift_enter(2)
        figure = lab.output(LIVE_FIGURE).locator(".jupyter-matplotlib-canvas-div canvas").first
        expect(figure).to_be_visible(timeout=30_000)
        lab.wait_until_done(LIVE_FIGURE, timeout=30_000)
        lab.cell(LIVE_FIGURE).scroll_into_view_if_needed()
        shots("live-figure", lab.output(LIVE_FIGURE))

        page.evaluate(_WATCH_CANVAS, [BUILD])
        lab.select(BUILD_INTRO)
        lab.shift_enter(2)
        expect(lab.prompt(BUILD)).to_have_text("[*]:", timeout=10_000)
        page.wait_for_function(
            "() => window.__liveFrames.filter(f => f.prompt === '[*]:').length >= 2",
            timeout=30_000)
        shots("live-figure-while-building", lab.output(LIVE_FIGURE))
        lab.wait_until_done(BUILD, timeout=90_000)
        page.wait_for_timeout(500)  # the last frame
        frames = page.evaluate("() => { clearInterval(window.__liveWatch); "
                               "return window.__liveFrames; }")
        shots("live-figure-after-building", lab.output(LIVE_FIGURE))

        lab.shift_enter()  # the result cell
        out = lab.output(FIGURE_RESULT)
        expect(out.locator(".jp-OutputArea-executeResult")).to_be_visible(timeout=15_000)
        result = ast.literal_eval(out.locator(
            ".jp-OutputArea-executeResult .jp-OutputArea-output").inner_text().strip())
        shots("figure-result", out)
        errors = lab.notebook.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        assert errors.count() == 0, errors.all_inner_texts()

    during = [f for f in frames if f["prompt"] == "[*]:"]
    assert len(during) >= 2, frames  # new frames appeared while the cell ran
    assert min(f["ink"] for f in during) > 0.01, frames  # none of them blank
    assert result["built"] == 40, result
    assert result["frames"] >= 2, result
