"""Other conditions: how trained networks do on the SIGNS photos taken as other people would take them.

    python tools/conditions_benchmark.py                              # the default and the course's networks, test photos
    python tools/conditions_benchmark.py --split validation           # each network's own validation photos: for choosing a recipe
    python tools/conditions_benchmark.py --model mine=runs/x/model.keras --model default=runs/default-seed0/model.keras
    python tools/conditions_benchmark.py --split validation --mirror-average  # each photo and its mirror image, averaged

The conditions (backgrounds, tilt, framing, light, contrast, greyscale, JPEG quality and pairs of them) are
``photo_conditions.conditions``, built with a fixed seed from the test photos, or from the validation photos
that each network's own run held out of training (18 per digit, chosen by the run's seed: read from the
``metrics.json`` beside its ``model.keras``; networks of different seeds are measured on different photos).
The course's recipe trains on all 1,080 training photos and holds none out, so only the test split is fair to it.
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


class HeldOutError(ValueError):
    """A network's run does not say which training photos it held out."""


def held_out_by(model_path: Path, training_photos: int) -> tuple[int, int]:
    """``(seed, per_class)`` of the validation split that trained ``model_path``, from the run's ``metrics.json``.

    The split depends on the run's seed: a network trained with ``--seed 1`` trained on nine in ten of seed 0's
    validation photos, so measuring it there would be measuring it on photos it learnt."""
    metrics_file = Path(model_path).parent / "metrics.json"
    try:
        metrics = json.loads(metrics_file.read_text())
        seed, per_class = int(metrics["seed"]), int(metrics["recipe"]["validation_per_class"])
        used = int(metrics["train_images"]) + int(metrics["validation_images"])
    except FileNotFoundError:
        raise HeldOutError(f"no {metrics_file.name} beside {model_path}: the validation split needs the run's seed "
                           "(`make train` writes it); measure this network with --split test") from None
    except (OSError, ValueError, KeyError, TypeError) as error:  # unreadable, not JSON, or without these keys
        raise HeldOutError(f"{metrics_file} does not say the run's seed and validation split ({error!r}); "
                           "measure this network with --split test") from None
    if per_class == 0:
        raise HeldOutError(f"{model_path}'s run ({metrics['recipe'].get('name')!r} recipe) held no validation photos "
                           "out of training; measure it with --split test")
    if used != training_photos:
        raise HeldOutError(f"{model_path}'s run used {used} of the {training_photos} training photos (a subset): "
                           "its validation photos cannot be rebuilt here; measure it with --split test")
    return seed, per_class


def photos(split: str, seed: int = 0, per_class: int = rt.DEFAULT.validation_per_class):
    """The photos and labels the benchmark is built from: the test split, or the validation photos that a run
    of ``seed`` held out (``per_class`` of each digit)."""
    x_train, y_train, x_test, y_test, _ = ru.load_dataset()
    if split == "test":
        return x_test, y_test.ravel()
    _, validation = rt.split_validation(y_train.ravel(), per_class=per_class, seed=seed)
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
    if args.split == "test":
        splits = {name: None for name in models}
    else:
        splits, refused = {}, []
        training_photos = len(ru.load_dataset()[0])
        for name, path in models.items():
            try:
                splits[name] = held_out_by(path, training_photos)
            except HeldOutError as error:
                refused.append(f"{name}: {error}")
        if refused and args.model:
            print("error: --split validation measures each network on the validation photos its own run held out; here it cannot:\n  "
                  + "\n  ".join(refused), file=sys.stderr)
            return 1
        for line in refused:  # the networks found in runs/: measure the others
            print(f"note: left out, {line}", file=sys.stderr)
        models = {name: path for name, path in models.items() if name in splits}
        if not models:
            print("error: no network to measure on the validation photos. Train one with `make train`.", file=sys.stderr)
            return 1
    results, sizes = {}, {}
    for name, path in models.items():
        images, labels = photos(args.split, *(splits[name] or ()))
        held_out = f", those held out by its seed-{splits[name][0]} run" if splits[name] else ""
        print(f"measuring {name} ({path}) on {len(images)} {args.split} photos{held_out} ...", flush=True)
        results[name] = pc.accuracy_per_condition(ru.keras.models.load_model(path, compile=False), images, labels, args.seed, args.mirror_average)
        sizes[name] = len(images)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "conditions.json").write_text(json.dumps({
        "split": args.split, "seed": args.seed, "mirror_average": args.mirror_average, "photos": sizes,
        "held_out_by_seed": {n: split[0] for n, split in splits.items() if split},
        "models": {n: str(p) for n, p in models.items()}, "accuracy": results}, indent=1) + "\n")
    text = table(results)
    (args.output / "conditions.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
