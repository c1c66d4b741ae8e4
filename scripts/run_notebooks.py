"""Execute the demo notebooks with the subshell kernel and print what they show."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def main(paths: list[str]) -> int:
    notebooks = [Path(p) for p in paths] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        print(f"== {path.relative_to(ROOT) if path.is_absolute() else path}")
        NotebookClient(nb, kernel_name="subshell", timeout=120,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            for out in cell.get("outputs", []):
                if out.output_type == "stream":
                    print(out.text, end="")
                elif "data" in out and "text/plain" in out["data"]:
                    print(out["data"]["text/plain"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
