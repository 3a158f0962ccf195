"""The classroom edition: student notebooks generated from the solved ones, their checks, and the grader."""

import csv
import hashlib
import io
import json
import re
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
OPEN_CHAPTERS = list(classroom.OPEN_EXERCISES)


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


@pytest.mark.parametrize("chapter", CHAPTERS + OPEN_CHAPTERS)
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
    # the same text, but the Colab and Kaggle badges open the student edition
    markdown = [c.source.replace(f"/notebooks/{chapter}.ipynb)", f"/exercises/{chapter}.ipynb)") for c in solved.cells if c.cell_type == "markdown"]
    assert [c.source for c in student.cells if c.cell_type == "markdown"][1:] == markdown
    assert len(_check_cells(student)) == len(_check_cells(solved)) == (1 if chapter in CHAPTERS else 0)


# ----------------------------------------------------------------------------------------------------
# Open exercises: chapters 04 and 05 end with questions, answered in code, read by the instructor
# ----------------------------------------------------------------------------------------------------
def test_open_exercise_chapters_are_the_solved_chapters_with_answers_but_no_check():
    with_answers = {p.stem for p in classroom.SOLVED_DIR.glob("[0-9][0-9]_*.ipynb") if classroom.has_solutions(nbformat.read(p, as_version=4))}
    assert with_answers == set(CHAPTERS) | set(OPEN_CHAPTERS)


@pytest.mark.parametrize("chapter", OPEN_CHAPTERS)
def test_each_listed_open_exercise_has_its_answer_cell_at_the_end_of_the_chapter(chapter):
    solved = nbformat.read(classroom.SOLVED_DIR / f"{chapter}.ipynb", as_version=4)
    student = nbformat.read(classroom.STUDENT_DIR / f"{chapter}.ipynb", as_version=4)
    listing = next(c.source for c in solved.cells if c.cell_type == "markdown" and c.source.startswith("## Exercises"))
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", listing, flags=re.M)]
    assert len(numbers) >= 3 and numbers == list(range(1, len(numbers) + 1)), listing
    assert list(classroom.open_exercise_cells(solved)) == numbers
    answer_cells = classroom.open_exercise_cells(student)
    assert list(answer_cells) == numbers
    assert [c.id for c in student.cells[-len(numbers):]] == [c.id for c in answer_cells.values()], "the exercises end the chapter"
    stubs = [c for c in student.cells if c.cell_type == "code" and classroom.STUB_RAISE in c.source]
    assert [c.id for c in stubs] == [c.id for c in answer_cells.values()], "the chapter itself runs as it is; only the answers are left out"


@pytest.fixture(scope="module")
def open_answers(tmp_path_factory):
    """Three students' chapter 04 and a broken chapter 05, graded: what the report and answers.md say."""
    chapter = "04_train_and_evaluate"
    folder, out = tmp_path_factory.mktemp("open-submissions"), tmp_path_factory.mktemp("open-grades")
    ran = folder / "ran.txt"  # an answer that writes this file, which must not exist afterwards: nothing is run
    student = nbformat.read(classroom.STUDENT_DIR / f"{chapter}.ipynb", as_version=4)
    solved = nbformat.read(classroom.SOLVED_DIR / f"{chapter}.ipynb", as_version=4)
    everything = classroom.substitute_solutions(student, solved)
    hostile = classroom.open_exercise_cells(everything)[2]
    hostile.source = f"# Exercise 2\n```\n</pre><script>alert(1)</script>\nopen({str(ran)!r}, 'w').write('the grader ran me')"
    hostile.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * 100_000)]
    deleted_third = classroom.substitute_solutions(student, solved)
    third = classroom.open_exercise_cells(deleted_third)[3]
    deleted_third.cells = [c for c in deleted_third.cells if c is not third]
    for name, notebook in (("alice", everything), ("bob", student), ("carol", deleted_third)):
        (folder / name).mkdir()
        nbformat.write(notebook, folder / name / f"{chapter}.ipynb")
    started = nbformat.read(classroom.STUDENT_DIR / f"{chapter}.ipynb", as_version=4)  # code written above the stub's raise
    first = classroom.open_exercise_cells(started)[1]
    first.source = first.source.replace(classroom.STUB_RAISE, "steps = 170  # my answer\n" + classroom.STUB_RAISE)
    (folder / "eve\n## injected heading").mkdir()
    nbformat.write(started, folder / "eve\n## injected heading" / f"{chapter}.ipynb")
    (folder / "dave").mkdir()
    (folder / "dave" / "05_transfer_learning_gradcam.ipynb").write_text("not a notebook")
    rows = classroom.grade(folder, out, classroom.Options(sandbox=False))
    marks = {(r["student"], r["exercise"]): (r["result"], r["visible_check"]) for r in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))}
    return rows, marks, (out / "answers.md").read_text(), ran


def test_open_answers_are_marked_read_or_missing(open_answers):
    rows, marks, _, _ = open_answers
    assert {marks["alice", f"exercise {n}"][0] for n in (1, 2, 3, 4)} == {"READ"}
    assert {marks["bob", f"exercise {n}"] for n in (1, 2, 3, 4)} == {("MISSING", "not answered")}
    assert [marks["carol", f"exercise {n}"][0] for n in (1, 2, 3, 4)] == ["READ", "READ", "MISSING", "READ"]
    assert marks["carol", "exercise 3"][1] == "cell deleted"
    assert [marks["eve\n## injected heading", f"exercise {n}"][0] for n in (1, 2)] == ["READ", "MISSING"]
    dave = next(r for r in rows if r["student"] == "dave")
    assert dave["chapter"] == "05_transfer_learning_gradcam" and "not a readable notebook" in " ".join(dave["problems"])
    assert {e["visible"] for e in dave["exercises"].values()} == {"not read (see problems)"} and len(dave["exercises"]) == 3


def test_open_answers_are_collected_under_each_solution_and_never_run(open_answers):
    _, _, answers, ran = open_answers
    assert not ran.exists(), "an answer was executed"
    assert answers.count("## 04_train_and_evaluate, exercise ") == 4
    exercise_1 = answers.split("\n## 04_train_and_evaluate, exercise 1")[1].split("\n## ")[0]
    assert "**Solution**" in exercise_1 and "steps_per_epoch = math.ceil(1080" in exercise_1
    assert exercise_1.count("steps_per_epoch = math.ceil(1080") == 3  # the solution, alice's and carol's answers
    assert "**bob** (04\\_train\\_and\\_evaluate.ipynb): not answered" in exercise_1
    # alice's hostile answer stays inside its code block: the fence is longer than any backtick run in it
    assert "\n````python\n# Exercise 2\n```\n</pre><script>" in answers
    assert "x" * 3001 not in answers and "more characters not shown" in answers
    # a student's folder name cannot add structure to the page
    assert "\n## injected heading" not in answers and "**eve \\#\\# injected heading**" not in answers
    assert "**eve ## injected heading** (04\\_train\\_and\\_evaluate.ipynb): answered" in answers


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
# The grader, on synthetic submissions: honest, wrong, cheating and hostile
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
ALIAS = "convolutional_block = ru.convolutional_block\n"
WRAPS_REFERENCE = '''def convolutional_block(X, f, filters, s=2, training=True, initializer=glorot_uniform):
    return ru.convolutional_block(X, f, filters, s=s, training=training, initializer=initializer)
'''
RETURNS_INPUT = '''def convolutional_block(X, f, filters, s=2, training=True, initializer=glorot_uniform):
    return X
'''
# Makes the notebook's own check print a pass for a block that returns its input.
TAMPER_CHECK = '''import builtins, numpy, resnets_checks
numpy.allclose = lambda *args, **kwargs: True
resnets_checks.judge_block = lambda *args, **kwargs: None
_print = builtins.print
builtins.print = lambda *args, **kwargs: _print("✓ convolutional_block passes: layers, output shapes and values match the reference.")
'''
# Replaces the grading cell's function, which the sandbox imports in the same kernel.
TAMPER_GRADER = '''import classroom_runner
classroom_runner.collect_evidence = lambda namespace, orders: print("evidence collected")
'''
MARKER = "classroom-attack-marker"
SEED = 918273645


def _hostile_cells(victim: Path, out: Path) -> list[str]:
    """One cell per attack, each ending in an error or a line the report must show."""
    return [
        # 1. the hidden variants' seed: in no process's command line or environment, and in no file it can read
        f'''import os
from pathlib import Path
class SearchDone(Exception): pass
class LeakFound(Exception): pass
places = [p for pid in os.listdir("/proc") if pid.isdigit() for p in (Path("/proc", pid, "cmdline"), Path("/proc", pid, "environ"))]
places += [p for top in ("/home", "/opt", "/tmp") for p in Path(top).rglob("*") if p.is_file()]
for place in places:
    try:
        if str({SEED // 1000} * 1000 + {SEED % 1000}).encode() in place.read_bytes():  # the seed, not written out here
            raise LeakFound(str(place))
    except OSError:
        pass
raise SearchDone(f"searched {{len(places)}} places")''',
        # 2. another student's notebook: read it, then overwrite it
        f"print(open({str(victim)!r}).read()[:100])",
        f"open({str(victim)!r}, 'w').write('{{}}')",
        # 3. the checks' references and the grader's own code
        "import resnets_checks\nresnets_checks.BLOCKS_REFERENCE.write_text('{}')",
        f"open({str(ROOT / 'classroom.py')!r}, 'a').write('\\nraise SystemExit')",
        # 4. the network
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=3)",
        # 5. a detached process that outlives the cell and the grading, then rewrites the reports
        f'''import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(8); open({str(out / 'grades.md')!r}, 'w').write('rewritten') # {MARKER}"],
                 start_new_session=True)''',
        # 6. memory: reserve 6 GiB (never touched, so harmless even without a limit)
        "import numpy\nbig = numpy.empty(6 * 2**30, dtype=numpy.uint8)",
        # 7. processes: more than the limit
        f'''import subprocess
children = [subprocess.Popen(["sleep", "20"]) for _ in range(2000)]  # {MARKER}''',
        # 8. a file larger than the limit (sparse: it costs no disk)
        "with open('big.bin', 'wb') as f:\n    f.seek(2**30)\n    f.write(b'x')",
    ]


def _submission(chapter, replace_function=None, solved=True, transform=None, extra_cells=()):
    student = nbformat.read(classroom.STUDENT_DIR / f"{chapter}.ipynb", as_version=4)
    notebook = classroom.substitute_solutions(student, nbformat.read(classroom.SOLVED_DIR / f"{chapter}.ipynb", as_version=4)) if solved else student
    if replace_function:
        cell = next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith("def "))
        cell.source = replace_function
    if transform:
        transform(notebook)
    at = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and c.source.startswith(("def ", "convolutional_block =")))
    for offset, source in enumerate(extra_cells):
        notebook.cells.insert(at + offset, nbformat.v4.new_code_cell(source))
    return notebook


def _wrong_stage_4(notebook):
    cell = next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith("def ResNet50"))
    assert "for _ in range(5):" in cell.source
    cell.source = cell.source.replace("for _ in range(5):", "for _ in range(4):")


def _tracked_files():
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    return {name: hashlib.sha256((ROOT / name).read_bytes()).hexdigest() for name in names if name and (ROOT / name).is_file()}


def _marked_processes():
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if MARKER.encode() in (entry / "cmdline").read_bytes():
                    found.append(entry.name)
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if sys.platform != "linux":
        pytest.skip("the grader's sandbox (bubblewrap) exists on Linux only; on Linux a missing bwrap fails with the install hint")
    folder = tmp_path_factory.mktemp("submissions")
    out = tmp_path_factory.mktemp("grades")
    victim = folder / "victim" / "02_convolutional_block.ipynb"
    submissions = {
        "correct": {"02_convolutional_block": _submission("02_convolutional_block"), "03_resnet50": _submission("03_resnet50")},
        "partly_correct": {"02_convolutional_block": _submission("02_convolutional_block"), "03_resnet50": _submission("03_resnet50", transform=_wrong_stage_4)},
        "victim": {"02_convolutional_block": _submission("02_convolutional_block")},
        "hard_coded": {"02_convolutional_block": _submission("02_convolutional_block", HARD_CODED)},
        "crashing": {"02_convolutional_block": _submission("02_convolutional_block", CRASHING)},
        "endless_loop": {"02_convolutional_block": _submission("02_convolutional_block", ENDLESS)},
        "alias": {"02_convolutional_block": _submission("02_convolutional_block", ALIAS)},
        "wraps_reference": {"02_convolutional_block": _submission("02_convolutional_block", WRAPS_REFERENCE)},
        "tampers_with_check": {"02_convolutional_block": _submission("02_convolutional_block", RETURNS_INPUT, extra_cells=[TAMPER_CHECK])},
        "tampers_with_grader": {"02_convolutional_block": _submission("02_convolutional_block", RETURNS_INPUT, extra_cells=[TAMPER_GRADER])},
        "hostile": {"02_convolutional_block": _submission("02_convolutional_block", extra_cells=_hostile_cells(victim, out))},
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
    victim_before, tracked_before = victim.read_bytes(), _tracked_files()
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "classroom", "grade", str(folder), "--out", str(out), "--cell-timeout", "20", "--timeout", "240",
         "--variant-seed", str(SEED), "--jobs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    seconds = time.perf_counter() - start
    assert completed.returncode == 0, completed.stderr
    reports = {name: (out / name).read_bytes() for name in ("grades.md", "grades.csv", "grades.json")}
    time.sleep(10)  # the detached process would rewrite a report after 8 s
    effects = {
        "victim_unchanged": victim.read_bytes() == victim_before,
        "tracked_changed": [name for name, digest in _tracked_files().items() if tracked_before.get(name) != digest],
        "reports_unchanged": all((out / name).read_bytes() == data for name, data in reports.items()),
        "marked_processes": _marked_processes(),
    }
    rows = json.loads((out / "grades.json").read_text())
    return {(row["student"], row["chapter"]): row for row in rows}, out, seconds, completed.stdout, effects


def _problems(rows, student, chapter="02_convolutional_block"):
    return " | ".join(rows[student, chapter]["problems"])


def _entry(rows, student):
    return rows[student, "02_convolutional_block"]["exercises"]["convolutional_block"]


def test_grader_passes_the_correct_submissions(graded):
    rows, *_ = graded
    for student, chapter, function in (("correct", "02_convolutional_block", "convolutional_block"), ("correct", "03_resnet50", "ResNet50"),
                                       ("victim", "02_convolutional_block", "convolutional_block")):
        entry = rows[student, chapter]["exercises"][function]
        assert classroom.passed(entry), entry
        assert entry["hidden_passed"] == entry["hidden_total"] >= 2
        assert rows[student, chapter]["problems"] == []


def test_grader_marks_the_partly_correct_submission_exercise_by_exercise(graded):
    rows, *_ = graded
    assert classroom.passed(rows["partly_correct", "02_convolutional_block"]["exercises"]["convolutional_block"])
    wrong = rows["partly_correct", "03_resnet50"]["exercises"]["ResNet50"]
    assert not classroom.passed(wrong)
    # the check's own message names the stage that lacks a block
    assert wrong["visible"].startswith("failed: stage 4 has 1 convolutional block and 4 identity blocks; it needs")


@pytest.mark.parametrize("student", ["alias", "wraps_reference", "hard_coded"])
def test_an_answer_taken_from_the_reference_fails_with_its_line(graded, student):
    rows, *_ = graded
    assert not classroom.passed(_entry(rows, student))
    assert _entry(rows, student)["hidden_passed"] == 0
    assert "uses the reference implementation: `convolutional_block`" in _problems(rows, student), _problems(rows, student)


def test_a_check_tampered_with_in_the_kernel_does_not_change_the_verdict(graded):
    rows, *_ = graded
    entry = _entry(rows, "tampers_with_check")
    assert not classroom.passed(entry) and entry["visible"].startswith("failed: ")
    assert ("tampered with the checking code or the grader: the notebook's check printed that `convolutional_block` passes"
            in _problems(rows, "tampers_with_check")), _problems(rows, "tampers_with_check")


def test_a_replaced_grading_function_is_reported_as_tampering(graded):
    rows, *_ = graded
    assert not classroom.passed(_entry(rows, "tampers_with_grader"))
    assert "tampered with the checking code or the grader: evidence.json is missing" in _problems(rows, "tampers_with_grader")


def test_a_hostile_submission_is_contained_and_every_attack_has_its_line(graded):
    rows, out, seconds, stdout, effects = graded
    problems = _problems(rows, "hostile")
    expected = [
        "raised SearchDone: searched",           # the seed is nowhere it can look...
        "raised FileNotFoundError",              # ...and other students' notebooks are not there to read or overwrite
        "wrote outside its folder (blocked)",    # the library (reference/) is read-only
        "Network is unreachable",
        "started processes that outlived their cell",
        f"exceeded the memory limit ({classroom.DEFAULT_MEMORY_GIB:g} GiB per process)",
        f"exceeded the process limit ({classroom.DEFAULT_PROCESSES} processes and threads)",
        "File too large",
    ]
    missing = [line for line in expected if line not in problems]
    assert not missing, f"{missing} not in: {problems}"
    assert "LeakFound" not in problems
    assert classroom.passed(_entry(rows, "hostile"))  # its function is honest: the attacks cost it nothing but the lines
    assert effects["victim_unchanged"] and classroom.passed(_entry(rows, "victim"))
    assert effects["tracked_changed"] == [], "a submission changed the repository"
    assert effects["reports_unchanged"], "a process of a submission rewrote the reports after grading"
    assert effects["marked_processes"] == [], "a process of a submission outlived its grading"


def test_a_crashing_submission_gets_a_report_line(graded):
    rows, *_ = graded
    assert "kernel died" in _problems(rows, "crashing")
    assert not classroom.passed(_entry(rows, "crashing"))


def test_an_endless_loop_is_stopped_and_reported(graded):
    rows, *_ = graded
    assert "was stopped (an endless loop?)" in _problems(rows, "endless_loop")
    entry = _entry(rows, "endless_loop")
    assert "did not return within" in entry["visible"]
    assert not classroom.passed(entry)
    assert rows["endless_loop", "02_convolutional_block"]["seconds"] < 240  # bounded by the limits, not by the loop


def test_renamed_function_and_deleted_cells_are_reported(graded):
    rows, *_ = graded
    row = rows["renamer", "02_convolutional_block"]
    assert any("cell(s) of the handed-out notebook were deleted" in p for p in row["problems"])
    assert "found `convolutional_blok`: renamed?" in row["exercises"]["convolutional_block"]["visible"]


def test_the_three_reports_agree(graded):
    rows, out, seconds, stdout, effects = graded
    verdicts = [(row["student"], function, "PASS" if classroom.passed(entry) else "FAIL")
                for row in json.loads((out / "grades.json").read_text()) for function, entry in row["exercises"].items()]
    with open(out / "grades.csv", newline="") as f:
        assert [(r["student"], r["exercise"], r["result"]) for r in csv.DictReader(f)] == verdicts
    table = (out / "grades.md").read_text().splitlines()
    assert table[0].startswith("| student | notebook | exercise | result |")
    assert [tuple(c.strip().strip("`") for c in (line.split(" | ")[0][2:], *line.split(" | ")[2:4])) for line in table[2:]] == verdicts
    assert len(verdicts) == 14 and f"{len(rows)} notebook(s) graded" in stdout
    print(f"graded {len(rows)} notebooks in {seconds:.0f} s, 2 at a time")


def test_grader_refuses_a_missing_folder(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "classroom", "grade", str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 1 and "does not exist" in completed.stderr


def test_grader_refuses_to_grade_without_the_sandbox_unless_told(tmp_path, monkeypatch):
    nbformat.write(_submission("02_convolutional_block"), tmp_path / "eve_02_convolutional_block.ipynb")
    monkeypatch.setattr(classroom.shutil, "which", lambda name: None)
    with pytest.raises(classroom.ClassroomError, match=r"sudo apt install bubblewrap(.|\n)*--no-sandbox"):
        classroom.grade(tmp_path, tmp_path / "out")
    rows = classroom.grade(tmp_path, tmp_path / "out", classroom.Options(sandbox=False, cell_timeout=30))
    assert classroom.passed(rows[0]["exercises"]["convolutional_block"]), rows


def test_a_broken_or_foreign_notebook_gets_a_report_line(tmp_path):
    (tmp_path / "bob_02_convolutional_block.ipynb").write_text("{ not json")
    shutil.copy(ROOT / "notebooks" / "00_signs_dataset.ipynb", tmp_path / "bob_00_signs_dataset.ipynb")
    rows = classroom.grade(tmp_path, tmp_path / "out", classroom.Options(sandbox=False))  # refused before anything runs
    problems = {Path(r["notebook"]).name: r["problems"] for r in rows}
    assert "not an exercise notebook" in problems["bob_00_signs_dataset.ipynb"][0]
    assert "not a readable notebook" in problems["bob_02_convolutional_block.ipynb"][0]


@pytest.mark.parametrize("source, found", [
    ("identity_block = ru.identity_block", "is not written in the notebook but taken from elsewhere: `identity_block = ru.identity_block`"),
    ("from resnets_utils import identity_block", "taken from elsewhere: `from resnets_utils import identity_block`"),
    ("def identity_block(X, f, filters):\n    return getattr(ru, 'identity_block')(X, f, filters)", "calls the reference implementation: `getattr(ru, 'identity_block')`"),
    ("def identity_block(X, f, filters):\n    import resnets_utils\n    return resnets_utils.identity_block(X, f, filters)",
     "calls the reference implementation: `resnets_utils.identity_block`"),
    ("def identity_block(X, f, filters):\n    return X\nidentity_block = ru.identity_block", "taken from elsewhere"),
    ("identity_block = ru.identity_block\ndef identity_block(X, f, filters):\n    return X", None),
    ('def identity_block(X, f, filters):\n    """identity_block, as in the course"""\n    return X', None),
])
def test_reference_uses_are_read_from_the_code(source, found):
    cells = [nbformat.v4.new_code_cell("%matplotlib inline\nimport resnets_utils as ru"), nbformat.v4.new_code_cell(source)]
    uses = classroom.reference_uses(nbformat.v4.new_notebook(cells=cells), "01_identity_block")
    assert (found in uses.get("identity_block", "")) if found else uses == {}, uses


def test_the_graded_copy_of_resnets_utils_hides_only_the_chapters_answers():
    source = classroom.hidden_reference_source("02_convolutional_block")
    hidden = source.split("def convolutional_block(")[1].split("\ndef ")[0]
    assert "ReferenceHidden(" in hidden and "X_shortcut" not in hidden
    assert "X_shortcut = X" in source  # identity_block stays: chapter 02 uses it
    assert "class ReferenceHidden(RuntimeError)" in source
    compile(source, "resnets_utils.py", "exec")
