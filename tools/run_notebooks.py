"""Execute notebooks top to bottom in fresh kernels, in the order given, and store their outputs in place.

This is how the committed outputs are made (`make notebooks`): a real run, never hand-edited. It stops
at the first notebook that fails and names the cell. Timing metadata is not recorded, so a re-run that
prints the same thing leaves the file unchanged.

    python tools/run_notebooks.py notebooks/00_signs_dataset.ipynb [more.ipynb ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

# Notebook 04 trains ResNet50 in one cell: about 10 minutes on a recent 2-core CPU, 16 on an AVX2-only
# one (over 30 before oneDNN was turned on there). The limit is there to stop a hung kernel, not to judge a CPU's speed.
CELL_TIMEOUT_S = 3600
FAILURES = (CellExecutionError, CellTimeoutError)  # a cell that raised, or one stopped at the limit


def run_notebook(path: Path, cell_timeout: int = CELL_TIMEOUT_S) -> float:
    """Execute ``path`` in place with the current environment's Python kernel; return the seconds taken."""
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    client = NotebookClient(
        notebook,
        timeout=cell_timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    try:
        client.execute()
    except FAILURES:
        # Keep the good stored outputs; put the failed run beside them for inspection.
        nbformat.write(_clean(notebook), failed_path(path))
        raise
    nbformat.write(_clean(notebook), path)
    failed_path(path).unlink(missing_ok=True)
    return time.perf_counter() - start


def failed_path(path: Path) -> Path:
    return path.with_suffix(".failed.ipynb")


def _clean(notebook):
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    notebook.metadata.get("language_info", {}).pop("version", None)  # the patch version is not ours to pin
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT_S, metavar="SECONDS",
                        help=f"stop a cell that runs longer (default {CELL_TIMEOUT_S})")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        print(f"Running {path} ...", flush=True)
        try:
            seconds = run_notebook(path, args.cell_timeout)
        except FAILURES as exc:
            print(f"error: {path} failed; it is unchanged, the failed run is in {failed_path(path)}.\n{exc}", file=sys.stderr)
            return 1
        print(f"  done in {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
