"""The shape of ``subshell_kernel/``, checked from its source (no kernel runs).

docs/architecture.md draws five layers; these tests hold the code to them:

    app         kernel, hooks, boot, settings, app, kernelspec, __main__
    adapter     IPython and the libraries around it
    runtime     subshells, their registry, output routing
    transport   sockets and the threads that own them
    core        sans IO: wire format, request lifecycle

A module imports only from its own layer or the layers below it; the package's
modules import each other in no circle; no import of a package module hides
inside a function (that is how circles were hidden before) but the one listed
in ``LATE_IMPORTS``; no module is over 500 lines; the command line and the
boot import nothing of IPython.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "subshell_kernel"
LAYERS = ["core", "transport", "runtime", "adapter", "app"]
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else "app"


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in PACKAGE.rglob("*.py")}


def _package_imports(module: str, tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """(imported package module, node) for every import of one of our modules."""
    package = module if module.count(".") == 0 or _is_package(module) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "subshell_kernel":
                continue
            for alias in node.names:  # "from . import x" may name a module
                candidate = f"{target}.{alias.name}"
                found.append((candidate if _exists(candidate) else target, node))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "subshell_kernel":
                    found.append((alias.name, node))
    return found


def _exists(module: str) -> bool:
    """A module of ours: Python source, a package, or a C extension's source."""
    rel = Path(*module.split(".")[1:])
    return any((PACKAGE / rel).with_suffix(suffix).exists() for suffix in (".py", ".c")) \
        or (PACKAGE / rel / "__init__.py").exists()


def _is_package(module: str) -> bool:
    return (PACKAGE / Path(*module.split(".")[1:]) / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {t for t, _ in _package_imports(m, tree) if t != m} for m, tree in modules.items()}


def test_every_module_imports_only_from_its_layer_or_below():
    wrong = []
    for module, targets in _graph().items():
        for target in targets:
            if LAYERS.index(_layer(target)) > LAYERS.index(_layer(module)):
                wrong.append(f"{module} ({_layer(module)}) imports {target} ({_layer(target)})")
    assert wrong == []


def test_no_import_circle():
    graph = _graph()
    circles = []

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            circles.append(" -> ".join(path[path.index(node):] + [node]))
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])

    for start in graph:
        visit(start, [])
    assert circles == []


#: the imports of a package module inside a function that are there on purpose,
#: with why; the circle check above sees them like any other
LATE_IMPORTS = {
    # IPython loads after the sockets are up, while kernel_info is already answered
    ("subshell_kernel.app", "subshell_kernel.kernel"),
}


def test_no_package_import_inside_a_function():
    hidden = []
    for module, tree in _modules().items():
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(func):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        imported = {target for target, _ in
                                    _package_imports(module, ast.Module([node], []))}
                        if imported - {t for m, t in LATE_IMPORTS if m == module}:
                            hidden.append(f"{module}:{node.lineno}")
    assert hidden == []


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_layers_are_what_the_architecture_page_draws():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for layer in LAYERS[:-1]:
        sources = [*(PACKAGE / layer).glob("*.py"), *(PACKAGE / layer).glob("*.c")]
        for path in sorted(sources):
            if path.name != "__init__.py":
                assert f"{layer}/{path.name}" in page, f"{layer}/{path.name} is not on the map"


def test_the_command_line_and_the_boot_import_no_ipython():
    """What runs before the first kernel_info_reply stays light (boot.py): IPython is
    most of a kernel's startup."""
    code = ("import sys, subshell_kernel.app, subshell_kernel.boot; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('IPython', 'jedi', 'pygments', 'comm', 'debugpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout
    assert out.strip() == "[]"
