"""The part of the grader that runs *inside* the sandbox, next to a submission (see ``classroom``).

``python -m classroom_runner`` reads its orders as JSON on stdin (the chapter, the time limits, the
resource limits and the calls to make), lowers its resource limits, then executes ``submission.ipynb``
from its working directory in a fresh kernel with one more cell at the end. That cell calls
``collect_evidence``: each exercise function on the visible and the hidden inputs, recording what came
back as plain data (``evidence/evidence.json`` and ``evidence/arrays.npz``). What happened to the cells
(errors, time-outs, processes left running) goes to ``evidence/result.json``.

Nothing here decides a grade. Everything in this process and the kernel can be tampered with by the
submission, so ``classroom`` treats these files as untrusted data: it judges the evidence against the
reference in its own process, which the submission cannot reach.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
from pathlib import Path

EVIDENCE_DIR = Path("evidence")
NOTEBOOK = Path("submission.ipynb")
HARNESS_ID = "classroom-grading"
MAX_TEXT = 2000  # characters of a cell's printed output kept for the report


def drop_privileges(user: int | None) -> None:
    """As root (bubblewrap run by root), become ``user`` with no capabilities before anything else happens."""
    if user is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(user)
        os.setuid(user)


def set_limits(limits: dict) -> None:
    """Lower this process's resource limits; the kernel and everything it starts inherit them.

    Inside bubblewrap's user namespace, the process limit counts only the sandbox's own processes and
    threads. An unprivileged process cannot raise a limit again.
    """
    for name, value in (("RLIMIT_AS", limits["memory_bytes"]), ("RLIMIT_NPROC", limits["processes"]),
                        ("RLIMIT_FSIZE", limits["file_bytes"]), ("RLIMIT_CPU", limits["cpu_seconds"]), ("RLIMIT_CORE", 0)):
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):  # not settable here (macOS and --no-sandbox): the sandbox on Linux always sets them
            if limits.get("required"):
                raise
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: the kernel cannot read this process's memory


# ----------------------------------------------------------------------------------------------------
# In the kernel: the evidence
# ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def time_limit(seconds: int, what: str):
    """Raise ``TimeoutError`` in the main thread every ``seconds`` while the block runs (Unix).

    It repeats, so code that catches the first one and calls the endless function again is stopped again."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"{what} did not return within {seconds} s (an endless loop?)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def seeded_initializer(seed=0):
    """The hidden variants' initializer: Glorot uniform with a fixed seed, so the reference gives the same weights."""
    import keras

    return keras.initializers.GlorotUniform(seed=seed + 7)


def hidden_input(shape) -> "np.ndarray":  # noqa: F821
    import numpy as np

    return np.random.default_rng(1).normal(size=shape).astype("float32")


def function_evidence(function: str, student, orders: dict) -> dict:
    """Call ``student`` on the visible and hidden inputs of ``function``; plain data, never raises."""
    import resnets_checks

    seconds = orders["call_timeout"]
    if function == "ResNet50":
        calls = [lambda: resnets_checks.resnet50_evidence(student, probe_weights=True)]
        calls += [lambda case=case: resnets_checks.resnet50_evidence(student, tuple(case["input_shape"]), case["classes"], probe_weights=True)
                  for case in orders["hidden"][function]]
        visible = 1
    else:
        calls = [lambda case=case: resnets_checks.block_evidence(function, student, case) for case in resnets_checks.BLOCK_CASES[function]]
        calls += [lambda case=case: resnets_checks.block_evidence(function, student, {k: v for k, v in case.items() if k != "shape"},
                                                                  hidden_input(case["shape"]), seeded_initializer)
                  for case in orders["hidden"][function]]
        visible = len(resnets_checks.BLOCK_CASES[function])
    results = []
    for call in calls:
        if any("TimeoutError" in str(result.get(key, "")) for result in results for key in ("stopped", "error", "structure_error", "output_error", "call_error")):
            # one endless call is enough: the rest would each wait out the limit too
            results.append({"stopped": f"TimeoutError: not called, an earlier call did not return within {seconds} s"})
        else:
            results.append(_timed(call, seconds, function))
    return {"visible": results[:visible], "hidden": results[visible:]}


def _timed(collect, seconds, function) -> dict:
    try:
        with time_limit(seconds, function):
            return collect()
    except TimeoutError as exc:  # the student's code ran past the limit outside any call the evidence catches
        return {"stopped": f"TimeoutError: {exc}"}  # not "error": resnet50_evidence uses that key for the student's own error


def collect_evidence(namespace: dict, orders: dict) -> None:
    """The grading cell: evidence for every exercise function of the chapter, written to ``EVIDENCE_DIR``."""
    import numpy as np

    evidence, arrays = {}, {}
    for function in orders["functions"]:
        student = namespace.get(function)
        if not callable(student):
            defined = sorted(name for name, value in namespace.items()
                             if callable(value) and getattr(value, "__module__", None) == "__main__" and not name.startswith("_"))
            evidence[function] = {"missing": True, "defined": defined}
            continue
        evidence[function] = function_evidence(function, student, orders)
    # Arrays go to an .npz (read back without pickle), the rest to JSON.
    def split(value, key):
        if isinstance(value, np.ndarray):
            arrays[key] = value
            return {"array": key}
        if isinstance(value, dict):
            return {k: split(v, f"{key}/{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [split(v, f"{key}/{i}") for i, v in enumerate(value)]
        return value

    plain = split(evidence, "e")
    EVIDENCE_DIR.mkdir(exist_ok=True)
    np.savez(EVIDENCE_DIR / "arrays.npz", **arrays)
    (EVIDENCE_DIR / "evidence.json").write_text(json.dumps(plain))
    print("evidence collected")


# ----------------------------------------------------------------------------------------------------
# Around the kernel: running the notebook
# ----------------------------------------------------------------------------------------------------
def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process this process can see (zombies left out: they hold nothing)."""
    found = {}
    if not Path("/proc").is_dir():  # macOS, with --no-sandbox: nothing to look at
        return found
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                if state != "Z":
                    command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                    found[int(entry.name)] = (int(parent), command)
    return found


def leftover_processes(kernel_pid: int | None, whole_sandbox: bool) -> dict[int, str]:
    """Processes still running that the submission started: in the sandbox, every process but this one,
    its parent (bubblewrap) and the kernel; without it, the kernel's descendants."""
    processes, mine = _processes(), os.getpid()
    if whole_sandbox:
        return {pid: command for pid, (_, command) in processes.items() if pid not in (1, mine, os.getppid(), kernel_pid)}
    descendants, frontier = {}, {kernel_pid}
    while frontier:
        frontier = {pid for pid, (parent, _) in processes.items() if parent in frontier and pid not in descendants}
        descendants.update({pid: processes[pid][1] for pid in frontier})
    return descendants


def run(orders: dict) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    harness = nbformat.v4.new_code_cell(
        "import classroom_runner as _classroom_runner\n"
        f"_classroom_runner.collect_evidence(globals(), {dict((k, orders[k]) for k in ('functions', 'hidden', 'call_timeout'))!r})"
    )
    harness.id = HARNESS_ID
    notebook.cells.append(harness)
    calls = 3 + max(len(cases) for cases in orders["hidden"].values())
    result = {"cells": [], "leftovers": [], "kernel": None}
    code_numbers = {}

    def after_cell(cell, cell_index, **_):
        kernel_pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
        leftovers = leftover_processes(kernel_pid, orders["sandboxed"])
        for pid in leftovers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if leftovers:
            commands = sorted({command[:100] for command in leftovers.values()})
            result["leftovers"].append({"cell": code_numbers.get(cell_index, "grading"), "count": len(leftovers), "commands": commands[:3]})

    client = NotebookClient(
        notebook, timeout=orders["cell_timeout"], kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
        record_timing=False, on_cell_executed=after_cell,
        timeout_func=lambda cell: calls * len(orders["functions"]) * orders["call_timeout"] + 60 if cell.get("id") == HARNESS_ID else orders["cell_timeout"],
    )
    number = 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and cell.get("id") != HARNESS_ID:
            number += 1
            code_numbers[index] = number
    try:
        client.execute()
    except DeadKernelError:
        result["kernel"] = "died"
    except CellTimeoutError:
        result["kernel"] = "stuck"
    except Exception as exc:  # noqa: BLE001 - reported, never a crash of the runner
        result["kernel"] = f"could not run the notebook: {type(exc).__name__}: {str(exc)[:200]}"
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        errors = [{"ename": o.get("ename", ""), "evalue": str(o.get("evalue", ""))[:300]} for o in cell.get("outputs", []) if o.output_type == "error"]
        text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")[:MAX_TEXT]
        result["cells"].append({"number": code_numbers.get(index, "grading"), "errors": errors, "printed": text})
    return result


def main() -> int:
    orders = json.loads(sys.stdin.read())
    drop_privileges(orders["user"])
    set_limits(orders["limits"])
    result = run(orders)
    EVIDENCE_DIR.mkdir(exist_ok=True)
    (EVIDENCE_DIR / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
