"""Benchmark the default training recipe against the course's, on this machine, in one run.

    python tools/benchmark_training.py [--seed 0] [--epochs 25] [--output runs/benchmark] [--recipes default course]

Each recipe trains in its own process (so its peak memory is its own) with the same seed and number of
epochs (the default recipe's, 25, unless ``--epochs`` says otherwise). After every epoch the test
accuracy is measured, only to report it, never to choose anything.
Reported per recipe: training throughput (images/s over the epochs after the first, which also builds
the graph), the time and epoch at which test accuracy first reaches 90%, 95% and 98%, the test accuracy
at epochs 5, 10, 15, 20 and 25 and at the end (the weights the recipe keeps), and the peak resident memory
of the process. Writes ``benchmark.json`` and ``benchmark.md`` (the tables in docs/results.md) to ``--output``.
Keep the machine otherwise idle while it runs: the times are wall-clock times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import resnets_train as rt  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from measurements import TestAccuracyEachEpoch  # noqa: E402

THRESHOLDS = (0.90, 0.95, 0.98)
CHECKPOINTS = (5, 10, 15, 20, 25)


def run_one(recipe_name: str, seed: int, epochs: int, result_path: Path) -> None:
    """In a child process: train one recipe and write its measurements."""
    import resnets_utils as ru

    data = ru.load_dataset()
    tracker = TestAccuracyEachEpoch(data[2], data[3])
    recipe = dataclasses.replace(rt.RECIPES[recipe_name], epochs=epochs)
    result = rt.train(recipe, seed, output_dir=None, verbose=0, data=data, callbacks=[tracker])
    records = tracker.records
    steady = records[1:] or records
    summary = {
        "recipe": recipe_name,
        "recipe_config": dataclasses.asdict(recipe),
        "seed": seed,
        "epochs": records,
        "train_images": result["train_images"],
        "images_per_s": result["train_images"] * len(steady) / sum(r["epoch_s"] for r in steady),
        "time_to": {f"{t:.0%}": next(((r["elapsed_s"], r["epoch"]) for r in records if r["test_accuracy"] >= t), None) for t in THRESHOLDS},
        "final_test_accuracy": result["test_accuracy"],
        "best_epoch": result["best_epoch"],
        "train_wall_time_s": result["train_wall_time_s"],
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "versions": result["versions"],
    }
    result_path.write_text(json.dumps(summary, indent=1) + "\n")


def tables(results: list[dict]) -> str:
    def reached(entry):
        return "not reached" if entry is None else f"{entry[0] / 60:.1f} min (epoch {entry[1]})"

    lines = [
        "| recipe | images/s | " + " | ".join(f"time to {t:.0%} test accuracy" for t in THRESHOLDS) + " | final test accuracy | training time | peak memory |",
        "| --- | --- | " + " | ".join("---" for _ in THRESHOLDS) + " | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['recipe']} | {r['images_per_s']:.0f} | " + " | ".join(reached(r["time_to"][f"{t:.0%}"]) for t in THRESHOLDS)
            + f" | {r['final_test_accuracy']:.1%} | {r['train_wall_time_s'] / 60:.1f} min | {r['peak_memory_mib']:,.0f} MiB |"
        )
    checkpoints = [c for c in CHECKPOINTS if all(c <= len(r["epochs"]) for r in results)]
    lines += ["", "| recipe | " + " | ".join(f"test accuracy after epoch {c}" for c in checkpoints) + " |", "| --- | " + " | ".join("---" for _ in checkpoints) + " |"]
    for r in results:
        lines.append(f"| {r['recipe']} | " + " | ".join(f"{r['epochs'][c - 1]['test_accuracy']:.1%}" for c in checkpoints) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=rt.DEFAULT.epochs, help=f"epochs for every recipe (default {rt.DEFAULT.epochs})")
    parser.add_argument("--recipes", nargs="+", default=["default", "course"], choices=sorted(rt.RECIPES))
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "benchmark")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.child:
        run_one(args.child, args.seed, args.epochs, args.output / f"{args.child}.json")
        return 0
    results = []
    for name in args.recipes:
        print(f"Training the {name} recipe, seed {args.seed}, {args.epochs} epochs ...", flush=True)
        command = [sys.executable, __file__, "--child", name, "--seed", str(args.seed), "--epochs", str(args.epochs), "--output", str(args.output)]
        subprocess.run(command, check=True, cwd=ROOT)
        results.append(json.loads((args.output / f"{name}.json").read_text()))
    (args.output / "benchmark.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.output / "benchmark.md").write_text(tables(results))
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
