"""Libraries that render for notebooks recognise this kernel and give what they give
under ipykernel (``adapter/recognition.py`` says what each one checks).

One cell per library, run as a user would, on one kernel shared by the module;
each test checks the messages a frontend receives: the message types and MIME
bundles that the same cells produce under ipykernel 7.4.
"""

from __future__ import annotations

from .harness import KernelHarness
from .test_ecosystem import of_type, run_ok

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def widget_models(msgs: list[dict]) -> list[str]:
    return [m["content"]["data"]["state"].get("_model_name") for m in of_type(msgs, "comm_open")]


def test_rich_prints_html(kernel):
    _, msgs, stdout = run_ok(kernel, "import rich\n"
                                     "from rich.console import Console\n"
                                     "assert Console().is_jupyter\n"
                                     "rich.print('[bold]hello[/bold]')")
    (disp,) = of_type(msgs, "display_data")
    assert "<span style=\"font-weight: bold\">hello</span>" in disp["content"]["data"]["text/html"]
    assert stdout == ""  # not ANSI text on stdout, as in a terminal


def test_tqdm_auto_shows_the_widget_bar(kernel):
    code = ("import sys\n"
            "from tqdm.auto import tqdm\n"
            "from tqdm.notebook import tqdm as notebook_tqdm\n"
            "for _ in tqdm(range(3)): pass\n"
            "print(issubclass(tqdm, notebook_tqdm), 'ipykernel.zmqshell' in sys.modules)")
    _, msgs, stdout = run_ok(kernel, code)
    # the stand-in that tqdm.autonotebook saw is gone once it is imported
    assert stdout == "True False\n"
    assert {"FloatProgressModel", "HBoxModel"} <= set(widget_models(msgs))
    (disp,) = of_type(msgs, "display_data")
    assert WIDGET_VIEW in disp["content"]["data"]
    assert not [m for m in msgs if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"]


def test_plotly_shows_its_mimebundle(kernel):
    code = ("import plotly.io as pio, plotly.graph_objects as go\n"
            "print(pio.renderers.default)\n"
            "go.Figure(go.Scatter(y=[1, 3, 2])).show()")
    _, msgs, stdout = run_ok(kernel, code)
    assert stdout == "plotly_mimetype\n"
    (disp,) = of_type(msgs, "display_data")
    # the mimebundle alone: not plotly.js as 4.8 MB of text/html beside it
    assert list(disp["content"]["data"]) == ["application/vnd.plotly.v1+json"]
    assert disp["content"]["data"]["application/vnd.plotly.v1+json"]["data"][0]["y"] == [1, 3, 2]


def test_bokeh_shows_its_mimebundles(kernel):
    code = ("from bokeh.io import output_notebook, show\n"
            "from bokeh.plotting import figure\n"
            "output_notebook(hide_banner=True)\n"
            "p = figure()\n"
            "p.line([1, 2], [1, 2])\n"
            "show(p)")
    _, msgs, _ = run_ok(kernel, code)
    kinds = [sorted(m["content"]["data"]) for m in of_type(msgs, "display_data")]
    assert ["application/javascript", "application/vnd.bokehjs_load.v0+json"] in kinds
    assert ["text/html"] in kinds
    assert ["application/javascript", "application/vnd.bokehjs_exec.v0+json"] in kinds


def test_ipympl_opens_a_canvas(kernel):
    code = ("%matplotlib widget\n"
            "import matplotlib.pyplot as plt\n"
            "fig = plt.figure()\n"
            "plt.plot([1, 2])")
    _, msgs, _ = run_ok(kernel, code)
    (canvas,) = [m for m in of_type(msgs, "comm_open")
                 if m["content"]["data"]["state"].get("_model_name") == "MPLCanvasModel"]
    assert canvas["content"]["data"]["state"]["_model_module"] == "jupyter-matplotlib"
    shown = [m for m in of_type(msgs, "display_data") if WIDGET_VIEW in m["content"]["data"]]
    assert shown and shown[0]["content"]["data"][WIDGET_VIEW]["model_id"] == (
        canvas["content"]["comm_id"])
    run_ok(kernel, "plt.close('all')\n%matplotlib inline")


def test_anywidget_shows_a_view(kernel):
    code = ("import anywidget, traitlets\n"
            "class Counter(anywidget.AnyWidget):\n"
            "    _esm = 'export default { render({ model, el }) { el.innerText = 7 } }'\n"
            "    v = traitlets.Int(7).tag(sync=True)\n"
            "Counter()")
    _, msgs, _ = run_ok(kernel, code)
    (model,) = [m for m in of_type(msgs, "comm_open")
                if m["content"]["data"]["state"].get("_model_name") == "AnyModel"]
    assert model["content"]["data"]["state"]["v"] == 7
    (res,) = of_type(msgs, "execute_result")
    assert res["content"]["data"][WIDGET_VIEW]["model_id"] == model["content"]["comm_id"]


def test_pandas_knows_it_is_in_a_notebook(kernel):
    code = ("import pandas as pd, pandas.io.formats.console as console\n"
            "print(console.in_interactive_session(), console.in_ipython_frontend(),\n"
            "      pd.get_option('display.max_columns'))\n"
            "pd.DataFrame({'a': [1, 2]})")
    _, msgs, stdout = run_ok(kernel, code)
    assert stdout == "True True 20\n"
    (res,) = of_type(msgs, "execute_result")
    assert "<table" in res["content"]["data"]["text/html"]


def test_ipympl_figures_close_quietly_at_shutdown(tmp_path):
    """matplotlib closes every figure at exit (an atexit handler), after the kernel has
    undone its hooks; the ipympl canvases' comms must already be closed then, or the
    comm package's own manager raises KeyError into the kernel's terminal."""
    log = tmp_path / "kernel.log"
    with log.open("wb") as out:
        k = KernelHarness("subshell", stdout=out, stderr=out)
        try:
            run_ok(k, "%matplotlib widget\nimport matplotlib.pyplot as plt\n"
                      "fig = plt.figure()\nplt.plot([1, 2])")
        finally:
            k._stop_reader()
            k.kc.stop_channels()
            k.km.shutdown_kernel(now=False)  # a shutdown_request: the process exits itself
    text = log.read_text()
    assert "Exception ignored" not in text and "KeyError" not in text, text[-3000:]
