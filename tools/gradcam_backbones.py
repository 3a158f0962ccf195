"""How much of the Grad-CAM maps lies on the hand, for several chapter-04 networks: on their own task, and transferred.

    python tools/gradcam_backbones.py runs/default-seed0/model.keras runs/default-seed1/model.keras [...]
        [--output runs/gradcam-backbones]

For each trained network (``make train ARGS="--seed N --output-dir DIR"`` writes one), two measurements
with the layer chapter 05 uses (stage 4's output, 4x4):

* on its own task: the network and its classifier, on the 120 test photos of digits 0-5;
* transferred: chapter 05's transfer learning (``resnets_transfer.train_transfer``, seed 0: new head,
  then stage 5 fine-tuned) on digits 6-9, then Grad-CAM of that network on their 80 test photos.

Reported per network: the share of the heatmap mass on the hand (``ru.hand_mask``) against the hand's
share of a photo, and in how many photos the hottest point is on the hand; plus the transfer accuracies.
Writes ``gradcam_backbones.json`` and ``gradcam_backbones.md`` (the table in docs/results.md) to ``--output``.
Each network takes about three minutes on the 2-core machine (the transfer training).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import resnets_transfer as rtl  # noqa: E402
import resnets_utils as ru  # noqa: E402
import signs_dataset  # noqa: E402


def on_hand(model, images) -> dict:
    """Grad-CAM of the predicted class on ``rtl.grad_cam_layer``: mass share and hottest point on the hand."""
    masks = ru.hand_mask(images)
    heatmaps, _ = ru.grad_cam(model, images, rtl.grad_cam_layer(model))
    peaks = ru.heatmap_peak_on(heatmaps, masks)
    return {
        "hand_share": float(masks.mean()),
        "mass_on_hand": float(np.nanmean(ru.heatmap_mass_on(heatmaps, masks))),
        "peak_on_hand": int(peaks.sum()),
        "photos": len(peaks),
    }


def measure(model_path: Path, own_digits, new_digits) -> dict:
    """Both measurements for one network; ``own_digits`` and ``new_digits`` as ``ru.load_dataset`` returns them."""
    backbone = rtl.load_base(model_path)
    predictions = backbone.predict(ru.to_model_input(own_digits[2]), verbose=0).argmax(axis=1)
    transfer = rtl.train_transfer(seed=0, data=new_digits, base=rtl.load_base(model_path), verbose=0)
    return {
        "model": str(model_path),
        "test_accuracy": float((predictions == own_digits[3].reshape(-1)).mean()),
        "own_task": on_hand(backbone, own_digits[2]),
        "transfer_head_accuracy": transfer["head_test_accuracy"],
        "transfer_accuracy": transfer["test_accuracy"],
        "transferred": on_hand(transfer["model"], new_digits[2]),
    }


def table(results: list[dict]) -> str:
    """The table in docs/results.md: one row per network."""
    def cell(r):
        return f"{r['mass_on_hand']:.1%} (hand {r['hand_share']:.1%}), {r['peak_on_hand']} of {r['photos']}"

    lines = [
        "| network | test accuracy, digits 0-5 | own task: mass on the hand, hottest point on it | transfer to 6-9: head, fine-tuned "
        "| transferred: mass on the hand, hottest point on it |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['test_accuracy']:.1%} | {cell(r['own_task'])} "
            f"| {r['transfer_head_accuracy']:.1%}, {r['transfer_accuracy']:.1%} | {cell(r['transferred'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="trained chapter-04 networks (model.keras)")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "gradcam-backbones")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.models if not path.is_file()]
    if missing:
        parser.error(f"no such model file: {', '.join(missing)} (make train ARGS=\"--seed N --output-dir DIR\" writes one)")
    own_digits, new_digits = ru.load_dataset(), ru.load_dataset(signs_dataset.NEW_CLASSES_DIR)
    results = []
    for path in args.models:
        print(f"Measuring {path} ...", flush=True)
        results.append(measure(path, own_digits, new_digits))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "gradcam_backbones.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.output / "gradcam_backbones.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
