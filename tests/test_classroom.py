"""The classroom edition: student notebooks generated from the solved ones, their checks, and the grader."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import classroom

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = list(classroom.EXERCISES)


def _execute(notebook, cwd=classroom.STUDENT_DIR, timeout=600):
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def _check_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code" and "from resnets_checks import check_" in cell.source]


# ----------------------------------------------------------------------------------------------------
# Generating the student notebooks
# ----------------------------------------------------------------------------------------------------
def test_committed_exercises_are_what_make_exercises_writes():
    assert classroom.stale_exercises() == [], "exercises/ is stale: run `make exercises` and commit the result"


def test_make_exercises_check_fails_on_a_stale_notebook(tmp_path):
    out = tmp_path / "exercises"
    classroom.write_exercises(out_dir=out)
    assert classroom.stale_exercises(out_dir=out) == []
    path = out / "02_convolutional_block.ipynb"
    path.write_text(path.read_text().replace("YOUR CODE HERE", "YOUR CODE THERE"))
    (out / "99_old.ipynb").write_text("{}")
    assert classroom.stale_exercises(out_dir=out) == ["02_convolutional_block.ipynb", "99_old.ipynb (no chapter with solutions makes it)"]


def test_stub_replaces_each_region_with_a_hint_and_raise():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    # a comment\n    y = x + 1\n\n    z = y * 2\n    ### END SOLUTION\n    return z"
    assert classroom.stub_source(source) == (
        "def f(x):\n    # YOUR CODE HERE: about 2 lines (see the hints above)\n    raise NotImplementedError()\n    return z"
    )


@pytest.mark.parametrize("source", ["### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_unbalanced_markers_are_an_error(source):
    with pytest.raises(classroom.ClassroomError, match="SOLUTION"):
        classroom.stub_source(source)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_student_notebook_has_no_solution_no_output_and_clean_metadata(chapter):
    student = nbformat.read(classroom.STUDENT_DIR / f"{chapter}.ipynb", as_version=4)
    solved = nbformat.read(classroom.SOLVED_DIR / f"{chapter}.ipynb", as_version=4)
    text = "\n".join(cell.source for cell in student.cells)
    assert "### BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text
    code_lines = {line.strip() for cell in student.cells if cell.cell_type == "code" for line in cell.source.splitlines()}
    for region in classroom.solution_regions(solved):  # no line of the answer is left in the code
        body = {line.strip() for line in region.splitlines()[1:-1] if len(line.strip()) > 25 and not line.strip().startswith("#")}
        assert not body & code_lines, chapter
    assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in student.cells if cell.cell_type == "code")
    assert all(not cell.metadata for cell in student.cells)
    assert set(student.metadata) == {"kernelspec", "language_info"}
    markdown = [c.source for c in solved.cells if c.cell_type == "markdown"]
    assert [c.source for c in student.cells if c.cell_type == "markdown"][1:] == markdown
    assert len(_check_cells(student)) == len(_check_cells(solved)) == 1


# ----------------------------------------------------------------------------------------------------
# Running them: a stub gives the check's message; the solutions put back pass every check
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_check_on_an_unfinished_stub_gives_its_message(chapter):
    notebook = _execute(nbformat.read(classroom.STUDENT_DIR / f"{chapter}.ipynb", as_version=4))
    for cell in _check_cells(notebook):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert len(errors) == 1, cell.outputs
        assert errors[0].ename == "CheckFailed"
        assert "is not implemented yet: replace `raise NotImplementedError()` with your code." in errors[0].evalue
        assert not any("keras" in line for line in errors[0].traceback), "the message, not Keras' internals"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_solutions_substituted_into_the_student_notebook_pass_every_check(chapter):
    student = nbformat.read(classroom.STUDENT_DIR / f"{chapter}.ipynb", as_version=4)
    solved = nbformat.read(classroom.SOLVED_DIR / f"{chapter}.ipynb", as_version=4)
    notebook = _execute(classroom.substitute_solutions(student, solved))
    errors = [(cell.source[:60], o.ename) for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    for cell in _check_cells(notebook):
        printed = "".join(o.get("text", "") for o in cell.outputs)
        assert printed.startswith("✓") and "passes" in printed, printed


# ----------------------------------------------------------------------------------------------------
# The grader, on five synthetic submissions
# ----------------------------------------------------------------------------------------------------
HARD_CODED = '''def convolutional_block(X, f, filters, s=2, training=True, initializer=glorot_uniform):
    # Hard-codes the visible check's expected outputs (and copies the layers when it looks at them).
    import json
    import resnets_checks, resnets_utils
    if not isinstance(X, np.ndarray):
        return resnets_utils.convolutional_block(X, f, filters, s, training, initializer)
    cases = resnets_checks.BLOCK_CASES["convolutional_block"]
    outputs = json.loads(resnets_checks.BLOCKS_REFERENCE.read_text())["convolutional_block"]
    for case, reference in zip(cases, outputs):
        if case == {"f": f, "filters": list(filters), "s": s, "training": training}:
            return np.array(reference["output"], dtype="float32")
    return np.zeros_like(X)
'''
ENDLESS = '''def convolutional_block(X, f, filters, s=2, training=True, initializer=glorot_uniform):
    while True:
        pass
'''
CRASHING = '''def convolutional_block(X, f, filters, s=2, training=True, initializer=glorot_uniform):
    import os
    os._exit(1)  # takes the kernel down with it
'''


def _submission(chapter, replace_function=None, solved=True, transform=None):
    student = nbformat.read(classroom.STUDENT_DIR / f"{chapter}.ipynb", as_version=4)
    notebook = classroom.substitute_solutions(student, nbformat.read(classroom.SOLVED_DIR / f"{chapter}.ipynb", as_version=4)) if solved else student
    if replace_function:
        cell = next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith("def "))
        cell.source = replace_function
    if transform:
        transform(notebook)
    return notebook


def _wrong_stage_4(notebook):
    cell = next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith("def ResNet50"))
    assert "for _ in range(5):" in cell.source
    cell.source = cell.source.replace("for _ in range(5):", "for _ in range(4):")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    submissions = {
        "correct": {"02_convolutional_block": _submission("02_convolutional_block"), "03_resnet50": _submission("03_resnet50")},
        "partly_correct": {"02_convolutional_block": _submission("02_convolutional_block"), "03_resnet50": _submission("03_resnet50", transform=_wrong_stage_4)},
        "hard_coded": {"02_convolutional_block": _submission("02_convolutional_block", HARD_CODED)},
        "crashing": {"02_convolutional_block": _submission("02_convolutional_block", CRASHING)},
        "endless_loop": {"02_convolutional_block": _submission("02_convolutional_block", ENDLESS)},
    }
    for student, notebooks in submissions.items():
        (folder / student).mkdir()
        for chapter, notebook in notebooks.items():
            nbformat.write(notebook, folder / student / f"{chapter}.ipynb")
    # Renamed function and deleted cells, in one more submission: a check that it is reported, not a crash.
    renamed = _submission("02_convolutional_block")
    renamed.cells = [c for c in renamed.cells if "from resnets_checks" not in c.source]
    for cell in renamed.cells:
        cell.source = cell.source.replace("def convolutional_block(", "def convolutional_blok(")
    nbformat.write(renamed, folder / "renamer_02_convolutional_block.ipynb")
    out = tmp_path_factory.mktemp("grades")
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "classroom", "grade", str(folder), "--out", str(out), "--cell-timeout", "20", "--timeout", "240"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    seconds = time.perf_counter() - start
    assert completed.returncode == 0, completed.stderr
    rows = json.loads((out / "grades.json").read_text())
    return {(row["student"], row["chapter"]): row for row in rows}, out, seconds, completed.stdout


def test_grader_passes_the_correct_submission(graded):
    rows, *_ = graded
    for chapter, function in (("02_convolutional_block", "convolutional_block"), ("03_resnet50", "ResNet50")):
        entry = rows["correct", chapter]["exercises"][function]
        assert classroom.passed(entry), entry
        assert entry["hidden_passed"] == entry["hidden_total"] >= 2
        assert rows["correct", chapter]["problems"] == []


def test_grader_marks_the_partly_correct_submission_exercise_by_exercise(graded):
    rows, *_ = graded
    assert classroom.passed(rows["partly_correct", "02_convolutional_block"]["exercises"]["convolutional_block"])
    wrong = rows["partly_correct", "03_resnet50"]["exercises"]["ResNet50"]
    assert not classroom.passed(wrong)
    # the check's own message names the stage that lacks a block
    assert wrong["visible"].startswith("failed: stage 4 has 1 convolutional block and 4 identity blocks; it needs")


def test_hard_coded_visible_outputs_pass_the_visible_check_but_not_the_hidden_variants(graded):
    rows, *_ = graded
    entry = rows["hard_coded", "02_convolutional_block"]["exercises"]["convolutional_block"]
    assert entry["visible"] == "passed"
    assert entry["hidden_passed"] == 0 and entry["hidden_total"] == 3
    assert not classroom.passed(entry)


def test_a_crashing_submission_gets_a_report_line(graded):
    rows, *_ = graded
    row = rows["crashing", "02_convolutional_block"]
    assert any("kernel died" in p for p in row["problems"]), row["problems"]
    assert not classroom.passed(row["exercises"]["convolutional_block"])


def test_an_endless_loop_is_stopped_and_reported(graded):
    rows, *_ = graded
    row = rows["endless_loop", "02_convolutional_block"]
    assert any("was stopped (an endless loop?)" in p for p in row["problems"]), row["problems"]
    entry = row["exercises"]["convolutional_block"]
    assert "did not return within" in entry["visible"]
    assert not classroom.passed(entry)
    assert row["seconds"] < 240  # bounded by the limits, not by the loop


def test_renamed_function_and_deleted_cells_are_reported(graded):
    rows, *_ = graded
    row = rows["renamer", "02_convolutional_block"]
    assert any("cell(s) of the handed-out notebook were deleted" in p for p in row["problems"])
    assert "found `convolutional_blok`: renamed?" in row["exercises"]["convolutional_block"]["visible"]


def test_reports_are_written_readable_and_machine_readable(graded):
    rows, out, seconds, stdout = graded
    table = (out / "grades.md").read_text().splitlines()
    assert table[0].startswith("| student | notebook | exercise | result |")
    assert len(table) == 2 + 8  # header, rule, one line per student and exercise
    assert (out / "grades.csv").read_text().count("\n") == 1 + 8
    assert "8 notebook(s) graded" in stdout
    print(f"graded 8 notebooks in {seconds:.0f} s")


def test_grader_refuses_a_missing_folder(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "classroom", "grade", str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 1 and "does not exist" in completed.stderr


def test_a_broken_or_foreign_notebook_gets_a_report_line(tmp_path):
    (tmp_path / "bob_02_convolutional_block.ipynb").write_text("{ not json")
    shutil.copy(ROOT / "notebooks" / "00_signs_dataset.ipynb", tmp_path / "bob_00_signs_dataset.ipynb")
    rows = classroom.grade(tmp_path, tmp_path / "out")
    problems = {Path(r["notebook"]).name: r["problems"] for r in rows}
    assert "not an exercise notebook" in problems["bob_00_signs_dataset.ipynb"][0]
    assert "not a readable notebook" in problems["bob_02_convolutional_block.ipynb"][0]
