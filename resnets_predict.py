"""Classify a photo with a trained model: ``python -m resnets_predict IMAGE [--model PATH] [--json]``.

The photo goes through ``resnets_utils.predict_image``: the same preparation as the training images
(EXIF rotation, RGB, centre crop, 64x64 Lanczos resize, scaling to [0, 1]).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import resnets_utils as ru

# Where `make train` (resnets_train) writes its runs, and the model the command line and the service use.
RUNS_DIR = Path(__file__).resolve().parent / "runs"
MODEL_FILE = "model.keras"
DEFAULT_MODEL = RUNS_DIR / "default-seed0" / MODEL_FILE
CLASSES = [0, 1, 2, 3, 4, 5]  # the SIGNS digits the default model predicts, in the order of its outputs


class ModelError(RuntimeError):
    """No usable trained model; the message says how to get one."""


def load_model(path: Path = DEFAULT_MODEL):
    """Load a trained model, or raise ``ModelError`` saying which command trains one."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"No trained model at {path}. Train one with `make train` (about 10 minutes on a laptop CPU).")
    try:
        return ru.keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure to read the file gets the same advice
        raise ModelError(f"{path} is not a loadable Keras model ({type(exc).__name__}: {str(exc)[:200]}). Train again with `make train`.") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnets_predict", description="Classify a photo of a hand sign (digits 0-5).")
    parser.add_argument("image", type=Path, help="the photo (JPEG, PNG, ...; any size)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="trained model (default: runs/default-seed0/model.keras, what `make train` writes)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        result = ru.predict_image(load_model(args.model), args.image, CLASSES)
    except (ModelError, ru.ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.image}: {result['label']} ({result['probability']:.1%})")
        for label, probability in result["probabilities"].items():
            print(f"  {label}: {probability:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
