"""The chapters stay consistent with the module and with each other. (nbval replays their outputs separately.)"""

import ast
import inspect
import re
import textwrap
from pathlib import Path

import nbformat
import pytest
from test_docs import _anchors

import hosted
import resnets_utils as ru

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))

# Each exercise's solution must be the reference implementation, statement for statement.
SOLUTIONS = {
    "01_identity_block.ipynb": ru.identity_block,
    "02_convolutional_block.ipynb": ru.convolutional_block,
    "03_resnet50.ipynb": ru.ResNet50,
}


def _code_cells(path):
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def _function_defs(path):
    found = {}
    for cell in _code_cells(path):
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef):
                found[node.name] = node
    return found


def test_chapters_exist():
    assert [p.name for p in CHAPTERS][:4] == [
        "00_signs_dataset.ipynb",
        "01_identity_block.ipynb",
        "02_convolutional_block.ipynb",
        "03_resnet50.ipynb",
    ]


@pytest.mark.parametrize("notebook, function", SOLUTIONS.items(), ids=list(SOLUTIONS))
def test_solution_in_notebook_is_the_module_function(notebook, function):
    defs = _function_defs(NOTEBOOKS / notebook)
    assert function.__name__ in defs, f"{notebook} has no `def {function.__name__}`"
    in_notebook = ast.dump(defs[function.__name__])
    in_module = ast.dump(ast.parse(textwrap.dedent(inspect.getsource(function))).body[0])
    assert in_notebook == in_module, (
        f"{notebook}'s {function.__name__} and resnets_utils.{function.__name__} have drifted apart; "
        "change both (the notebook teaches the module's code)."
    )


@pytest.mark.parametrize("notebook", SOLUTIONS)
def test_solutions_are_marked_for_nbgrader(notebook):
    sources = [cell.source for cell in _code_cells(NOTEBOOKS / notebook)]
    marked = [s for s in sources if "### BEGIN SOLUTION" in s]
    assert len(marked) == 1 and "### END SOLUTION" in marked[0]


def test_every_chapter_opens_with_the_same_setup_cell():
    setups = {path.name: _code_cells(path)[0].source for path in CHAPTERS}
    assert len(set(setups.values())) == 1, setups
    setup = next(iter(setups.values()))
    assert setup.startswith(f"# Setup: the same cell opens every chapter.\n{hosted.setup_block('notebooks')}\n"), "run `make hosted`"
    after_hosted_block = setup.split(hosted.setup_block("notebooks"), 1)[1].lstrip("\n")
    assert after_hosted_block.startswith("import resnets_utils as ru"), "resnets_utils first: it silences TensorFlow's start-up logs"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_stored_outputs_come_from_one_clean_run(path):
    cells = [c for c in _code_cells(path) if c.source.strip()]
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), "re-run it top to bottom: make notebooks"
    for cell in cells:
        for output in cell.outputs:
            assert output.output_type != "error", f"stored error in cell {cell.execution_count}"
            assert output.get("name") != "stderr", f"stderr stored in cell {cell.execution_count}: {output.text[:200]}"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_local_links_and_images_exist(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", cell.source):
            if not re.match(r"[a-z]+://", target):
                file_part, _, anchor = target.partition("#")
                linked = path.parent / file_part
                assert linked.exists(), f"{path.name} links to missing {target}"
                if anchor:
                    assert anchor in _anchors(linked), f"{path.name} links to {target}: no such heading in {linked.name}"


NBVAL_TAGS = {"nbval-ignore-output", "nbval-check-output", "nbval-skip", "nbval-raises-exception"}


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_nbval_instructions_are_cell_tags(path):
    """Which outputs nbval compares is said with cell tags, so no test-harness comment sits in teaching code.

    A misspelt tag would silently turn the comparison back on (or off): only nbval's own names are allowed.
    """
    for index, cell in enumerate(_code_cells(path)):
        assert "NBVAL" not in cell.source, f"code cell {index}: use the cell tag nbval-ignore-output, not a comment"
        tags = set(cell.metadata.get("tags", []))
        unknown = {tag for tag in tags if tag.startswith("nbval")} - NBVAL_TAGS
        assert not unknown, f"code cell {index}: unknown nbval tag(s) {unknown}; nbval knows {sorted(NBVAL_TAGS)}"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_results_that_are_not_compared_are_still_checked(path):
    """A cell whose output nbval ignores must not go untested: it checks its conclusion with ru.expect, or
    it only measures time, or it only draws a figure (nbval never compares images, but a figure's text,
    e.g. its number of panels, may vary). Outputs from training differ from CPU to CPU; conclusions must not."""
    for index, cell in enumerate(_code_cells(path)):
        if "nbval-ignore-output" in cell.metadata.get("tags", []):
            checks = ("ru.expect(", "perf_counter", "train_wall_time_s")
            only_figures = cell.outputs and all("image/png" in output.get("data", {}) for output in cell.outputs)
            assert only_figures or any(check in cell.source for check in checks), (
                f"code cell {index} is not compared by nbval and checks nothing: add an ru.expect(...) for what it shows"
            )
