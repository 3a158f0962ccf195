"""Seconds per training epoch of the default recipe: float32 against mixed precision, on this machine.

    python tools/precision_benchmark.py [--precision float32 --precision mixed_bfloat16] [--epochs 3]
    -> runs/precision_benchmark/

Each precision trains ResNet50 (the default recipe, seed 0) for a few epochs in a process of its own, and
the epochs after the first (which also traces the graphs) are timed. On a CPU, bfloat16 pays only where
it has bfloat16 arithmetic (AMX or AVX-512 BF16, named below from /proc/cpuinfo); float16 is for GPUs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = """
import dataclasses, json, sys, time
sys.path.insert(0, {root!r})
import resnets_train as rt
from resnets_utils import keras

class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        self.times = getattr(self, "times", []) + [time.perf_counter() - self.start]

timer = EpochTimes()
recipe = dataclasses.replace(rt.DEFAULT, epochs={epochs})
result = rt.train(recipe, seed=0, verbose=0, callbacks=[timer], precision={precision!r})
print(json.dumps({{"epoch_s": timer.times, "loss": result["history"]["loss"], "val_accuracy": result["history"]["val_accuracy"]}}))
"""


def cpu_flags() -> list[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", action="append", choices=("float32", "mixed_bfloat16", "mixed_float16"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "precision_benchmark")
    args = parser.parse_args(argv)
    rows = []
    for precision in args.precision or ("float32", "mixed_bfloat16"):
        done = subprocess.run([sys.executable, "-c", RUN.format(root=str(ROOT), epochs=args.epochs, precision=precision)],
                              capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "3", **__import__("os").environ})
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        later = result["epoch_s"][1:] or result["epoch_s"]
        rows.append({"precision": precision, "first_epoch_s": round(result["epoch_s"][0], 1),
                     "epoch_s": round(sum(later) / len(later), 1), "loss": [round(v, 3) for v in result["loss"]],
                     "val_accuracy": [round(v, 3) for v in result["val_accuracy"]]})
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"cpu_flags": cpu_flags(), "rows": rows}
    (args.out / "precision_benchmark.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"CPU flags: {', '.join(report['cpu_flags']) or 'unknown'}", "",
             "| precision | first epoch (s) | later epochs (s each) | training loss by epoch |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['precision']} | {r['first_epoch_s']} | {r['epoch_s']} | {', '.join(map(str, r['loss']))} |" for r in rows]
    (args.out / "precision_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
