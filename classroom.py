"""Classroom edition: student notebooks made from the solved chapters, and a grader for instructors.

**Student notebooks** (``make exercises``). In the solved chapters each exercise's answer sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION``, nbgrader's markers. ``write_exercises`` passes every
chapter that has such a region through nbconvert preprocessors: ``StubSolutions`` replaces each region
with a hint of its length and ``raise NotImplementedError()``, ``ClearOutputPreprocessor`` drops the
outputs, ``ClearMetadataPreprocessor`` the metadata. Markdown, check cells and cell ids are kept. The
results in ``exercises/`` are committed; a test fails when they differ from what this module writes.

**Grader** (``make grade SUBMISSIONS=folder``). Every submitted notebook runs headless in its own
kernel, in its own process group, with a time limit per cell and per notebook. A grading cell appended
at the end calls, for each exercise function, the check the notebook itself uses, then the same
function on hidden variants (other input shapes, filters, windows, strides, numbers of classes,
drawn from ``--variant-seed``) against ``resnets_utils``' reference implementation, so memorised
outputs do not pass. Crashes, endless loops, a dead kernel, deleted cells and renamed functions each
become a line in the report, never a hang or a crash of the grader. Reports: ``grades.md`` (a table to
read), ``grades.csv`` and ``grades.json``.

    python -m classroom exercises              # write exercises/ from notebooks/
    python -m classroom exercises --check      # exit 1 if exercises/ is stale
    python -m classroom grade submissions/     # a folder (one sub-folder per student) or one .ipynb
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import difflib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ClearMetadataPreprocessor, ClearOutputPreprocessor, Preprocessor

ROOT = Path(__file__).resolve().parent
SOLVED_DIR = ROOT / "notebooks"
STUDENT_DIR = ROOT / "exercises"

# Chapter (notebook stem) -> the functions a student writes in it, and the check cell's function.
EXERCISES = {
    "01_identity_block": {"identity_block": "check_identity_block"},
    "02_convolutional_block": {"convolutional_block": "check_convolutional_block"},
    "03_resnet50": {"ResNet50": "check_resnet50"},
}

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB_HINT = "# YOUR CODE HERE"
STUB_RAISE = "raise NotImplementedError()"
GRADE_MARKER = "CLASSROOM-GRADE "
DEFAULT_CELL_TIMEOUT_S = 120
DEFAULT_NOTEBOOK_TIMEOUT_S = 600


class ClassroomError(RuntimeError):
    """A notebook or folder cannot be used as given; the message says why."""


# ----------------------------------------------------------------------------------------------------
# Student notebooks
# ----------------------------------------------------------------------------------------------------
def stub_source(source: str, where: str = "cell") -> str:
    """``source`` with each solution region replaced by a stub: a hint of its length and ``raise NotImplementedError()``."""
    lines, out, region = source.split("\n"), [], None
    for number, line in enumerate(lines, 1):
        marker = line.strip()
        if marker == BEGIN:
            if region is not None:
                raise ClassroomError(f"{where}, line {number}: {BEGIN} inside another solution region")
            region, indent = [], line[: len(line) - len(line.lstrip())]
        elif marker == END:
            if region is None:
                raise ClassroomError(f"{where}, line {number}: {END} without {BEGIN}")
            code_lines = sum(1 for r in region if r.strip() and not r.strip().startswith("#"))
            out += [f"{indent}{STUB_HINT}: about {code_lines} lines (see the hints above)", f"{indent}{STUB_RAISE}"]
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise ClassroomError(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


class StubSolutions(Preprocessor):
    """nbconvert preprocessor: replace every ``### BEGIN/END SOLUTION`` region of code cells with a stub."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and BEGIN in cell.source:
            cell.source = stub_source(cell.source, f"{resources.get('name', 'notebook')}, cell {index}")
        return cell, resources


def has_solutions(notebook) -> bool:
    return any(cell.cell_type == "code" and BEGIN in cell.source for cell in notebook.cells)


def student_notebook(solved_path: Path):
    """The student version of a solved chapter, as an ``nbformat`` notebook."""
    notebook = nbformat.read(solved_path, as_version=4)
    resources = {"name": solved_path.name}
    for preprocessor in (
        ClearOutputPreprocessor(),
        StubSolutions(),
        ClearMetadataPreprocessor(preserve_nb_metadata_mask={("kernelspec",), ("language_info", "name")}),
    ):
        notebook, resources = preprocessor.preprocess(notebook, resources)
    banner = nbformat.v4.new_markdown_cell(
        f"*Student edition of `notebooks/{solved_path.name}`, generated by `make exercises`: write your code where "
        f"a cell says `{STUB_HINT}`, then run the check cell below it.*"
    )
    banner.id = "student-edition"
    notebook.cells.insert(0, banner)
    return notebook


def write_exercises(solved_dir: Path = SOLVED_DIR, out_dir: Path = STUDENT_DIR) -> list[Path]:
    """Write the student version of every chapter in ``solved_dir`` that has solution regions; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for solved in sorted(solved_dir.glob("[0-9][0-9]_*.ipynb")):
        if not has_solutions(nbformat.read(solved, as_version=4)):
            continue
        target = out_dir / solved.name
        text = nbformat.writes(student_notebook(solved)) + "\n"
        if not target.is_file() or target.read_text() != text:
            temporary = target.with_name(f".{target.name}.partial")
            temporary.write_text(text)
            os.replace(temporary, target)
        written.append(target)
    return written


def stale_exercises(solved_dir: Path = SOLVED_DIR, out_dir: Path = STUDENT_DIR) -> list[str]:
    """Names of student notebooks that are missing or differ from what ``write_exercises`` would write."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = write_exercises(solved_dir, Path(scratch))
        stale = [p.name for p in fresh if not (out_dir / p.name).is_file() or (out_dir / p.name).read_bytes() != p.read_bytes()]
        extra = sorted({p.name for p in out_dir.glob("*.ipynb")} - {p.name for p in fresh})
    return stale + [f"{name} (no chapter with solutions makes it)" for name in extra]


def solution_regions(notebook) -> list[str]:
    """The code of every solution region in ``notebook``, markers included, in order."""
    regions = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            regions += re.findall(rf"^[ \t]*{re.escape(BEGIN)}\n.*?^[ \t]*{re.escape(END)}[ \t]*$", cell.source, flags=re.M | re.S)
    return regions


def substitute_solutions(student, solved):
    """A copy of the ``student`` notebook with each stub replaced by the matching solution region of ``solved``."""
    regions = iter(solution_regions(solved))
    stub = re.compile(rf"^[ \t]*{re.escape(STUB_HINT)}.*\n[ \t]*{re.escape(STUB_RAISE)}[ \t]*$", flags=re.M)
    notebook = copy.deepcopy(student)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = stub.sub(lambda _: next(regions), cell.source)
    return notebook


# ----------------------------------------------------------------------------------------------------
# Grading inside the student's kernel
# ----------------------------------------------------------------------------------------------------
def hidden_variants(function: str, seed: int) -> list[dict]:
    """Arguments the visible checks never use, drawn from ``seed``: other shapes, windows, filters, strides, classes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    variants = []
    for _ in range(3):
        height, width = (int(v) for v in rng.integers(5, 10, size=2))
        channels, f1, f2 = (int(v) for v in rng.integers(2, 9, size=3))
        training = bool(rng.integers(2))
        if function == "identity_block":
            variants.append({"shape": (2, height, width, channels), "f": int(rng.choice([1, 3, 5])), "filters": [f1, f2, channels], "training": training})
        elif function == "convolutional_block":
            variants.append({"shape": (2, height, width, channels), "f": int(rng.choice([1, 3, 5])), "filters": [f1, f2, int(rng.integers(2, 9))],
                             "s": int(rng.choice([1, 2, 3])), "training": training})
    if function == "ResNet50":
        side = int(rng.choice([96, 128]))  # 64 is the visible size; the 2x2 average pooling needs at least 96 here
        variants = [{"input_shape": (side, side, int(rng.choice([1, 3]))), "classes": int(rng.integers(2, 12))},
                    {"input_shape": (64, 64, 3), "classes": int(rng.integers(7, 12))}]
    return variants


@contextlib.contextmanager
def _time_limit(seconds: int, what: str):
    """Raise ``TimeoutError`` in the main thread every ``seconds`` while the block runs (Unix).

    It repeats, so code that catches the first one (a check reporting the student's error) and calls
    the endless function again is stopped again."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"{what} did not return within {seconds} s (an endless loop?)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _seeded_initializer(seed=0):
    import keras

    return keras.initializers.GlorotUniform(seed=seed + 7)


def _hidden_block_case(function: str, student, case: dict, call_timeout: int) -> str | None:
    """Run ``student`` and the reference on one hidden case; ``None`` if they agree, else what differs."""
    import numpy as np

    import resnets_utils

    reference = getattr(resnets_utils, function)
    kwargs = {k: v for k, v in case.items() if k != "shape"}
    X = np.random.default_rng(1).normal(size=case["shape"]).astype("float32")
    expected = np.asarray(reference(X, initializer=_seeded_initializer, **kwargs))
    try:
        with _time_limit(call_timeout, function):
            got = student(X, initializer=_seeded_initializer, **kwargs)
        got = np.asarray(got)
    except Exception as exc:  # noqa: BLE001 - the student's error is the finding
        return f"raised {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
    call = f"{function}(X of shape {case['shape']}, {', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    if got.shape != expected.shape:
        return f"{call} returned shape {got.shape}, expected {expected.shape}"
    if not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
        return f"{call}: values differ from the reference by up to {float(np.max(np.abs(got - expected))):.3g}"
    return None


def _hidden_model_case(student, case: dict, call_timeout: int) -> str | None:
    import resnets_checks
    import resnets_utils

    call = f"ResNet50(input_shape={case['input_shape']}, classes={case['classes']})"
    try:
        with _time_limit(call_timeout, "ResNet50"):
            model = student(**case)
        resnets_checks.compare_layer_summaries(resnets_checks.layer_summary(model), resnets_checks.layer_summary(resnets_utils.ResNet50(**case)))
    except resnets_checks.CheckFailed as exc:
        return f"{call}: {str(exc).splitlines()[0]}"
    except Exception as exc:  # noqa: BLE001
        return f"{call} raised {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
    return None


def grade_in_kernel(namespace: dict, chapter: str, variant_seed: int = 0, call_timeout: int = 30) -> dict:
    """Grade the exercise functions of ``chapter`` found in ``namespace`` (the student's globals).

    Every call of the student's code is stopped after ``call_timeout`` seconds.
    For each function: the notebook's own check (``visible``), then ``hidden_variants`` against the
    reference. Returns ``{function: {"visible": ..., "hidden_passed": n, "hidden_total": n, "notes": [...]}}``.
    """
    import resnets_checks

    results = {}
    for function, check_name in EXERCISES[chapter].items():
        entry = {"visible": None, "hidden_passed": 0, "hidden_total": 0, "notes": []}
        student = namespace.get(function)
        if not callable(student):
            defined = sorted(name for name, value in namespace.items() if callable(value) and getattr(value, "__module__", None) == "__main__")
            close = difflib.get_close_matches(function, defined, n=1, cutoff=0.6)
            entry["visible"] = f"missing: `{function}` is not defined" + (f"; found `{close[0]}`: renamed?" if close else " (its cell deleted, or renamed?)")
            results[function] = entry
            continue
        printed = io.StringIO()
        try:
            with _time_limit(call_timeout, f"the check of {function}"), contextlib.redirect_stdout(printed):
                getattr(resnets_checks, check_name)(student)
            entry["visible"] = "passed"
        except resnets_checks.CheckFailed as exc:
            entry["visible"] = f"failed: {str(exc).splitlines()[0]}"
        except Exception as exc:  # noqa: BLE001
            entry["visible"] = f"failed: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
        variants = hidden_variants(function, variant_seed)
        for case in variants:
            if function == "ResNet50":
                problem = _hidden_model_case(student, case, call_timeout)
            else:
                problem = _hidden_block_case(function, student, case, call_timeout)
            if problem is None:
                entry["hidden_passed"] += 1
            else:
                entry["notes"].append(f"hidden variant: {problem}")
        entry["hidden_total"] = len(variants)
        results[function] = entry
    return results


def call_timeout_for(cell_timeout: int) -> int:
    """Seconds one call of a student's function may take while grading: half a cell's limit, at least 10."""
    return max(10, cell_timeout // 2)


def _grading_cell(chapter: str, variant_seed: int, call_timeout: int):
    source = (
        "import json as _json, classroom as _classroom\n"
        f"print({GRADE_MARKER!r} + _json.dumps(_classroom.grade_in_kernel(globals(), {chapter!r}, {variant_seed}, {call_timeout})))"
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.id = "classroom-grading"
    return cell


# ----------------------------------------------------------------------------------------------------
# Running one submission (in a child process) and a folder of them
# ----------------------------------------------------------------------------------------------------
def chapter_of(path: Path) -> str | None:
    """The exercise chapter a submitted notebook belongs to, from its file name (e.g. ``alice_01_identity_block.ipynb``)."""
    return next((chapter for chapter in EXERCISES if chapter in path.stem), None)


def execute_submission(path: Path, chapter: str, cell_timeout: int, variant_seed: int) -> dict:
    """Run ``path`` plus the grading cell in a fresh kernel; return what happened (called in a child process)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    notebook = nbformat.read(path, as_version=4)
    call_timeout = call_timeout_for(cell_timeout)
    notebook.cells.append(_grading_cell(chapter, variant_seed, call_timeout))
    calls = 2 + len(hidden_variants(next(iter(EXERCISES[chapter])), variant_seed))  # the check may call twice
    client = NotebookClient(
        notebook, timeout=cell_timeout, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
        record_timing=False, resources={"metadata": {"path": str(STUDENT_DIR)}},
        # the grading cell makes several calls, each with its own limit
        timeout_func=lambda cell: calls * call_timeout + 60 if cell.get("id") == "classroom-grading" else cell_timeout,
    )
    outcome = {"problems": [], "grades": None}
    try:
        client.execute()
    except DeadKernelError:
        outcome["problems"].append("the kernel died (the code exited Python or ran out of memory)")
    except CellTimeoutError as exc:
        outcome["problems"].append(f"a cell ran past {cell_timeout} s and could not be interrupted ({exc})")
    except Exception as exc:  # noqa: BLE001 - anything nbclient raises is a line in the report
        outcome["problems"].append(f"could not run the notebook: {type(exc).__name__}: {str(exc)[:200]}")
    code_number = 0
    for cell in notebook.cells:
        if cell.cell_type != "code" or cell.get("id") == "classroom-grading":
            continue
        code_number += 1
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                if output.ename == "KeyboardInterrupt":
                    outcome["problems"].append(f"code cell {code_number} ran past {cell_timeout} s and was stopped (an endless loop?)")
                elif output.ename != "CheckFailed":  # a failed check is graded below, not a crash
                    outcome["problems"].append(f"code cell {code_number} raised {output.ename}: {output.evalue.strip()[:160]}")
    grading = notebook.cells[-1]
    for output in grading.get("outputs", []):
        if output.output_type == "stream" and GRADE_MARKER in output.text:
            outcome["grades"] = json.loads(output.text.split(GRADE_MARKER, 1)[1].splitlines()[0])
        elif output.output_type == "error":
            outcome["problems"].append(f"grading stopped: {output.ename}: {output.evalue.strip()[:160]}")
    return outcome


def deleted_cells(submission: Path, chapter: str) -> int:
    """How many cells of the handed-out notebook (by cell id) are not in the submission."""
    handed_out = STUDENT_DIR / f"{chapter}.ipynb"
    if not handed_out.is_file():
        return 0
    ids = {cell.get("id") for cell in nbformat.read(submission, as_version=4).cells}
    return sum(1 for cell in nbformat.read(handed_out, as_version=4).cells if cell.get("id") not in ids)


def grade_submission(path: Path, cell_timeout: int = DEFAULT_CELL_TIMEOUT_S, notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT_S,
                     variant_seed: int = 0) -> dict:
    """Grade one notebook in a child process that is killed (with its kernel) after ``notebook_timeout`` s."""
    chapter = chapter_of(path)
    row = {"notebook": str(path), "chapter": chapter, "problems": [], "exercises": {}}
    if chapter is None:
        row["problems"].append(f"not an exercise notebook: its name contains none of {', '.join(EXERCISES)}")
        return row
    try:
        nbformat.validate(nbformat.read(path, as_version=4))
    except Exception as exc:  # noqa: BLE001 - unreadable JSON, not a notebook, invalid schema
        row["problems"].append(f"not a readable notebook: {type(exc).__name__}: {str(exc)[:160]}")
        return _ungraded(row, chapter)
    missing = deleted_cells(path, chapter)
    if missing:
        row["problems"].append(f"{missing} cell(s) of the handed-out notebook were deleted")
    with tempfile.TemporaryDirectory() as scratch:
        result_path = Path(scratch) / "result.json"
        command = [sys.executable, "-m", "classroom", "_execute", str(path), str(result_path), "--chapter", chapter,
                   "--cell-timeout", str(cell_timeout), "--variant-seed", str(variant_seed)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, cwd=ROOT)
        try:
            _, stderr = process.communicate(timeout=notebook_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the child and the kernel it started
            process.communicate()
            row["problems"].append(f"did not finish within {notebook_timeout} s; stopped")
            return _ungraded(row, chapter)
        if not result_path.is_file():
            row["problems"].append(f"the grader's child process failed: {stderr.decode(errors='replace').strip()[-300:]}")
            return _ungraded(row, chapter)
        outcome = json.loads(result_path.read_text())
    row["problems"] += outcome["problems"]
    if outcome["grades"] is None:
        return _ungraded(row, chapter)
    row["exercises"] = outcome["grades"]
    return row


def _ungraded(row: dict, chapter: str) -> dict:
    row["exercises"] = {f: {"visible": "not graded (see problems)", "hidden_passed": 0, "hidden_total": 0, "notes": []} for f in EXERCISES[chapter]}
    return row


def passed(entry: dict) -> bool:
    return entry["visible"] == "passed" and entry["hidden_total"] > 0 and entry["hidden_passed"] == entry["hidden_total"]


def student_of(path: Path, root: Path) -> str:
    """A sub-folder per student (``alice/01_identity_block.ipynb``), or the file name's prefix (``alice_01_identity_block``)."""
    relative = path.relative_to(root) if root.is_dir() else Path(path.name)
    if len(relative.parts) > 1:
        return relative.parts[0]
    chapter = chapter_of(path)
    prefix = path.stem.split(chapter)[0].strip("_- ") if chapter else ""
    return prefix or path.stem


def grade(target: Path, out_dir: Path, **options) -> list[dict]:
    """Grade one notebook or every ``.ipynb`` under a folder; write ``grades.{md,csv,json}`` to ``out_dir``."""
    target = Path(target)
    if target.is_file():
        notebooks = [target]
    elif target.is_dir():
        notebooks = sorted(p for p in target.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        if not notebooks:
            raise ClassroomError(f"{target} holds no .ipynb files.")
    else:
        raise ClassroomError(f"{target} does not exist; give a submitted notebook or a folder of them.")
    rows = []
    for path in notebooks:
        start = time.perf_counter()
        row = grade_submission(path, **options)
        row["student"] = student_of(path, target)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(f"  {row['student']:<16} {path.name:<36} {_summary(row)} ({row['seconds']:.0f} s)", flush=True)
    write_reports(rows, out_dir)
    return rows


def _summary(row: dict) -> str:
    marks = [f"{f} {'PASS' if passed(e) else 'FAIL'}" for f, e in row["exercises"].items()]
    return ", ".join(marks) + (f"; {len(row['problems'])} problem(s)" if row["problems"] else "")


def write_reports(rows: list[dict], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "grades.json").write_text(json.dumps(rows, indent=1) + "\n")
    flat = []
    for row in rows:
        for function, entry in row["exercises"].items() or [(None, None)]:
            flat.append(
                {
                    "student": row["student"], "notebook": Path(row["notebook"]).name, "exercise": function or "",
                    "result": ("PASS" if passed(entry) else "FAIL") if entry else "FAIL",
                    "visible_check": entry["visible"] if entry else "",
                    "hidden_variants": f"{entry['hidden_passed']}/{entry['hidden_total']}" if entry else "",
                    "notes": "; ".join((entry["notes"] if entry else []) + row["problems"]),
                }
            )
    with open(out_dir / "grades.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat[0]) if flat else ["student"])
        writer.writeheader()
        writer.writerows(flat)
    lines = ["| student | notebook | exercise | result | visible check | hidden variants | notes |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in flat:
        cells = [r["student"], r["notebook"], f"`{r['exercise']}`", r["result"], r["visible_check"], r["hidden_variants"], r["notes"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    (out_dir / "grades.md").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classroom", description="Student notebooks and grading for instructors.")
    commands = parser.add_subparsers(dest="command", required=True)
    exercises = commands.add_parser("exercises", help="write the student notebooks to exercises/")
    exercises.add_argument("--check", action="store_true", help="only check that exercises/ is up to date (exit 1 if not)")
    grading = commands.add_parser("grade", help="grade a submitted notebook or a folder of them")
    grading.add_argument("submissions", type=Path, help="a .ipynb, or a folder (one sub-folder per student, or files named <student>_<chapter>.ipynb)")
    grading.add_argument("--out", type=Path, default=ROOT / "runs" / "grades", help="where to write grades.md/.csv/.json (default runs/grades)")
    grading.add_argument("--cell-timeout", type=int, default=DEFAULT_CELL_TIMEOUT_S, help=f"seconds per cell (default {DEFAULT_CELL_TIMEOUT_S})")
    grading.add_argument("--timeout", type=int, default=DEFAULT_NOTEBOOK_TIMEOUT_S, help=f"seconds per notebook (default {DEFAULT_NOTEBOOK_TIMEOUT_S})")
    grading.add_argument("--variant-seed", type=int, default=0, help="draws the hidden variants; pick your own for a class")
    child = commands.add_parser("_execute")  # internal: one submission, in its own process
    child.add_argument("notebook", type=Path)
    child.add_argument("result", type=Path)
    child.add_argument("--chapter", required=True)
    child.add_argument("--cell-timeout", type=int, required=True)
    child.add_argument("--variant-seed", type=int, required=True)
    args = parser.parse_args(argv)

    if args.command == "_execute":
        outcome = execute_submission(args.notebook, args.chapter, args.cell_timeout, args.variant_seed)
        args.result.write_text(json.dumps(outcome))
        return 0
    try:
        if args.command == "exercises":
            if args.check:
                stale = stale_exercises()
                if stale:
                    print(f"exercises/ is stale: {', '.join(stale)}. Run `make exercises` and commit the result.", file=sys.stderr)
                    return 1
                print("exercises/ is up to date.")
                return 0
            for path in write_exercises():
                print(f"wrote {path.relative_to(ROOT)}")
            return 0
        if min(args.cell_timeout, args.timeout) < 1:
            parser.error("timeouts must be at least 1 second")
        print(f"Grading {args.submissions} (cell limit {args.cell_timeout} s, notebook limit {args.timeout} s):", flush=True)
        rows = grade(args.submissions, args.out, cell_timeout=args.cell_timeout, notebook_timeout=args.timeout, variant_seed=args.variant_seed)
        print(f"{len(rows)} notebook(s) graded; report: {args.out / 'grades.md'} (also grades.csv, grades.json)")
        return 0
    except ClassroomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
