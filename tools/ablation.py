"""What each choice of the default recipe buys: train it with one choice undone at a time.

    python tools/ablation.py [--recipe default] [--seed 0] [--epochs 25] [--output runs/ablation] [--variants NAME ...]

``--recipe`` names the recipe the variants start from (``resnets_train.RECIPES``; the table in docs/results.md
was measured on ``plain-walls``, the default before new walls). Every variant trains with the same seed (same split, same initial weights, same batches) for the same
number of epochs (the default recipe's, 25, unless ``--epochs`` says otherwise; the table in docs/results.md
was measured with ``--epochs 20``, the default's length when it was made); each undoes one choice
of the default, except the last, which adds one that was measured and left out. Reported: test accuracy
after epochs 5, 10 and 15 (how soon the model is useful) and at the end (the weights the variant keeps).
The test set is only measured, never used to choose. Results are saved after each variant to
``ablation.json``, so an interrupted run resumes where it stopped; ``ablation.md`` is the table in docs/results.md.
One seed per variant: differences of one or two test images (0.8-1.7 points) are within what another
seed changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import resnets_train as rt  # noqa: E402
import resnets_utils as ru  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from measurements import TestAccuracyEachEpoch, ZeroInitResidual  # noqa: E402

VARIANTS = {
    "default recipe": {},
    "without augmentation": {"augment": False},
    "batch-norm momentum 0.99 (Keras' default)": {"bn_momentum": 0.99},
    "constant learning rate 2e-3 (no warm-up, no cosine decay)": {"warmup_epochs": 0, "cosine": False},
    "without label smoothing": {"label_smoothing": 0.0},
    "Adam, no weight decay": {"optimizer": "adam", "weight_decay": 0.0},
    "no validation split: all 1,080 photos, last epoch kept": {"validation_per_class": 0, "restore_best": False},
    "with zero-initialised residual batch norm (not in the default)": {},
}
# Variants that change the model rather than a setting of the recipe: a callback applies the change.
VARIANT_CALLBACKS = {"with zero-initialised residual batch norm (not in the default)": ZeroInitResidual}


def same_recipe(stored: dict, recipe: rt.Recipe) -> bool:
    """Whether a stored run used ``recipe``; settings added to ``Recipe`` since then count as their defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(rt.Recipe) if f.default is not dataclasses.MISSING}
    return {**defaults, **stored} == dataclasses.asdict(recipe)


def table(results: dict) -> str:
    """The table in docs/results.md: test accuracy after epochs 5, 10 and 15, and of the weights each variant keeps."""
    epochs = max((len(r["test_accuracy_by_epoch"]) for r in results.values()), default=0)
    lines = [
        f"| recipe, seed 0, {epochs} epochs | test acc. after epoch 5 | after epoch 10 | after epoch 15 | final (weights kept) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in (n for n in VARIANTS if n in results):
        r = results[name]
        by_epoch = r["test_accuracy_by_epoch"]
        lines.append(f"| {name} | {by_epoch[4]:.1%} | {by_epoch[9]:.1%} | {by_epoch[14]:.1%} | {r['test_accuracy']:.1%} (epoch {r['best_epoch'] or len(by_epoch)}) |")
    return "\n".join(lines) + "\n"


def reuse_benchmark(results: dict, base: rt.Recipe, seed: int, epochs: int) -> None:
    """The full recipe with this seed may have run already in ``tools/benchmark_training.py``: reuse it."""
    path = ROOT / "runs" / "benchmark" / f"{base.name}.json"
    recipe = dataclasses.replace(base, epochs=epochs)
    stored = results.get("default recipe")
    if (stored and same_recipe(stored["recipe"], recipe) and stored["seed"] == seed) or not path.exists():
        return
    run = json.loads(path.read_text())
    if same_recipe(run.get("recipe_config", {}), recipe) and run["seed"] == seed:
        results["default recipe"] = {
            "recipe": run["recipe_config"],
            "seed": seed,
            "test_accuracy": run["final_test_accuracy"],
            "best_epoch": run["best_epoch"],
            "train_wall_time_s": run["train_wall_time_s"],
            "test_accuracy_by_epoch": [r["test_accuracy"] for r in run["epochs"]],
        }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=sorted(rt.RECIPES), default="default", help="the recipe the variants start from (default: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=rt.DEFAULT.epochs, help=f"epochs for every variant (default {rt.DEFAULT.epochs})")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="NAME")
    args = parser.parse_args(argv)
    if args.epochs < 15:
        parser.error(f"--epochs {args.epochs}: the table reports test accuracy after epoch 15, so train at least 15")
    args.output.mkdir(parents=True, exist_ok=True)
    results_path = args.output / "ablation.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    base = rt.RECIPES[args.recipe]
    reuse_benchmark(results, base, args.seed, args.epochs)
    data = ru.load_dataset()
    for name in args.variants:
        recipe = dataclasses.replace(base, epochs=args.epochs, **VARIANTS[name])
        if name in results and same_recipe(results[name]["recipe"], recipe) and results[name]["seed"] == args.seed:
            print(f"{name}: done already ({results[name]['test_accuracy']:.1%})", flush=True)
            continue
        print(f"{name} ...", flush=True)
        ru.keras.backend.clear_session()
        tracker = TestAccuracyEachEpoch(data[2], data[3])
        changes = [VARIANT_CALLBACKS[name]()] if name in VARIANT_CALLBACKS else []
        run = rt.train(recipe, args.seed, output_dir=None, verbose=0, data=data, callbacks=[*changes, tracker])
        results[name] = {
            "recipe": dataclasses.asdict(recipe),
            "seed": args.seed,
            "test_accuracy": run["test_accuracy"],
            "best_epoch": run["best_epoch"],
            "train_wall_time_s": run["train_wall_time_s"],
            "test_accuracy_by_epoch": [r["test_accuracy"] for r in tracker.records],
        }
        results_path.write_text(json.dumps(results, indent=1) + "\n")  # after each variant: a crash loses one run
        print(f"  test accuracy {run['test_accuracy']:.1%}, {run['train_wall_time_s'] / 60:.1f} min", flush=True)
    (args.output / "ablation.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
