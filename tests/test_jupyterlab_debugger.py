"""JupyterLab's debugger on this kernel, driven in Chromium as a person uses it.

1. A notebook with one cell (a function and a call) opens on the ``subshell``
   kernel; the notebook toolbar's bug button is enabled (the kernelspec and
   ``kernel_info`` both say ``debugger: true``) and turns the debugger on.
2. A click in the cell's breakpoint gutter, on the function's second line,
   sets a breakpoint (JupyterLab names the cell's file by the hash the
   kernel told it, and the breakpoints panel lists it).
3. The cell runs and stops there: the call stack shows the function, the
   variables panel its local values; Continue (in the call stack's toolbar)
   lets the cell finish, and its output appears.
4. The debugger is turned off, and the cell runs to the end without stopping.

Screenshots go to ``test-artifacts/jupyterlab/debugger-NN-*.png``, with the
server log and the browser's console messages.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from .jupyterlab_browser import lab_session

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

from playwright.sync_api import Page, expect  # noqa: E402

NOTEBOOK = "debug-me.ipynb"
CELL = """\
def add(a, b):
    total = a + b
    return total

result = add(40, 2)
print("result:", result)"""
BREAKPOINT_LINE = 2  # total = a + b


def _write_notebook(path) -> None:
    path.write_text(json.dumps({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "subshell", "display_name": "Python 3 (subshell)",
                                    "language": "python"}},
        "cells": [{"cell_type": "code", "id": "debug-me", "metadata": {},
                   "execution_count": None, "outputs": [], "source": CELL}],
    }))


class Debugger:
    """The notebook's one cell and the debugger's panels."""

    def __init__(self, page: Page):
        self.page = page
        self.notebook = page.locator(".jp-NotebookPanel")
        self.cell = self.notebook.locator(".jp-Notebook .jp-Cell").first
        self.bug = self.notebook.locator(".jp-NotebookPanel-toolbar .jp-DebuggerBugButton")
        self.sidebar = page.locator(".jp-DebuggerSidebar")
        self.frames = self.sidebar.locator(".jp-DebuggerCallstackFrame-name")
        self.breakpoints = self.sidebar.locator(".jp-DebuggerBreakpoint")
        self.variables = self.sidebar.locator(".jp-DebuggerVariables-body")

    def bug_button(self):
        return self.bug.locator("button, jp-button").first

    def toggle(self, on: bool) -> None:
        button = self.bug_button()
        expect(button).to_be_enabled(timeout=30_000)
        button.click()
        expect(button).to_have_attribute("aria-pressed", "true" if on else "false")

    def click_gutter(self, line: int) -> None:
        """A click in the breakpoint gutter beside ``line`` (1-based) of the cell."""
        editor = self.cell.locator(".cm-editor")
        gutter = editor.locator(".cm-gutter.cm-breakpoint-gutter")
        expect(gutter).to_be_visible(timeout=15_000)
        row = editor.locator(".cm-line").nth(line - 1).bounding_box()
        box = gutter.bounding_box()
        assert row and box, "the cell's editor is not laid out"
        self.page.mouse.click(box["x"] + box["width"] / 2, row["y"] + row["height"] / 2)

    def run_cell(self) -> None:
        self.cell.locator(".jp-InputArea-prompt").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Shift+Enter")

    def continue_(self) -> None:
        """The Continue button in the title bar of the call stack's section."""
        self.sidebar.locator("[data-jp-item-name='continue'] "
                             "[data-command='debugger:continue']").click()

    def variable(self, name: str):
        return self.variables.locator(".jp-DebuggerVariables-name", has_text=re.compile(
            rf"^{name}$")).locator("xpath=..")

    @property
    def output(self):
        return self.cell.locator(".jp-Cell-outputArea")

    @property
    def prompt(self):
        return self.cell.locator(".jp-InputArea-prompt")


def test_breakpoint_callstack_variables_and_continue_in_jupyterlab(tmp_path):
    start = time.monotonic()
    _write_notebook(tmp_path / NOTEBOOK)
    (tmp_path / "files").mkdir()
    with lab_session(tmp_path / "files", [tmp_path / NOTEBOOK], NOTEBOOK,
                     "debugger-") as (_, page, shots):
        lab = Debugger(page)

        lab.toggle(on=True)
        expect(lab.sidebar).to_be_visible(timeout=30_000)
        shots("debugger-on")

        lab.click_gutter(BREAKPOINT_LINE)
        expect(lab.breakpoints).to_have_count(1, timeout=15_000)
        expect(lab.breakpoints).to_contain_text(str(BREAKPOINT_LINE))
        shots("breakpoint-set")

        lab.run_cell()
        expect(lab.frames.first).to_have_text("add", timeout=30_000)
        expect(lab.prompt).to_have_text("[*]:")  # the cell is stopped, not done
        expect(lab.variable("a")).to_contain_text("40", timeout=15_000)
        expect(lab.variable("b")).to_contain_text("2")
        shots("stopped-at-breakpoint")
        shots("call-stack-and-variables", lab.sidebar)

        lab.continue_()
        expect(lab.output).to_contain_text("result: 42", timeout=30_000)
        expect(lab.prompt).to_have_text("[1]:")
        expect(lab.frames).to_have_count(0)
        shots("continued-cell-finished")

        lab.toggle(on=False)
        lab.run_cell()
        expect(lab.prompt).to_have_text("[2]:", timeout=30_000)  # ran through
        expect(lab.output).to_contain_text("result: 42")
        expect(lab.frames).to_have_count(0)
        shots("debugger-off-cell-runs-through")
    assert time.monotonic() - start < 120
