"""Classroom edition: student notebooks made from the solved chapters, and a grader for instructors.

**Student notebooks** (``make exercises``). In the solved chapters each exercise's answer sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION``, nbgrader's markers. ``write_exercises`` passes every
chapter that has such a region through nbconvert preprocessors: ``StubSolutions`` replaces each region
with a hint of its length and ``raise NotImplementedError()``, ``ClearOutputPreprocessor`` drops the
outputs, ``ClearMetadataPreprocessor`` the metadata. Markdown, check cells and cell ids are kept. The
results in ``exercises/`` are committed; a test fails when they differ from what this module writes.

**Grader** (``make grade SUBMISSIONS=folder``). Every submitted notebook runs in its own bubblewrap
sandbox (``sandbox_command``: no network, its own processes only, the repository and other submissions
out of sight, an unprivileged user, limits on memory, processes, file size and time), with a copy of
``resnets_utils`` whose answers to the chapter raise ``ReferenceHidden``. A grading cell appended at the
end (``classroom_runner``) calls each exercise function on the visible check's inputs and on hidden
variants drawn from ``--variant-seed`` (other shapes, windows, filters, strides, numbers of classes) and
hands back plain data. This process judges that data against the reference with ``resnets_checks``'
judges: nothing the submission prints, patches or imports changes its verdict. The code is also read
(``reference_uses``): an exercise function that is not the student's own fails. Crashes, endless loops,
a dead kernel, memory and process limits, writes outside the scratch folder, leftover processes,
tampering, deleted cells and renamed functions each become a line in the report, never a hang or a crash
of the grader. Reports, written atomically after every sandbox has ended: ``grades.md`` (a table to
read), ``grades.csv`` and ``grades.json``.

**Open exercises** (chapters 04 and 05 end with questions answered in code). Their submissions are read,
not run: each exercise is marked READ or MISSING, and ``answers.md`` puts every student's answer (code and
saved outputs) under the solution, exercise by exercise, for the instructor to read.

    python -m classroom exercises              # write exercises/ from notebooks/
    python -m classroom exercises --check      # exit 1 if exercises/ is stale
    python -m classroom grade submissions/     # a folder (one sub-folder per student) or one .ipynb
    python -m classroom grade submissions/ --jobs 2 --variant-seed 2027
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import contextlib
import copy
import csv
import dataclasses
import difflib
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ClearMetadataPreprocessor, ClearOutputPreprocessor, Preprocessor

import hosted

ROOT = Path(__file__).resolve().parent
SOLVED_DIR = ROOT / "notebooks"
STUDENT_DIR = ROOT / "exercises"

# Chapter (notebook stem) -> the functions a student writes in it, and the check cell's function.
EXERCISES = {
    "01_identity_block": {"identity_block": "check_identity_block"},
    "02_convolutional_block": {"convolutional_block": "check_convolutional_block"},
    "03_resnet50": {"ResNet50": "check_resnet50"},
}
# Chapters that end with open exercises (d2l's style): questions answered in code, with a comment saying
# why. Nothing there can be checked automatically, so the grader does not run them (they train for
# minutes): it collects the answers, as handed in, into answers.md for the instructor to read.
OPEN_EXERCISES = ("04_train_and_evaluate", "05_transfer_learning_gradcam")
EXERCISE_HEADER = re.compile(r"\A# Exercise (\d+)[ \t]*$", re.M)  # the first line of each open exercise's cell
MAX_OPEN_NOTEBOOK_BYTES = 50 * 2**20  # chapter 04 with its figures is about 1 MB
MAX_ANSWER_OUTPUT_CHARS = 3000
MAX_ANSWER_CODE_CHARS = 20000

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
    if solved_path.stem in OPEN_EXERCISES:
        text = (f"*Student edition of `notebooks/{solved_path.name}`, generated by `make exercises`: the chapter runs as "
                f"it is; the exercises at the end are yours. Write your code where a cell says `{STUB_HINT}`, and say "
                f"why in a comment.*")
    else:
        text = (f"*Student edition of `notebooks/{solved_path.name}`, generated by `make exercises`: write your code where "
                f"a cell says `{STUB_HINT}`, then run the check cell below it.*")
    hosted.apply(notebook, f"{STUDENT_DIR.name}/{solved_path.name}")  # the badges open this notebook, not the solved one
    banner = nbformat.v4.new_markdown_cell(text)
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
# What the grader asks of a submission: hidden variants, and the answer must be the student's own
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
            variants.append({"shape": [2, height, width, channels], "f": int(rng.choice([1, 3, 5])), "filters": [f1, f2, channels], "training": training})
        elif function == "convolutional_block":
            variants.append({"shape": [2, height, width, channels], "f": int(rng.choice([1, 3, 5])), "filters": [f1, f2, int(rng.integers(2, 9))],
                             "s": int(rng.choice([1, 2, 3])), "training": training})
    if function == "ResNet50":
        side = int(rng.choice([96, 128]))  # 64 is the visible size; the 2x2 average pooling needs at least 96 here
        variants = [{"input_shape": [side, side, int(rng.choice([1, 3]))], "classes": int(rng.integers(2, 12))},
                    {"input_shape": [64, 64, 3], "classes": int(rng.integers(7, 12))}]
    return variants


def hidden_reference_source(chapter: str) -> str:
    """``resnets_utils.py`` as a submission of ``chapter`` sees it while graded: the chapter's exercise
    functions raise ``ReferenceHidden``. Everything else (data, figures, the blocks chapter 03 builds on) works."""
    tree = ast.parse((ROOT / "resnets_utils.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in EXERCISES[chapter]:
            message = (f"resnets_utils.{node.name} is hidden while grading: the grader checks the {node.name} "
                       "you write in the notebook, not the course's answer.")
            node.body = [ast.Raise(ast.Call(ast.Name("ReferenceHidden"), [ast.Constant(message)], []))]
    tree.body += ast.parse('class ReferenceHidden(RuntimeError):\n    """The answer to an exercise is not available to a submission being graded."""').body
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


_AST_LOCK = threading.Lock()


def _code_cells(notebook):
    """(code cell number, parsed module or None) for each code cell; IPython magics and shell lines are blanked."""
    for number, cell in enumerate((c for c in notebook.cells if c.cell_type == "code"), 1):
        source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
        try:
            with _AST_LOCK:  # CPython 3.11's parser is not safe in two threads at once ("recursion depth mismatch")
                tree = ast.parse(source)
        except (SyntaxError, ValueError):
            tree = None
        yield number, cell.source, tree


def reference_uses(notebook, chapter: str) -> dict[str, str]:
    """``{function: what}`` for each exercise function of ``chapter`` that the notebook does not write itself.

    Read from the code, not run: the last top-level binding of the name must be a ``def``, and that
    ``def`` must not name the reference (``ru.identity_block``, ``getattr(ru, "identity_block")``). The
    sandbox hides the reference anyway; this names the reason in the report.
    """
    found = {}
    for function in EXERCISES[chapter]:
        last = None
        for number, source, tree in _code_cells(notebook):
            if tree is None:
                continue
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and node.name == function:
                    last = (number, node, source)
                elif isinstance(node, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name) == function for a in node.names):
                    last = (number, node, source)
                elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if any(isinstance(n, ast.Name) and n.id == function for t in targets for n in ast.walk(t)):
                        last = (number, node, source)
        if last is None:
            continue  # missing altogether: the evidence says so, with a guess at a renamed function
        number, node, source = last
        text = (ast.get_source_segment(source, node) or "").splitlines()[0][:120]
        if not isinstance(node, ast.FunctionDef):
            found[function] = f"`{function}` is not written in the notebook but taken from elsewhere: `{text}` (code cell {number})"
            continue
        for inner in ast.walk(node):
            named = (isinstance(inner, ast.Attribute) and inner.attr == function) or (
                isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id in ("getattr", "__import__", "import_module")
                and any(isinstance(a, ast.Constant) and a.value in (function, "resnets_utils") for a in inner.args))
            if named:
                found[function] = f"`{function}` calls the reference implementation: `{ast.get_source_segment(source, inner)}` (code cell {number})"
                break
    return found


# ----------------------------------------------------------------------------------------------------
# The sandbox: bubblewrap, an unprivileged user, resource limits
# ----------------------------------------------------------------------------------------------------
SANDBOX_USER = 65534  # "nobody": when the grader runs as root, the sandbox runs as this user instead
DEFAULT_MEMORY_GIB = 4.0
DEFAULT_PROCESSES = 512  # processes and threads; TensorFlow starts a pool of threads per core
FILE_LIMIT_BYTES = 256 * 2**20
EVIDENCE_LIMIT_BYTES = 64 * 2**20
INSTALL_BUBBLEWRAP = (
    "Grading runs every submission in a bubblewrap sandbox, and `bwrap` was not found or does not work here. Install it "
    "(Debian/Ubuntu: `sudo apt install bubblewrap`; Fedora: `sudo dnf install bubblewrap`; Arch: `sudo pacman -S bubblewrap`). "
    "On macOS or Windows, grade inside a Linux VM or WSL2. Only for notebooks you trust: --no-sandbox grades without any isolation."
)


def _namespaces() -> list[str]:
    """bubblewrap's isolation flags. As an ordinary user, a user namespace too; as root, bubblewrap mounts as
    root and the runner, its first process, switches to ``SANDBOX_USER`` (root is exempt from the process
    limit, and would own every file it touches)."""
    if os.geteuid() != 0:
        return ["--unshare-all"]
    return ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]


def sandbox_problem() -> str | None:
    """``None`` if bubblewrap runs here, else what to do about it."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return INSTALL_BUBBLEWRAP
    probe = subprocess.run([bwrap, "--ro-bind", "/", "/", *_namespaces(), "--die-with-parent", "true"], capture_output=True, text=True, cwd="/")
    if probe.returncode != 0:
        return f"{INSTALL_BUBBLEWRAP} (`bwrap` failed: {probe.stderr.strip()[:200]}; unprivileged user namespaces may be disabled)"
    return None


def prepare_library(folder: Path, sandbox: bool = True) -> Path:
    """The modules a submission may import, in ``folder``: per chapter a ``resnets_utils.py`` with that
    chapter's answers hidden; shared ``resnets_checks``, ``signs_dataset``, ``classroom_runner``, ``reference/``."""
    common = folder / "common"
    common.mkdir(parents=True)
    if sandbox:
        (common / "datasets").mkdir()  # the repository's datasets/ is mounted here, read-only
    else:
        (common / "datasets").symlink_to(ROOT / "datasets")
    for name in ("resnets_checks.py", "signs_dataset.py", "classroom_runner.py"):
        shutil.copy(ROOT / name, common / name)
    shutil.copytree(ROOT / "reference", common / "reference")
    for chapter in EXERCISES:
        (folder / chapter).mkdir()
        (folder / chapter / "resnets_utils.py").write_text(hidden_reference_source(chapter))
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def sandbox_command(command: list[str], scratch: Path, library: Path, chapter: str) -> list[str]:
    """``command`` wrapped in bubblewrap: its own user, process, network and IPC namespaces; the system,
    Python and the library read-only; ``scratch`` its only writable folder besides an empty /tmp."""
    args = ["bwrap", *_namespaces(), "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/fonts", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf"):
        args += ["--ro-bind-try", path, path]
    python_homes = {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parent.parent}
    made = set()
    for home in sorted(python_homes):
        if not str(home).startswith("/usr/"):
            for parent in reversed(home.parents[:-1]):  # bubblewrap would make them 0700, closed to the sandbox's user
                if parent not in made:
                    args += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
            args += ["--ro-bind", str(home), str(home)]
    args += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/home",
             "--ro-bind", str(library), "/opt/classroom", "--ro-bind", str(ROOT / "datasets"), "/opt/classroom/common/datasets",
             "--bind", str(scratch), "/home/student", "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
             "--chdir", "/home/student", "--clearenv"]
    environment = {
        "HOME": "/home/student", "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin", "LANG": "C.UTF-8",
        "PYTHONPATH": f"/opt/classroom/{chapter}:/opt/classroom/common", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    for name, value in environment.items():
        args += ["--setenv", name, value]
    return args + ["--", *command]


# ----------------------------------------------------------------------------------------------------
# Judging, in the grader's own process
# ----------------------------------------------------------------------------------------------------
class Tampered(Exception):
    """The data a sandbox handed back is not what the grading cell writes."""


def _read_untrusted(path: Path, limit: int) -> bytes:
    """A regular file of at most ``limit`` bytes, not followed through a link (the sandbox wrote it)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise Tampered(f"{path.name} is missing or not a file") from None
    with os.fdopen(descriptor, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise Tampered(f"{path.name} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Tampered(f"{path.name} is larger than {limit} bytes")
    return data


def load_evidence(folder: Path) -> dict:
    """The grading cell's evidence, arrays put back, read as data: JSON and an ``.npz`` without pickle."""
    import numpy as np

    try:
        plain = json.loads(_read_untrusted(folder / "evidence.json", EVIDENCE_LIMIT_BYTES))
        with np.load(io.BytesIO(_read_untrusted(folder / "arrays.npz", EVIDENCE_LIMIT_BYTES)), allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except Tampered:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed JSON or npz
        raise Tampered(f"unreadable evidence ({type(exc).__name__})") from None

    def restore(value):
        if isinstance(value, dict):
            if set(value) == {"array"}:
                if value["array"] not in arrays or arrays[value["array"]].dtype.kind != "f":
                    raise Tampered("an array is missing or not floating point")
                return arrays[value["array"]]
            return {k: restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore(v) for v in value]
        return value

    evidence = restore(plain)
    if not isinstance(evidence, dict):
        raise Tampered("the evidence is not a mapping of functions")
    return evidence


class References:
    """The reference's evidence for every call the grader makes, computed here once per case."""

    def __init__(self):
        self._cache = {}
        self._lock = threading.Lock()  # grading threads (--jobs) share it; Keras builds one model at a time
        self._stored_blocks = json.loads((ROOT / "reference" / "blocks.json").read_text())

    def block(self, function: str, case: dict, visible_index: int | None = None) -> dict:
        if visible_index is not None:
            return self._stored_blocks[function][visible_index]
        key = json.dumps([function, case], sort_keys=True)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            import classroom_runner
            import resnets_checks
            import resnets_utils

            kwargs = {k: v for k, v in case.items() if k != "shape"}
            self._cache[key] = resnets_checks.block_evidence(function, getattr(resnets_utils, function), kwargs,
                                                             classroom_runner.hidden_input(case["shape"]), classroom_runner.seeded_initializer)
            return self._cache[key]

    def resnet50(self, input_shape, classes) -> dict:
        key = json.dumps(["ResNet50", list(input_shape), classes])
        with self._lock:
            if key not in self._cache:
                import resnets_checks
                import resnets_utils

                self._cache[key] = resnets_checks.resnet50_evidence(resnets_utils.ResNet50, tuple(input_shape), classes, probe_weights=True)
            return self._cache[key]


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _judge_call(function: str, evidence: dict, reference: dict, case: dict, visible: bool) -> str | None:
    """``None`` if the student's evidence for one call matches the reference's, else what differs."""
    import resnets_checks

    if "stopped" in evidence:
        return f"stopped: {evidence['stopped'][:200]}"
    try:
        if function == "ResNet50":  # the reference's table and totals for the visible call are the stored ones (tests/test_checks.py)
            call = f"ResNet50(input_shape={tuple(case['input_shape'])}, classes={case['classes']})"
            resnets_checks.judge_resnet50(evidence, reference["summary"], reference["totals"], reference["one_at_a_time"], call)
        else:
            kwargs = {k: v for k, v in case.items() if k != "shape"}
            call = None if visible else f"{function}(X of shape {tuple(case['shape'])}, {', '.join(f'{k}={v}' for k, v in kwargs.items())})"
            resnets_checks.judge_block(function, kwargs, evidence, reference, call)
    except resnets_checks.CheckFailed as exc:
        return _first_line(exc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # evidence of the wrong form
        raise Tampered(f"malformed evidence ({type(exc).__name__})") from None
    return None


def judge_function(function: str, evidence: dict, hidden: list[dict], references: References) -> dict:
    """The grade of one exercise function from its evidence: the visible check's verdict and the hidden variants'."""
    import resnets_checks

    entry = {"visible": None, "hidden_passed": 0, "hidden_total": len(hidden), "notes": [], "flags": []}
    if not isinstance(evidence, dict):
        raise Tampered("no evidence for the function")
    if evidence.get("missing"):
        defined = [name for name in evidence.get("defined", []) if isinstance(name, str)]
        close = difflib.get_close_matches(function, defined, n=1, cutoff=0.6)
        entry["visible"] = f"missing: `{function}` is not defined" + (f"; found `{close[0]}`: renamed?" if close else " (its cell deleted, or renamed?)")
        return entry
    if function == "ResNet50":
        visible_cases = [({"input_shape": [64, 64, 3], "classes": 6}, references.resnet50((64, 64, 3), 6))]
        hidden_cases = [(case, references.resnet50(case["input_shape"], case["classes"])) for case in hidden]
    else:
        visible_cases = [(case, references.block(function, case, i)) for i, case in enumerate(resnets_checks.BLOCK_CASES[function])]
        hidden_cases = [(case, references.block(function, case)) for case in hidden]
    if len(evidence.get("visible", [])) != len(visible_cases) or len(evidence.get("hidden", [])) != len(hidden_cases):
        raise Tampered("the evidence does not hold one entry per call")
    problems = [_judge_call(function, e, r, c, True) for e, (c, r) in zip(evidence["visible"], visible_cases)]
    entry["visible"] = next((f"failed: {p}" for p in problems if p), "passed")
    for student_evidence, (case, reference) in zip(evidence["hidden"], hidden_cases):
        problem = _judge_call(function, student_evidence, reference, case, False)
        if problem is None:
            entry["hidden_passed"] += 1
        else:
            entry["notes"].append(f"hidden variant: {problem}")
    return entry


# ----------------------------------------------------------------------------------------------------
# Grading one submission, and a folder of them
# ----------------------------------------------------------------------------------------------------
def chapter_of(path: Path) -> str | None:
    """The exercise chapter a submitted notebook belongs to, from its file name (e.g. ``alice_01_identity_block.ipynb``)."""
    return next((chapter for chapter in (*EXERCISES, *OPEN_EXERCISES) if chapter in path.stem), None)


def deleted_cells(notebook, chapter: str) -> int:
    """How many cells of the handed-out notebook (by cell id) are not in the submission."""
    handed_out = STUDENT_DIR / f"{chapter}.ipynb"
    if not handed_out.is_file():
        return 0
    ids = {cell.get("id") for cell in notebook.cells}
    return sum(1 for cell in nbformat.read(handed_out, as_version=4).cells if cell.get("id") not in ids)


def call_timeout_for(cell_timeout: int) -> int:
    """Seconds one call of a student's function may take while grading: half a cell's limit, at least 10."""
    return max(10, cell_timeout // 2)


@dataclasses.dataclass
class Options:
    """How to grade: time limits, the hidden variants' seed, the sandbox and its limits."""

    cell_timeout: int = DEFAULT_CELL_TIMEOUT_S
    notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT_S
    variant_seed: int = 0
    sandbox: bool = True
    memory_gib: float = DEFAULT_MEMORY_GIB
    processes: int = DEFAULT_PROCESSES


def run_submission(notebook, chapter: str, options: Options, library: Path) -> tuple[dict | None, dict | None, list[str]]:
    """Execute ``notebook`` with the grading cell in a sandbox; return (cell results, evidence, problems).

    The submission sees only a scratch copy of itself, the library and the system, read-only. The
    grader waits for every process of the sandbox to end (bubblewrap's process namespace dies with
    its first process), then reads what the sandbox left in the scratch folder as untrusted data."""
    problems = []
    orders = {
        "functions": list(EXERCISES[chapter]), "hidden": {f: hidden_variants(f, options.variant_seed) for f in EXERCISES[chapter]},
        "cell_timeout": options.cell_timeout, "call_timeout": call_timeout_for(options.cell_timeout), "sandboxed": options.sandbox,
        "user": SANDBOX_USER if options.sandbox and os.geteuid() == 0 else None,
        "limits": {"memory_bytes": int(options.memory_gib * 2**30), "processes": options.processes, "file_bytes": FILE_LIMIT_BYTES,
                   "cpu_seconds": 2 * options.notebook_timeout + 60, "required": options.sandbox},
    }
    scratch = Path(tempfile.mkdtemp(prefix="classroom-submission-"))
    try:
        nbformat.write(notebook, scratch / "submission.ipynb")
        (scratch / "evidence").mkdir()
        runner = [str(Path(sys.prefix) / "bin" / "python"), "-m", "classroom_runner"]
        if options.sandbox:
            if os.geteuid() == 0:
                for path in [scratch, *scratch.rglob("*")]:
                    os.chown(path, SANDBOX_USER, SANDBOX_USER)
            command, extra, cwd = sandbox_command(runner, scratch, library, chapter), {}, "/"
        else:
            environment = {**os.environ, "PYTHONPATH": f"{library / chapter}:{library / 'common'}", "MPLBACKEND": "Agg", "HOME": str(scratch)}
            command, extra, cwd = runner, {"env": environment}, str(scratch)
        # stderr goes to a file, not a pipe: a submission that floods it fills at most FILE_LIMIT_BYTES, not the grader's memory
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                                       start_new_session=True, cwd=cwd, **extra)
            try:
                process.communicate(json.dumps(orders).encode(), timeout=options.notebook_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # bubblewrap; its process namespace, and all in it, die with it
                process.communicate()
                return None, None, [f"timed out: did not finish within {options.notebook_timeout} s; stopped"]
            stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - 300))
            last_words = stderr.read().decode(errors="replace").strip()
        try:
            result = json.loads(_read_untrusted(scratch / "evidence" / "result.json", EVIDENCE_LIMIT_BYTES))
        except (Tampered, ValueError):
            return None, None, [f"the grader's sandbox failed: {last_words or 'no result'}"]
        try:
            evidence = load_evidence(scratch / "evidence")
        except Tampered as exc:
            evidence = {"_tampered": str(exc)}
        return result, evidence, problems
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _cell_problems(result: dict, options: Options) -> tuple[list[str], bool]:
    """Report lines for what happened to the cells; and whether the grading cell ran to its end."""
    problems, graded = [], False
    memory = f"{options.memory_gib:g} GiB per process"
    if result.get("kernel") == "died":
        problems.append(f"kernel died: the code exited Python, crashed, or ran out of memory (limit {memory})")
    elif result.get("kernel") == "stuck":
        problems.append(f"timed out: a cell ran past {options.cell_timeout} s and could not be interrupted")
    elif result.get("kernel"):
        problems.append(str(result["kernel"])[:300])
    for cell in result.get("cells", []):
        where = "the grading cell" if cell.get("number") == "grading" else f"code cell {cell.get('number')}"
        if cell.get("number") == "grading":
            graded = "evidence collected" in str(cell.get("printed", ""))
        for error in cell.get("errors", []):
            name, value = str(error.get("ename", "")), str(error.get("evalue", "")).strip()[:160]
            if name == "KeyboardInterrupt":
                problems.append(f"timed out: {where} ran past {options.cell_timeout} s and was stopped (an endless loop?)")
            elif name == "MemoryError" or "bad_alloc" in value or name == "ResourceExhaustedError":
                problems.append(f"exceeded the memory limit ({memory}): {where} raised {name}: {value}")
            elif name == "BlockingIOError" or "Resource temporarily unavailable" in value:
                problems.append(f"exceeded the process limit ({options.processes} processes and threads): {where} raised {name}: {value}")
            elif name in ("OSError", "PermissionError") and ("Read-only file system" in value or "Permission denied" in value):
                problems.append(f"wrote outside its folder (blocked): {where} raised {name}: {value}")
            elif name == "ReferenceHidden":
                problems.append(f"uses the reference implementation: {where} raised {name}: {value}")
            elif name != "CheckFailed":  # a failed check is graded from the evidence, not a crash
                problems.append(f"{where} raised {name}: {value}")
    for leftover in result.get("leftovers", [])[:10]:
        where = "the grading cell" if leftover.get("cell") == "grading" else f"code cell {leftover.get('cell')}"
        commands = ", ".join(f"`{str(c)[:80]}`" for c in leftover.get("commands", [])[:3])
        problems.append(f"started processes that outlived their cell: {where} left {leftover.get('count')} running ({commands}); "
                        "the grader stopped them")
    return problems, graded


def _notebook_check_passed(result: dict, function: str) -> bool:
    """Whether the notebook's own check cell printed that ``function`` passes (in the sandbox, so only a claim)."""
    return any(f"✓ {function} passes" in str(cell.get("printed", "")) for cell in result.get("cells", []) if cell.get("number") != "grading")


def grade_submission(path: Path, options: Options | None = None, library: Path | None = None, references: References | None = None) -> dict:
    """Grade one notebook: run it in a sandbox, judge what it hands back here, and say what went wrong."""
    options = options or Options()
    chapter = chapter_of(path)
    row = {"notebook": str(path), "chapter": chapter, "problems": [], "exercises": {}}
    if chapter is None:
        row["problems"].append(f"not an exercise notebook: its name contains none of {', '.join((*EXERCISES, *OPEN_EXERCISES))}")
        return row
    if chapter in OPEN_EXERCISES:
        return read_open_answers(path, chapter, row)
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except Exception as exc:  # noqa: BLE001 - unreadable JSON, not a notebook, invalid schema
        row["problems"].append(f"not a readable notebook: {type(exc).__name__}: {str(exc)[:160]}")
        return _ungraded(row, chapter)
    missing = deleted_cells(notebook, chapter)
    if missing:
        row["problems"].append(f"{missing} cell(s) of the handed-out notebook were deleted")
    not_own = reference_uses(notebook, chapter)
    row["problems"] += [f"uses the reference implementation: {what}" for what in not_own.values()]
    with contextlib.ExitStack() as stack:
        if library is None:
            library = prepare_library(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="classroom-library-"))) / "library", options.sandbox)
        result, evidence, problems = run_submission(notebook, chapter, options, library)
    row["problems"] += problems
    if result is None:
        return _ungraded(row, chapter)
    try:
        cell_problems, graded = _cell_problems(result, options)
        claimed_passes = {function for function in EXERCISES[chapter] if _notebook_check_passed(result, function)}
    except (AttributeError, TypeError, ValueError):  # result.json of the wrong form
        row["problems"].append("tampered with the checking code or the grader: the cell results are malformed")
        return _ungraded(row, chapter)
    row["problems"] += cell_problems
    if "_tampered" in evidence:
        if graded or not cell_problems:
            row["problems"].append(f"tampered with the checking code or the grader: {evidence['_tampered']}")
        return _ungraded(row, chapter)
    references = references or References()
    for function in EXERCISES[chapter]:
        try:
            entry = judge_function(function, evidence.get(function), hidden_variants(function, options.variant_seed), references)
        except Tampered as exc:
            row["problems"].append(f"tampered with the checking code or the grader: {exc}")
            entry = _ungraded_entry()
        if function in not_own:
            entry["flags"].append("uses the reference implementation")
        if entry["visible"] != "passed" and function in claimed_passes:
            entry["flags"].append("tampered with the checking code")
            row["problems"].append(f"tampered with the checking code or the grader: the notebook's check printed that `{function}` "
                                   f"passes, but the same calls judged by the grader fail ({entry['visible']})")
        row["exercises"][function] = entry
    return row


def _ungraded_entry() -> dict:
    return {"visible": "not graded (see problems)", "hidden_passed": 0, "hidden_total": 0, "notes": [], "flags": []}


def _ungraded(row: dict, chapter: str) -> dict:
    row["exercises"] = {f: _ungraded_entry() for f in EXERCISES[chapter]}
    return row


# ----------------------------------------------------------------------------------------------------
# Open exercises: collected for reading, not run
# ----------------------------------------------------------------------------------------------------
def open_exercise_cells(notebook) -> dict[int, object]:
    """``{number: cell}`` for every code cell that starts with ``# Exercise <number>``."""
    cells = {}
    for cell in notebook.cells:
        if cell.cell_type == "code" and (match := EXERCISE_HEADER.match(cell.source)):
            cells.setdefault(int(match.group(1)), cell)
    return cells


def text_outputs(cell, limit: int = MAX_ANSWER_OUTPUT_CHARS) -> str:
    """What a code cell printed, as saved in the notebook: streams, plain-text results and errors, cut at ``limit``."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(str(output.get("text", "")))
        elif output.get("output_type") in ("execute_result", "display_data"):
            data = output.get("data", {})
            parts.append(str(data["text/plain"]) if "text/plain" in data else f"[{', '.join(map(str, data))}]\n")
        elif output.get("output_type") == "error":
            parts.append(f"{output.get('ename', 'Error')}: {output.get('evalue', '')}\n")
    text = "".join(parts)
    return text if len(text) <= limit else text[:limit] + f"\n[... {len(text) - limit:,} more characters not shown]\n"


def read_open_answers(path: Path, chapter: str, row: dict) -> dict:
    """The row of a submission of an open-exercise chapter: which exercises were answered, and the answers.

    Nothing is run: the code and the outputs are read as handed in (so the outputs are the student's word,
    to be read with the code). An exercise's cell is found by its id, or else by its ``# Exercise N`` line."""
    handed_out = open_exercise_cells(nbformat.read(STUDENT_DIR / f"{chapter}.ipynb", as_version=4))
    row["answers"] = {}
    status = {}
    try:
        size = path.stat().st_size
        if size > MAX_OPEN_NOTEBOOK_BYTES:
            raise ValueError(f"{size / 2**20:.0f} MB, over the {MAX_OPEN_NOTEBOOK_BYTES // 2**20} MB limit")
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except Exception as exc:  # noqa: BLE001 - unreadable JSON, not a notebook, invalid schema, too large
        row["problems"].append(f"not a readable notebook: {type(exc).__name__}: {str(exc)[:160]}")
        notebook = None
    if notebook is not None:
        by_id = {cell.get("id"): cell for cell in notebook.cells if cell.cell_type == "code"}
        by_number = open_exercise_cells(notebook)
        for number, original in handed_out.items():
            cell = by_id.get(original.get("id")) or by_number.get(number)
            if cell is None:
                status[number] = "cell deleted"
            elif not _answer_lines(cell.source):
                status[number] = "not answered"
            else:
                status[number] = "answered: read it in answers.md"
                code = cell.source if len(cell.source) <= MAX_ANSWER_CODE_CHARS else (
                    cell.source[:MAX_ANSWER_CODE_CHARS] + f"\n# [... {len(cell.source) - MAX_ANSWER_CODE_CHARS:,} more characters not shown]")
                row["answers"][f"exercise {number}"] = {"code": code, "output": text_outputs(cell)}
    for number in handed_out:
        row["exercises"][f"exercise {number}"] = {"visible": status.get(number, "not read (see problems)"), "hidden_passed": 0,
                                                   "hidden_total": 0, "notes": [], "flags": [], "open": True}
    return row


def _answer_lines(source: str) -> list[str]:
    """The lines of an answer cell that are code of the student's: not blank, not a comment, not the stub's ``raise``."""
    return [line for line in source.splitlines() if line.strip() and not line.strip().startswith("#") and line.strip() != STUB_RAISE]


def _fenced(text: str, language: str = "") -> str:
    """``text`` in a Markdown code fence longer than any run of backticks inside it, so nothing in it can end the fence."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _plain(text: str) -> str:
    """``text`` with Markdown's and HTML's special characters escaped, to show as written."""
    return re.sub(r"([\\`*_{}\[\]|<>&~])", r"\\\1", re.sub(r"[\x00-\x1f\x7f]", " ", text))


def answers_markdown(rows: list[dict]) -> str:
    """answers.md: for each open exercise, the solution from the solved chapter, then every student's answer."""
    lines = ["# Answers to the open exercises", "",
             "Each exercise: the solution from the solved chapter, then every student's answer as handed in, with the "
             "outputs saved in the notebook. Nothing was run: read the outputs together with the code.", ""]
    for chapter in OPEN_EXERCISES:
        chapter_rows = sorted((r for r in rows if r.get("chapter") == chapter), key=lambda r: (r["student"], r["notebook"]))
        if not chapter_rows:
            continue
        solutions = open_exercise_cells(nbformat.read(SOLVED_DIR / f"{chapter}.ipynb", as_version=4))
        for number, solution in solutions.items():
            key = f"exercise {number}"
            solution_code = "\n".join(line for line in solution.source.splitlines() if line.strip() not in (BEGIN, END))
            lines += [f"## {chapter}, exercise {number}", "", f"**Solution** (notebooks/{chapter}.ipynb):", "",
                      _fenced(solution_code, "python"), ""]
            for row in chapter_rows:
                entry = row["exercises"].get(key, {})
                said = "answered" if key in row.get("answers", {}) else entry.get("visible", "not read")
                lines.append(f"**{_plain(row['student'])}** ({_plain(Path(row['notebook']).name)}): {said}")
                lines.append("")
                if key in row.get("answers", {}):
                    answer = row["answers"][key]
                    lines += [_fenced(answer["code"], "python"), ""]
                    if answer["output"]:
                        lines += ["Output, as saved:", "", _fenced(answer["output"], "text"), ""]
    return "\n".join(lines) + "\n"


def result_of(entry: dict) -> str:
    """The word for one exercise in the reports: PASS or FAIL, or for an open exercise, READ (answered) or MISSING."""
    if entry.get("open"):
        return "READ" if entry["visible"].startswith("answered") else "MISSING"
    return "PASS" if passed(entry) else "FAIL"


def passed(entry: dict) -> bool:
    """PASS: the visible check and every hidden variant, judged by the grader, and no flag (the answer is the student's own)."""
    return (entry["visible"] == "passed" and entry["hidden_total"] > 0 and entry["hidden_passed"] == entry["hidden_total"]
            and not entry.get("flags"))


def student_of(path: Path, root: Path) -> str:
    """A sub-folder per student (``alice/01_identity_block.ipynb``), or the file name's prefix (``alice_01_identity_block``)."""
    relative = path.relative_to(root) if root.is_dir() else Path(path.name)
    if len(relative.parts) > 1:
        return relative.parts[0]
    chapter = chapter_of(path)
    prefix = path.stem.split(chapter)[0].strip("_- ") if chapter else ""
    return prefix or path.stem


def grade(target: Path, out_dir: Path, options: Options | None = None, jobs: int = 1) -> list[dict]:
    """Grade one notebook or every ``.ipynb`` under a folder, ``jobs`` at a time; write ``grades.{md,csv,json}`` to ``out_dir``.

    The reports are written once, after every submission's sandbox has ended, each file atomically."""
    options = options or Options()
    target = Path(target)
    if target.is_file():
        notebooks = [target]
    elif target.is_dir():
        notebooks = sorted(p for p in target.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        if not notebooks:
            raise ClassroomError(f"{target} holds no .ipynb files.")
    else:
        raise ClassroomError(f"{target} does not exist; give a submitted notebook or a folder of them.")
    if options.sandbox and (problem := sandbox_problem()):
        raise ClassroomError(problem)
    if not all((ROOT / "datasets" / name).is_file() for name in ("train_signs.h5", "test_signs.h5")):
        raise ClassroomError("The SIGNS data is not built yet (the chapters load it): run `make data` first.")
    references = References()
    with tempfile.TemporaryDirectory(prefix="classroom-library-") as scratch:
        library = prepare_library(Path(scratch) / "library", options.sandbox)

        def one(path):
            start = time.perf_counter()
            row = grade_submission(path, options, library, references)
            row["student"] = student_of(path, target)
            row["seconds"] = round(time.perf_counter() - start, 1)
            print(f"  {row['student']:<16} {path.name:<36} {_summary(row)} ({row['seconds']:.0f} s)", flush=True)
            return row

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            rows = list(pool.map(one, notebooks))
    write_reports(rows, out_dir)
    return rows


def _summary(row: dict) -> str:
    marks = [f"{f} {result_of(e)}" for f, e in row["exercises"].items()]
    return ", ".join(marks) + (f"; {len(row['problems'])} problem(s)" if row["problems"] else "")


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half of one."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False, newline="") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # as an ordinary file would be, not the temporary file's 0600
    os.replace(f.name, path)


def write_reports(rows: list[dict], out_dir: Path) -> None:
    """``grades.json`` (everything), ``grades.csv`` and ``grades.md`` (one line per student and exercise), from the same rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(out_dir / "grades.json", json.dumps(rows, indent=1) + "\n")
    flat = []
    for row in rows:
        for function, entry in row["exercises"].items() or [(None, None)]:
            flat.append(
                {
                    "student": row["student"], "notebook": Path(row["notebook"]).name, "exercise": function or "",
                    "result": result_of(entry) if entry else "FAIL",
                    "visible_check": entry["visible"] if entry else "",
                    "hidden_variants": f"{entry['hidden_passed']}/{entry['hidden_total']}" if entry else "",
                    "notes": "; ".join((entry.get("flags", []) + entry["notes"] if entry else []) + row["problems"]),
                }
            )
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(flat[0]) if flat else ["student"])
    writer.writeheader()
    writer.writerows(flat)
    _write_atomically(out_dir / "grades.csv", table.getvalue())
    lines = ["| student | notebook | exercise | result | visible check | hidden variants | notes |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in flat:
        cells = [r["student"], r["notebook"], f"`{r['exercise']}`", r["result"], r["visible_check"], r["hidden_variants"], r["notes"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    _write_atomically(out_dir / "grades.md", "\n".join(lines) + "\n")
    if any(row.get("chapter") in OPEN_EXERCISES for row in rows):
        _write_atomically(out_dir / "answers.md", answers_markdown(rows))


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
    grading.add_argument("--jobs", type=int, default=1, help="notebooks graded at once (default 1; each kernel uses every core)")
    grading.add_argument("--memory-limit", type=float, default=DEFAULT_MEMORY_GIB, metavar="GIB",
                         help=f"address space per process of a submission, in GiB (default {DEFAULT_MEMORY_GIB:g})")
    grading.add_argument("--no-sandbox", action="store_true",
                         help="run submissions without bubblewrap: no isolation at all. Only for notebooks you trust")
    args = parser.parse_args(argv)

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
        if min(args.cell_timeout, args.timeout, args.jobs) < 1 or args.memory_limit < 1:
            parser.error("timeouts and --jobs must be at least 1, --memory-limit at least 1 GiB")
        options = Options(cell_timeout=args.cell_timeout, notebook_timeout=args.timeout, variant_seed=args.variant_seed,
                          sandbox=not args.no_sandbox, memory_gib=args.memory_limit)
        isolation = "a bubblewrap sandbox" if options.sandbox else "NO sandbox (--no-sandbox: trusted notebooks only)"
        print(f"Grading {args.submissions} in {isolation} (cell limit {args.cell_timeout} s, notebook limit {args.timeout} s, "
              f"{args.memory_limit:g} GiB per process, {args.jobs} at a time):", flush=True)
        rows = grade(args.submissions, args.out, options, jobs=args.jobs)
        print(f"{len(rows)} notebook(s) graded; report: {args.out / 'grades.md'} (also grades.csv, grades.json)")
        if any(row.get("chapter") in OPEN_EXERCISES for row in rows):
            print(f"answers to the open exercises of chapters {', '.join(c[:2] for c in OPEN_EXERCISES)}, to read: {args.out / 'answers.md'}")
        return 0
    except ClassroomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
