"""The TF Serving export of the trained ResNet50: how close to ``ru.predict_image``, and what batching buys.

    python tools/serving_benchmark.py [--model runs/default-seed0/model.keras]   # -> runs/serving_benchmark/

Exports the model to a scratch folder, sends the 120 test photos (the archive's 100x100 JPEG files) as the
REST body a client would post, and compares every answer with ``ru.predict_image`` on the same file. Then
calls the signature with 1, 8, 32 and 64 photos per call (``--batches``; the median of several calls each)
and reports photos per second: what TF Serving's request batching would buy on this CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import resnets_export as rx  # noqa: E402
import resnets_utils as ru  # noqa: E402
import signs_dataset as sd  # noqa: E402
from resnets_predict import CLASSES, DEFAULT_MODEL, RUNS_DIR, load_model  # noqa: E402

BATCHES = (1, 8, 32, 64)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seconds", type=float, default=10.0, help="time spent per batch size (default 10)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), metavar="N",
                        help="photos per call to time (default 1 8 32 64; 1 2 is what a photo and its mirror image cost)")
    parser.add_argument("--out", type=Path, default=RUNS_DIR / "serving_benchmark")
    args = parser.parse_args(argv)
    if min(args.batches) < 1:
        parser.error(f"--batches: each is a number of photos, at least 1; got {min(args.batches)}")
    manifest = sd.read_manifest()
    try:  # the archive's own JPEG files are what a client would send
        images = sd.read_verified_images(sd.find_source(download=False), manifest)
    except sd.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    model = load_model(args.model)
    _, test = sd.split_names(list(manifest))
    files, labels = [images[name] for name, _ in test], [label for _, label in test]

    with tempfile.TemporaryDirectory() as scratch:
        signature = ru.tf.saved_model.load(str(rx.export(model, Path(scratch) / "resnets"))).signatures["serving_default"]
        answers = rx.rest_predict(signature, rx.request_body(files))["predictions"]
        expected = [ru.predict_image(model, f, classes=CLASSES) for f in files]
        differences = [abs(a["probabilities"][i] - e["probabilities"][c]) for a, e in zip(answers, expected) for i, c in enumerate(CLASSES)]
        agreement = {
            "photos": len(files),
            "same_label": sum(a["label"] == str(e["label"]) for a, e in zip(answers, expected)),
            "max_probability_difference": max(differences),
            "median_probability_difference": statistics.median(differences),
            "export_accuracy": sum(a["label"] == str(label) for a, label in zip(answers, labels)) / len(files),
        }
        print(json.dumps(agreement), flush=True)

        throughput = []
        for batch in args.batches:
            encoded = ru.tf.constant((files * (batch // len(files) + 1))[:batch])
            signature(image_bytes=encoded)  # warm-up
            times, start = [], time.perf_counter()
            while time.perf_counter() - start < args.seconds or len(times) < 3:
                tick = time.perf_counter()
                signature(image_bytes=encoded)
                times.append(time.perf_counter() - tick)
            median = statistics.median(times)
            throughput.append({"batch": batch, "calls": len(times), "ms_per_call": round(median * 1000, 1),
                               "photos_per_s": round(batch / median, 1)})
            print(json.dumps(throughput[-1]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving_benchmark.json").write_text(json.dumps({"agreement": agreement, "throughput": throughput}, indent=1) + "\n")
    lines = ["| photos per call | ms per call (median) | photos per second |", "| --- | --- | --- |"]
    lines += [f"| {t['batch']} | {t['ms_per_call']} | {t['photos_per_s']} |" for t in throughput]
    (args.out / "serving_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
