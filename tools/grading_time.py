"""How long the grader takes: one honest notebook per chapter, then a class of honest submissions.

Builds honest submissions (the solutions put back into the student notebooks), grades them with
``python -m classroom grade`` as an instructor would, and prints a Markdown table of wall times.

    python tools/grading_time.py                          # chapters 01-03 once, then 30 x chapter 02, --jobs 1 and 2
    python tools/grading_time.py --class-size 10 --jobs 1 4 --no-sandbox
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import classroom  # noqa: E402


def honest_submission(chapter: str):
    student = nbformat.read(classroom.STUDENT_DIR / f"{chapter}.ipynb", as_version=4)
    return classroom.substitute_solutions(student, nbformat.read(classroom.SOLVED_DIR / f"{chapter}.ipynb", as_version=4))


def grade_seconds(folder: Path, jobs: int, extra: list[str]) -> float:
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "classroom", "grade", str(folder), "--out", str(folder.parent / f"grades-{jobs}"),
                                "--jobs", str(jobs), *extra], cwd=ROOT, capture_output=True, text=True)
    if completed.returncode != 0 or "FAIL" in completed.stdout:
        sys.exit(f"grading failed:\n{completed.stdout}\n{completed.stderr}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--class-size", type=int, default=30, help="honest chapter-02 submissions in the class (default 30)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values to time the class with (default 1 2)")
    parser.add_argument("--no-sandbox", action="store_true", help="time the grader without bubblewrap")
    args = parser.parse_args()
    extra = ["--no-sandbox"] if args.no_sandbox else []
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for chapter in classroom.EXERCISES:
            folder = Path(scratch) / chapter / "submissions"
            folder.mkdir(parents=True)
            nbformat.write(honest_submission(chapter), folder / f"alice_{chapter}.ipynb")
            rows.append((f"one honest `{chapter}`", 1, grade_seconds(folder, 1, extra)))
        folder = Path(scratch) / "class" / "submissions"
        folder.mkdir(parents=True)
        notebook = honest_submission("02_convolutional_block")
        for number in range(args.class_size):
            nbformat.write(notebook, folder / f"student{number:02d}_02_convolutional_block.ipynb")
        for jobs in args.jobs:
            rows.append((f"a class: {args.class_size} x `02_convolutional_block`", jobs, grade_seconds(folder, jobs, extra)))
    print(f"| grading ({'no sandbox' if args.no_sandbox else 'bubblewrap sandbox'}) | --jobs | wall time |")
    print("| --- | ---: | ---: |")
    for what, jobs, seconds in rows:
        print(f"| {what} | {jobs} | {seconds:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
