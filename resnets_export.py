"""Export a trained model for TensorFlow Serving: ``python -m resnets_export [--model PATH] [--out DIR]``.

Writes a SavedModel into TF Serving's versioned layout, ``<out>/<next version>/`` (default
``runs/serving/resnets/1/``, then ``2/``, ...), written to a temporary folder and renamed, so TF Serving,
which watches ``<out>``, never sees half a version. Its ``serving_default`` signature takes what a client
sends, the encoded image file (``image_bytes``: base64 in TF Serving's REST JSON, ``{"b64": ...}``), and
prepares it inside the graph as ``signs_dataset.prepare_image`` does for ``ru.predict_image``:

* decode (JPEG, PNG, GIF's first frame, BMP), grey to RGB, a transparent background made white;
* centre crop to a square, 64x64 Lanczos resize with antialiasing, rounded to whole 0-255 values;
* scale to [0, 1] and run the network.

It answers, per image, ``label``, ``probability``, ``probabilities`` and ``classes`` (the labels, in the order
of ``probabilities``). What differs from ``ru.predict_image``: TensorFlow's decoders ignore EXIF orientation
(a phone photo taken upright but stored sideways arrives sideways: rotate it on the client, or use
``api.py``), WebP is not decoded, and there are no pixel limits (put TF Serving behind a proxy that caps the
request size). JPEG decoding and the Lanczos kernel differ from Pillow's in the last digits: tests/test_export.py
measures by how much.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
from pathlib import Path

import resnets_utils as ru
from resnets_predict import CLASSES, DEFAULT_MODEL, RUNS_DIR, ModelError, load_model
from resnets_utils import keras, tf
from signs_dataset import IMAGE_SIZE

DEFAULT_OUT = RUNS_DIR / "serving" / "resnets"  # TF Serving: --model_base_path=<this>, --model_name=resnets
INPUT_NAME = "image_bytes"


def prepare_encoded(data: tf.Tensor, size: int = IMAGE_SIZE) -> tf.Tensor:
    """One encoded image (a scalar string tensor) -> ``(size, size, 3)`` float32 in [0, 1], as ``prepare_image``."""
    image = tf.cond(  # JPEG with the accurate inverse DCT, as Pillow: TensorFlow's default differs by up to 16 levels
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=0, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False),
    )
    pixels = tf.cast(image, tf.float32)
    channels = tf.shape(pixels)[-1]
    rgb = tf.cond(channels >= 3, lambda: pixels[..., :3], lambda: tf.repeat(pixels[..., :1], 3, axis=-1))
    alpha = tf.cond(channels % 2 == 0, lambda: pixels[..., -1:] / 255.0, lambda: tf.ones_like(pixels[..., :1]))
    rgb = rgb * alpha + 255.0 * (1.0 - alpha)  # grey+alpha and RGBA over white, as prepare_image composites them
    height, width = tf.shape(rgb)[0], tf.shape(rgb)[1]
    side = tf.minimum(height, width)
    square = tf.image.crop_to_bounding_box(rgb, (height - side) // 2, (width - side) // 2, side, side)
    resized = tf.image.resize(square, (size, size), method="lanczos3", antialias=True)
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0) / 255.0  # whole values, like the uint8 images trained on


def export(model, out: Path = DEFAULT_OUT, classes=CLASSES) -> Path:
    """Write ``model`` as the next version under ``out``; return the version's folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    versions = [int(p.name) for p in out.iterdir() if p.is_dir() and p.name.isdigit()]
    target = out / str(max(versions, default=0) + 1)
    labels = tf.constant([str(c) for c in classes])
    if model.output_shape[-1] != len(classes):
        raise ValueError(f"The model has {model.output_shape[-1]} outputs but {len(classes)} class labels were given.")

    def serve(image_bytes):
        images = tf.map_fn(prepare_encoded, image_bytes, fn_output_signature=tf.TensorSpec((IMAGE_SIZE, IMAGE_SIZE, 3), tf.float32))
        probabilities = model(images, training=False)
        best = tf.argmax(probabilities, axis=-1)
        return {
            "label": tf.gather(labels, best),
            "probability": tf.reduce_max(probabilities, axis=-1),
            "probabilities": probabilities,
            "classes": tf.tile(labels[None], [tf.shape(probabilities)[0], 1]),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[tf.TensorSpec((None,), tf.string, name=INPUT_NAME)])
    temporary = out / f".{target.name}.partial-{os.getpid()}"
    try:
        archive.write_out(str(temporary), verbose=False)
        os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return target


def rest_predict(signature, body: str | bytes) -> dict:
    """What TF Serving's REST API does with ``body`` for this signature, without the server: parse the
    ``{"instances": [{"b64": ...}, ...]}`` (or ``[{"image_bytes": {"b64": ...}}]``) JSON, call the signature,
    and answer ``{"predictions": [{output: value}, ...]}``. For the tests and the batching benchmark."""
    instances = json.loads(body)["instances"]
    encoded = [item[INPUT_NAME]["b64"] if INPUT_NAME in item else item["b64"] for item in instances]
    outputs = signature(**{INPUT_NAME: tf.constant([base64.b64decode(e) for e in encoded])})
    outputs = {name: value.numpy() for name, value in outputs.items()}
    rows = []
    for i in range(len(encoded)):
        row = {}
        for name, value in outputs.items():
            item = value[i]
            row[name] = item.decode() if isinstance(item, bytes) else [v.decode() for v in item] if item.dtype.kind in "OS" else item.tolist()
        rows.append(row)
    return {"predictions": rows}


def request_body(files) -> str:
    """The JSON a client posts to ``/v1/models/resnets:predict`` for these encoded image files."""
    return json.dumps({"instances": [{"b64": base64.b64encode(data).decode()} for data in files]})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnets_export", description="Export the trained model for TensorFlow Serving.")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"the trained model (default: {DEFAULT_MODEL.relative_to(RUNS_DIR.parent)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the model's base path; the export goes into its next numbered folder")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
        target = export(model, args.out)
    except (ModelError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Exported {args.model} for TF Serving: {target}. Serve it with:\n"
          f"  docker run --rm -p 8501:8501 -v {target.parent.resolve()}:/models/resnets -e MODEL_NAME=resnets tensorflow/serving")
    return 0


if __name__ == "__main__":
    sys.exit(main())
