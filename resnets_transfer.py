"""Transfer learning: reuse a trained ResNet50 for new hand signs, and show where it looks (chapter 05).

The network chapter 04 trained on digits 0-5 becomes a *backbone*: its layers up to the 2048 features
before the classifier are frozen, a new classifier ("head") for digits 6-9 is trained on top, then the
last stage is fine-tuned with a small learning rate. Training goes through ``resnets_train.train``, the
one training loop of the repository (same data pipeline, augmentation, optimizer and schedule code).

Batch normalization is the trap: a frozen layer must also *normalize* as it did when it was trained,
with its moving averages. In Keras 3 a ``BatchNormalization`` layer with ``trainable = False`` runs in
inference mode, so ``freeze`` freezes every layer, batch norm included, and ``unfreeze_stage`` leaves
batch norm frozen while the convolutions learn.

Command line (``make transfer``)::

    python -m resnets_transfer train                    # digits 6-9 on chapter 04's model -> runs/transfer-6to9/
    python -m resnets_transfer train --base imagenet    # the same on Keras' ImageNet ResNet50 (a download)
    python -m resnets_transfer predict photo.jpg        # prediction.json and heatmap.png -> runs/transfer-6to9/predict/
    python -m resnets_transfer compare                  # transfer against from scratch at 5, 20, 60, 180 photos per class

``train`` writes the saved model (Keras format), ``model_summary.txt``, ``architecture.png``, learning
curves, the classification report, the confusion matrix, the history and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import resnets_train as rt
import resnets_utils as ru
import signs_dataset
from resnets_predict import DEFAULT_MODEL, ModelError, load_model
from resnets_utils import keras, layers

DEFAULT_OUTPUT_DIR = rt.DEFAULT_OUTPUT_ROOT / "transfer-6to9"
IMAGENET = "imagenet"
# Grad-CAM's layer: stage 4's output, 4x4 positions at 64x64 input (stage 5's is 2x2); chapter 05 measures why.
GRAD_CAM_STAGE = "stage 4"

# The head is one layer on standardized features: a large rate is safe and makes the most of few images. Fine-tuning
# moves weights that already work: Adam moves every weight by about the learning rate per step, and stage 5 has 15M
# of them, so its rate is 1,000x smaller.
HEAD = rt.Recipe(
    name="transfer, new head", epochs=8, learning_rate=1e-2, optimizer="adamw", weight_decay=5e-4,
    cosine=True, label_smoothing=0.1, augment=True,
)
FINE_TUNE = dataclasses.replace(HEAD, name="transfer, fine-tune stage 5", epochs=4, learning_rate=1e-5)
# From scratch with the same budget: as many epochs as the head and the fine-tuning together, and the same photos
# (no new walls, light or JPEG changes, which the transfer recipes do not use either); the warm-up is one epoch of
# the twelve.
SCRATCH = dataclasses.replace(rt.DEFAULT, name="from scratch", epochs=HEAD.epochs + FINE_TUNE.epochs, warmup_epochs=1,
                              validation_per_class=0, restore_best=False, new_walls=0.0, new_walls_after_epoch=0, new_walls_ramp_epochs=0,
                              white_balance=0.0, jpeg=0.0)


class TransferError(RuntimeError):
    """The backbone cannot be had (no trained model, no ImageNet weights offline); the message says what to do."""


# ----------------------------------------------------------------------------------------------------
# Backbones and the new network
# ----------------------------------------------------------------------------------------------------
def load_base(path: Path = DEFAULT_MODEL):
    """Chapter 04's trained ResNet50 (``make train``), or ``TransferError`` saying how to get it."""
    try:
        return load_model(path)
    except ModelError as exc:
        raise TransferError(str(exc)) from None


def imagenet_base(input_shape=(64, 64, 3), weights: str | None = IMAGENET):
    """Keras' ResNet50 trained on ImageNet, as a backbone taking this repository's [0, 1] images.

    ``keras.applications.ResNet50`` expects 0-255 pixels with its own per-channel ImageNet means
    subtracted (``preprocess_input``), so that is built into the model. The weights (94 MB) are a
    download on first use; offline this raises ``TransferError`` with what to do. ``weights=None``
    builds the same architecture with random weights (tests, or to look at it).
    """
    inputs = keras.Input(input_shape, name="image")
    pixels = layers.Rescaling(255.0, name="to_0_255")(inputs)
    pixels = keras.applications.resnet.preprocess_input(pixels)
    try:
        backbone = keras.applications.ResNet50(include_top=False, weights=weights, input_tensor=pixels, pooling="avg")
    except Exception as exc:  # noqa: BLE001 - a failed download surfaces as several exception types
        raise TransferError(
            f"Could not get Keras' ImageNet weights for ResNet50 ({type(exc).__name__}: {str(exc)[:200]}). They are a "
            "94 MB download from storage.googleapis.com into ~/.keras/models/. Connect to the internet once, or copy "
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 there, or use the model chapter 04 trains (the default)."
        ) from None
    return keras.Model(inputs, backbone.output, name="ResNet50_imagenet")


def features_of(base):
    """The tensor of 2048 features in ``base``'s graph: the input of its classifier, or its output if it has none."""
    last = base.layers[-1]
    return last.input if isinstance(last, layers.Dense) else base.output


def freeze(model, batch_norm: bool = True) -> None:
    """Freeze every layer of ``model``. ``batch_norm=False`` leaves the batch-norm layers trainable: the
    common mistake chapter 05 measures (they then normalize with each batch's statistics while training)."""
    for layer in model.layers:
        layer.trainable = not batch_norm and isinstance(layer, layers.BatchNormalization)


def transfer_model(base, classes: int, train_images, freeze_batch_norm: bool = True, seed: int = 0):
    """``base`` frozen, with a new classifier for ``classes`` classes on its 2048 features.

    The head standardizes each feature with its mean and spread over ``train_images`` (uint8), then
    applies dropout and a softmax layer. The standardization matters: after the last ReLU and the
    average pooling, every feature of chapter 04's model sits near 1.25 and varies by only about 0.1
    between photos, so without it the new layer learns very slowly (measured in chapter 05). The new
    network shares ``base``'s layers (one flat graph, so Grad-CAM can reach any of them).
    """
    freeze(base, batch_norm=freeze_batch_norm)
    features = features_of(base)
    standardize = layers.Normalization(name="new_standardize")
    standardize.adapt(keras.Model(base.input, features).predict(ru.to_model_input(train_images), batch_size=64, verbose=0))
    x = layers.Dropout(0.2, seed=seed, name="new_dropout")(standardize(features))
    outputs = layers.Dense(classes, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed), name="new_predictions")(x)
    return keras.Model(base.input, outputs, name=f"{base.name}_transfer")


def unfreeze_stage(model, stage: str = "stage 5") -> int:
    """Make ``stage``'s convolutions trainable again (batch norm stays frozen); return the trainable parameters."""
    for layer, layer_stage in zip(model.layers, ru.stage_of_each_layer(model)):
        if layer_stage == stage and not isinstance(layer, layers.BatchNormalization):
            layer.trainable = True
    return trainable_parameters(model)


def accuracy_with_batch_statistics(model, images, labels, batch_size: int) -> float:
    """Test accuracy if every batch-norm layer normalized with the statistics of its batch, as in training mode.

    This is what a batch-norm layer does when it is not told it is frozen: each photo's features then
    depend on the other photos in its batch. The model is left exactly as it was (its moving averages,
    which a training-mode call updates, are put back).
    """
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    dropouts = [layer for layer in model.layers if isinstance(layer, layers.Dropout)]
    saved = [(layer.trainable, [w.numpy() for w in layer.weights]) for layer in norms]
    rates = [layer.rate for layer in dropouts]
    try:
        for layer in norms:
            layer.trainable = True  # Keras 3 uses batch statistics only in trainable layers
        for layer in dropouts:
            layer.rate = 0.0  # training=True would also switch dropout on; only batch norm is under study
        x = ru.to_model_input(images)
        predictions = np.concatenate([np.asarray(model(x[i:i + batch_size], training=True)).argmax(axis=1) for i in range(0, len(x), batch_size)])
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
        for layer, (trainable, weights) in zip(norms, saved):
            layer.trainable = trainable
            for variable, value in zip(layer.weights, weights):
                variable.assign(value)
    return float((predictions == np.asarray(labels).reshape(-1)).mean())


def trainable_parameters(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# ----------------------------------------------------------------------------------------------------
# Training: the head, then the last stage; and from scratch for comparison
# ----------------------------------------------------------------------------------------------------
def train_transfer(seed: int = 0, data=None, base=None, train_per_class: int | None = None, head: rt.Recipe = HEAD,
                   fine_tune: rt.Recipe | None = FINE_TUNE, freeze_batch_norm: bool = True, verbose: int = 1, callbacks=()) -> dict:
    """Train a new head on a frozen ``base`` (default: chapter 04's model), then fine-tune stage 5.

    ``data`` defaults to digits 6-9; ``fine_tune=None`` stops after the head. Returns the metrics of the
    last phase plus ``head_test_accuracy``, the combined ``history`` and ``train_wall_time_s`` of both
    phases, and the ``model``.
    """
    data = data if data is not None else ru.load_dataset(signs_dataset.NEW_CLASSES_DIR)
    keras.utils.set_random_seed(seed)
    base = base if base is not None else load_base()
    x_train, y_train = data[0], data[1].reshape(-1)
    kept = rt.subset_per_class(y_train, train_per_class, seed) if train_per_class else np.arange(len(y_train))
    model = transfer_model(base, len(data[4]), x_train[kept], freeze_batch_norm=freeze_batch_norm, seed=seed)
    phases = [rt.train(head, seed, data=data, model=model, train_per_class=train_per_class, verbose=verbose, callbacks=callbacks)]
    if fine_tune is not None:
        unfreeze_stage(model)
        phases.append(rt.train(fine_tune, seed, data=data, model=model, train_per_class=train_per_class, verbose=verbose, callbacks=callbacks))
    result = dict(phases[-1])
    result["history"] = {key: sum((p["history"][key] for p in phases), []) for key in phases[0]["history"]}
    result["head_test_accuracy"] = phases[0]["test_accuracy"]
    result["train_wall_time_s"] = round(sum(p["train_wall_time_s"] for p in phases), 1)
    result["epochs_run"] = sum(p["epochs_run"] for p in phases)
    result["recipe"] = {"head": dataclasses.asdict(head), "fine_tune": dataclasses.asdict(fine_tune) if fine_tune else None}
    return result


def compare_with_scratch(per_class_sizes=(5, 20, 180), seed: int = 0, data=None, base_path: Path = DEFAULT_MODEL, verbose: int = 0,
                         transfer_results: dict | None = None) -> list[dict]:
    """Test accuracy of transfer and of training from scratch (same epochs) at each training-set size.

    Each size uses the same images for both (chosen by ``seed``). ``transfer_results`` maps a size to a
    ``train_transfer`` result already computed, which is used instead of training again. Returns one
    dict per size.
    """
    data = data if data is not None else ru.load_dataset(signs_dataset.NEW_CLASSES_DIR)
    rows = []
    for per_class in per_class_sizes:
        transfer = (transfer_results or {}).get(per_class)
        if transfer is None:
            transfer = train_transfer(seed, data, base=load_base(base_path), train_per_class=per_class, verbose=verbose)
        scratch = rt.train(SCRATCH, seed, data=data, train_per_class=per_class, verbose=verbose)
        rows.append(
            {
                "images_per_class": per_class,
                "transfer_head_accuracy": transfer["head_test_accuracy"],
                "transfer_accuracy": transfer["test_accuracy"],
                "scratch_accuracy": scratch["test_accuracy"],
                "transfer_s": transfer["train_wall_time_s"],
                "scratch_s": scratch["train_wall_time_s"],
            }
        )
    return rows


def plot_transfer_vs_scratch(rows, classes: int, title: str = "Transfer against training from scratch, same epochs"):
    """Test accuracy against training images per class (log scale), both approaches, with chance marked."""
    sizes = [r["images_per_class"] for r in rows]
    fig, ax = plt.subplots()
    ax.plot(sizes, [r["transfer_accuracy"] for r in rows], marker="o", label="transfer: head, then stage 5 fine-tuned")
    ax.plot(sizes, [r["transfer_head_accuracy"] for r in rows], marker="o", linestyle="--", label="transfer: new head only")
    ax.plot(sizes, [r["scratch_accuracy"] for r in rows], marker="s", label="from scratch")
    ax.axhline(1 / classes, color="grey", linewidth=1, linestyle=":")
    ax.text(sizes[0], 1 / classes - 0.07, " chance", color="grey", ha="left")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("training images per class (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def grad_cam_layer(model) -> str:
    """The name of the layer whose feature map Grad-CAM uses (stage 4's output)."""
    return ru.stage_output_layers(model)[GRAD_CAM_STAGE]


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path} does not exist or is not a file")
    return path


def _data_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a folder; give one holding train_signs.h5 and test_signs.h5")
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m resnets_transfer", description="Transfer a trained ResNet50 to new hand signs; explain its predictions with Grad-CAM.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a new head on a frozen backbone, then fine-tune stage 5")
    train.add_argument("--data", type=_data_dir, default=signs_dataset.NEW_CLASSES_DIR, help="folder with train_signs.h5 and test_signs.h5 (default: datasets/digits_6_9, built if absent)")
    train.add_argument("--base", default=str(DEFAULT_MODEL), help="backbone: a trained model file (default: chapter 04's, runs/default-seed0/model.keras) or 'imagenet'")
    train.add_argument("--epochs", type=rt._positive_int, default=HEAD.epochs, help=f"epochs for the new head (default {HEAD.epochs})")
    train.add_argument("--fine-tune-epochs", type=int, default=FINE_TUNE.epochs, help=f"epochs fine-tuning stage 5 afterwards; 0: none (default {FINE_TUNE.epochs})")
    train.add_argument("--batch-size", type=rt._positive_int, default=HEAD.batch_size, help="images per batch (default 32)")
    train.add_argument("--no-augment", action="store_true", help="train without data augmentation")
    train.add_argument("--per-class", type=rt._positive_int, help="use only this many training images per class")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="where to write the run (default: runs/transfer-6to9)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    compare = commands.add_parser("compare", help="transfer against training from scratch at several training-set sizes (a benchmark)")
    compare.add_argument("--sizes", type=rt._positive_int, nargs="+", default=[5, 20, 60, 180], help="training images per class (default 5 20 60 180)")
    compare.add_argument("--base", type=Path, default=DEFAULT_MODEL, help="the trained backbone (default: chapter 04's model)")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--output-dir", type=Path, default=rt.DEFAULT_OUTPUT_ROOT / "transfer-vs-scratch", help="where to write comparison.json and .png")
    predict = commands.add_parser("predict", help="classify a photo and write the Grad-CAM heatmap over it")
    predict.add_argument("image", type=Path, help="the photo (JPEG, PNG, ...; any size)")
    predict.add_argument("--model", type=_existing_file, default=DEFAULT_OUTPUT_DIR / rt.MODEL_FILE, help="a model `train` wrote (default: runs/transfer-6to9/model.keras)")
    predict.add_argument("--output-dir", type=Path, help="where to write prediction.json and heatmap.png (default: predict/ beside the model)")
    args = parser.parse_args(argv)
    if args.output_dir is not None and args.output_dir.exists() and not args.output_dir.is_dir():
        parser.error(f"--output-dir {args.output_dir} is a file; give a folder")
    if args.command == "train" and args.fine_tune_epochs < 0:
        parser.error("--fine-tune-epochs must be 0 or more")
    return args


def run_training(args) -> dict:
    data = ru.load_dataset(args.data)
    base = imagenet_base(data[0].shape[1:]) if args.base == IMAGENET else load_base(Path(args.base))
    head = dataclasses.replace(HEAD, epochs=args.epochs, batch_size=args.batch_size, augment=not args.no_augment)
    fine_tune = dataclasses.replace(FINE_TUNE, epochs=args.fine_tune_epochs, batch_size=args.batch_size, augment=not args.no_augment) if args.fine_tune_epochs else None
    result = train_transfer(args.seed, data, base, train_per_class=args.per_class, head=head, fine_tune=fine_tune, verbose=0 if args.quiet else 1)
    model, out = result["model"], args.output_dir
    metrics = {k: v for k, v in result.items() if k not in ("model", "history", "test_predictions")}
    metrics["base"] = args.base
    metrics["recipe"]["name"] = "transfer"
    out.mkdir(parents=True, exist_ok=True)
    rt.write_run(out, model, result["history"], metrics, data[3].reshape(-1), result["test_predictions"], data[4])
    summary = []
    model.summary(print_fn=lambda line, *_, **__: summary.append(line), line_length=110)
    (out / "model_summary.txt").write_text("\n".join(summary) + "\n")
    ru.plot_model(model, to_file=out / "architecture.png", show_shapes=True, show_trainable=True, dpi=48)
    return metrics


def run_comparison(args) -> list[dict]:
    if max(args.sizes) > signs_dataset.TRAIN_PER_CLASS:
        raise TransferError(f"--sizes go up to {signs_dataset.TRAIN_PER_CLASS}, the training photos per class.")
    load_base(args.base)  # fail now, not after the first size
    data = ru.load_dataset(signs_dataset.NEW_CLASSES_DIR)
    rows = []
    for size in args.sizes:
        rows += compare_with_scratch((size,), seed=args.seed, data=data, base_path=args.base)
        row = rows[-1]
        print(f"{size:4d} per class: transfer {row['transfer_head_accuracy']:.1%} (head), {row['transfer_accuracy']:.1%} (fine-tuned); "
              f"from scratch {row['scratch_accuracy']:.1%} ({row['transfer_s'] + row['scratch_s']:.0f} s of training)", flush=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "comparison.json").write_text(json.dumps({"seed": args.seed, "epochs": SCRATCH.epochs, "rows": rows, "versions": rt.versions()}, indent=1) + "\n")
    figure = plot_transfer_vs_scratch(rows, classes=len(signs_dataset.NEW_CLASSES))
    figure.savefig(args.output_dir / "comparison.png")
    plt.close(figure)
    return rows


def run_prediction(args) -> dict:
    model = load_base(args.model)
    metrics_path = args.model.with_name("metrics.json")
    classes = json.loads(metrics_path.read_text()).get("classes") if metrics_path.is_file() else None
    image = ru.prepare_image(args.image)
    result = ru.predict_image(model, args.image, classes)
    layer = grad_cam_layer(model)
    heatmap, _ = ru.grad_cam(model, image, layer)
    out = args.output_dir or args.model.parent / "predict"
    out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    axes[0].imshow(image)
    axes[0].set_title("photo (as the model sees it)", fontsize=10)
    axes[1].imshow(ru.superimpose_heatmap(image, heatmap[0]))
    axes[1].set_title(f"Grad-CAM for '{result['label']}' ({result['probability']:.0%})", fontsize=10)
    for ax in axes:
        ax.axis("off")
    figure.savefig(out / "heatmap.png", bbox_inches="tight", dpi=150)
    plt.close(figure)
    result = {"image": str(args.image), **result, "grad_cam_layer": layer, "heatmap": str(out / "heatmap.png")}
    (out / "prediction.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "train":
            print(f"Transfer learning on {args.data} from {args.base} -> {args.output_dir}", flush=True)
            start = time.perf_counter()
            metrics = run_training(args)
            print(
                f"Test accuracy {metrics['test_accuracy']:.1%} (new head alone: {metrics['head_test_accuracy']:.1%}) after "
                f"{metrics['epochs_run']} epochs, {time.perf_counter() - start:.0f} s. Wrote {args.output_dir}/."
            )
        elif args.command == "compare":
            run_comparison(args)
            print(f"Wrote {args.output_dir}/comparison.json and comparison.png.")
        else:
            result = run_prediction(args)
            print(json.dumps({k: result[k] for k in ("label", "probability", "probabilities")}))
            print(f"Heatmap: {result['heatmap']}")
    except (TransferError, ru.DatasetError, ru.ImageError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nInterrupted: {rt.MODEL_FILE} files are only ever written whole.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
