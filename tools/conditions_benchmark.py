"""Other conditions: how trained networks do on the SIGNS photos taken as other people would take them.

    python tools/conditions_benchmark.py                              # the default and the course's networks, test photos
    python tools/conditions_benchmark.py --split validation           # the validation photos: for choosing a recipe
    python tools/conditions_benchmark.py --model mine=runs/x/model.keras --model default=runs/default-seed0/model.keras
    python tools/conditions_benchmark.py --split validation --mirror-average  # each photo and its mirror image, averaged

The conditions (backgrounds, tilt, framing, light, contrast, greyscale, JPEG quality and pairs of them) are
``photo_conditions.conditions``, built with a fixed seed from the test photos, or from the validation photos
of seed 0's split (18 per digit, held out of training by every recipe that uses a validation split).
The course's recipe trains on all 1,080 training photos, so only the test split is fair to it.
Networks: ``runs/course-seed0`` (``make train ARGS="--recipe course"``), ``runs/plain-walls-seed0``
(``make train ARGS="--recipe plain-walls"``, the default before new walls) and ``runs/default-seed0``
(``make train``), those that exist, or each ``--model NAME=PATH``. Writes
``conditions.json`` and ``conditions.md`` (one row per condition, a column per network, the mean and the
worst at the bottom) to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import photo_conditions as pc  # noqa: E402
import resnets_train as rt  # noqa: E402
import resnets_utils as ru  # noqa: E402

DEFAULT_MODELS = {name: ROOT / "runs" / f"{name}-seed0" / "model.keras" for name in ("course", "plain-walls", "default")}
TRAIN_COMMANDS = {"course": 'make train ARGS="--recipe course"', "plain-walls": 'make train ARGS="--recipe plain-walls"', "default": "make train"}


def photos(split: str):
    """The photos and labels the benchmark is built from: the test split, or seed 0's validation photos."""
    x_train, y_train, x_test, y_test, _ = ru.load_dataset()
    if split == "test":
        return x_test, y_test.ravel()
    _, validation = rt.split_validation(y_train.ravel(), per_class=rt.DEFAULT.validation_per_class, seed=0)
    return x_train[validation], y_train.ravel()[validation]


def table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    conditions = list(next(iter(results.values())))
    lines = ["| condition | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for condition in conditions:
        lines.append(f"| {condition} | " + " | ".join(f"{results[n][condition]:.1%}" for n in names) + " |")
    others = [c for c in conditions if c != "as taken"]
    lines.append("| **mean over the conditions** | " + " | ".join(f"**{sum(results[n][c] for c in others) / len(others):.1%}**" for n in names) + " |")
    lines.append("| **worst condition** | " + " | ".join(f"**{min(results[n][c] for c in others):.1%}**" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/conditions_benchmark.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="a network to measure (repeatable)")
    parser.add_argument("--split", choices=["test", "validation"], default="test")
    parser.add_argument("--seed", type=int, default=0, help="draws the textured backgrounds (default 0)")
    parser.add_argument("--mirror-average", action="store_true",
                        help="average each photo's probabilities with its mirror image's (a test-time trick the prediction path does not use)")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "conditions")
    args = parser.parse_args(argv)
    if args.model:
        try:
            models = {name: Path(path) for name, path in (entry.split("=", 1) for entry in args.model)}
        except ValueError:
            parser.error("--model takes NAME=PATH, e.g. --model default=runs/default-seed0/model.keras")
    else:
        models = {name: path for name, path in DEFAULT_MODELS.items() if path.is_file()}
        for name in DEFAULT_MODELS.keys() - models.keys():
            print(f"note: no {name} network at {DEFAULT_MODELS[name].relative_to(ROOT)}; `{TRAIN_COMMANDS[name]}` trains it", file=sys.stderr)
    missing = [f"{name}: {path}" for name, path in models.items() if not path.is_file()]
    if missing or not models:
        print(f"error: no network to measure{': ' + ', '.join(missing) if missing else ''}. Train one with `make train`.", file=sys.stderr)
        return 1
    images, labels = photos(args.split)
    results = {}
    for name, path in models.items():
        print(f"measuring {name} ({path}) on {len(images)} {args.split} photos ...", flush=True)
        results[name] = pc.accuracy_per_condition(ru.keras.models.load_model(path, compile=False), images, labels, args.seed, args.mirror_average)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "conditions.json").write_text(json.dumps({"split": args.split, "seed": args.seed, "mirror_average": args.mirror_average, "photos": len(images),
                                                             "models": {n: str(p) for n, p in models.items()}, "accuracy": results}, indent=1) + "\n")
    text = table(results)
    (args.output / "conditions.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
