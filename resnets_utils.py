"""Shared code for *ResNets, step by step*: data, figures, and the reference ResNet50.

Every notebook, script and service imports what it needs from here, so each thing is defined once:

* **Data**: ``load_dataset`` (course-compatible), ``convert_to_one_hot``, ``prepare_image`` (the one
  image preprocessing used for training data and for "your own" photos), ``show_samples``,
  ``plot_class_balance``.
* **Model**: ``identity_block``, ``convolutional_block``, ``ResNet50``; the notebooks teach the same code,
  and a test keeps the two identical.
* **Results**: ``expect``, the check a chapter puts under a measurement: it states the conclusion, which
  holds on every CPU, rather than trusting digits that differ from one CPU to another.
* **Figures**: ``use_course_style`` (one matplotlib style for all chapters and ``images/``),
  ``plot_model`` (``keras.utils.plot_model`` with a clear message when Graphviz is missing).
* **Experiments**: ``deep_stack`` and ``kernel_gradient_norms`` for chapter 01's measurement,
  ``cost_per_stage`` for chapter 03's, ``stage_of_each_layer`` to freeze a ResNet by stage (chapter 05).
* **Explaining**: ``grad_cam``, ``superimpose_heatmap``, ``hand_mask``, ``heatmap_mass_on`` and ``heatmap_peak_on``
  (chapter 05: where the network looks, and whether that is on the hand).

Importing this module imports TensorFlow with its C++ start-up logs silenced, so import it *before*
``tensorflow`` or ``keras`` and no log lines reach a notebook's outputs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np

import signs_dataset
from signs_dataset import DatasetError, ImageError, ImageTooLargeError, NotAnImageError, prepare_image  # noqa: F401 - re-exported


@contextlib.contextmanager
def _stderr_silenced():
    """Point file descriptor 2 at /dev/null for a moment: TensorFlow's C++ code logs there directly."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# TensorFlow's C++ logs go straight to file descriptor 2, past Python, into notebook outputs. Level 3
# hides them all: TF 2.21 logs harmless "errors" (e.g. tf.data's "NodeDef mentions attribute
# use_unbounded_threadpool") on every fit, and real failures still arrive as Python exceptions. The
# absl lines printed while TensorFlow loads and probes for GPUs ignore the level, so both happen with
# stderr silenced. Set TF_CPP_MIN_LOG_LEVEL yourself (0-2) to see the logs when debugging TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI, BF16 or AMX; elsewhere (AVX2-only
# laptops and servers) it falls back to Eigen, which trains ResNet50 2.6 times slower (an AMD EPYC: 2.6 s a training step
# against 1.0 s; docs/results.md). Set TF_ENABLE_ONEDNN_OPTS=0 yourself for Eigen's kernels (`make test-portability` does).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
with _stderr_silenced():
    import tensorflow as tf
    import keras

    tf.config.list_physical_devices()
tf.get_logger().setLevel("ERROR")  # TensorFlow's Python-side warnings (e.g. about retracing) are log noise too

from keras import layers  # noqa: E402 - after the quiet import above
from keras.initializers import glorot_uniform, random_uniform  # noqa: E402

# Okabe & Ito's palette: distinguishable with every common form of colour blindness.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


# ----------------------------------------------------------------------------------------------------
# What a result must show
# ----------------------------------------------------------------------------------------------------
class ExpectationFailed(AssertionError):
    """A measured result contradicts what the chapter teaches about it."""


def expect(claim: str, holds: bool, measured: str | None = None) -> None:
    """Check a conclusion the chapter draws from a measurement, and print it with a tick.

    Numbers that come out of training differ a little from one CPU to another (the same sums run in a
    different order), so the chapters do not rely on their digits; they state the conclusion instead,
    with bounds that every CPU meets and a broken recipe does not. ``measured`` (the numbers behind the
    claim) goes into the error message when the claim does not hold.
    """
    if not holds:
        raise ExpectationFailed(f"Expected: {claim}. It does not hold" + (f"; measured: {measured}." if measured else "."))
    print(f"✓ {claim}")


# ----------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------
def use_course_style() -> None:
    """Apply the one matplotlib style every chapter and every figure in ``images/`` uses."""
    plt.rcParams.update(
        {
            "figure.figsize": (7.0, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.titleweight": "bold",
            "axes.labelsize": 11,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.prop_cycle": plt.cycler(color=PALETTE),
            "image.cmap": "viridis",
            "legend.frameon": False,
        }
    )


def plot_model(model, to_file, **kwargs):
    """``keras.utils.plot_model`` with shapes shown, and a clear message when Graphviz is missing.

    Drawing a model needs the ``dot`` program from Graphviz (a system package, not a pip one).
    Returns what ``plot_model`` returns: an image the notebook displays.
    """
    if shutil.which("dot") is None:
        raise RuntimeError(
            "Drawing a model needs Graphviz's `dot` program, which is not on PATH. Install it with "
            "`sudo apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
            "`conda install graphviz`, then restart the kernel."
        )
    kwargs.setdefault("show_shapes", True)
    kwargs.setdefault("dpi", 72)
    return keras.utils.plot_model(model, to_file=str(to_file), **kwargs)


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------
def load_dataset(data_dir: str | Path | None = None):
    """Load the SIGNS data exactly as the course does, building the h5 files first if they are absent.

    Returns ``X_train_orig, Y_train_orig, X_test_orig, Y_test_orig, classes``: images as uint8 arrays
    of shape ``(m, 64, 64, 3)``, labels as int64 arrays of shape ``(1, m)``, and the class labels.
    ``data_dir`` defaults to the repository's ``datasets/``; the course's own ``train_signs.h5`` and
    ``test_signs.h5`` can be dropped in there instead.
    """
    data_dir = Path(data_dir) if data_dir is not None else signs_dataset.DATA_DIR
    train_path, test_path = signs_dataset.ensure_built(data_dir)
    x_train, y_train, _ = _read_signs_h5(train_path, "train")
    x_test, y_test, classes = _read_signs_h5(test_path, "test")
    return x_train, y_train.reshape(1, -1), x_test, y_test.reshape(1, -1), classes


def _read_signs_h5(path: Path, prefix: str):
    fix = f"Delete {path} and run `make data` (or `python -m signs_dataset`) to rebuild it."
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in (f"{prefix}_set_x", f"{prefix}_set_y", "list_classes") if k not in f]
            if missing:
                raise DatasetError(f"{path} is not a SIGNS file: it has no {', '.join(missing)}. {fix}")
            x, y, classes = (np.array(f[k][:]) for k in (f"{prefix}_set_x", f"{prefix}_set_y", "list_classes"))
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read ({exc}); it is corrupt or incomplete. {fix}") from None
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] != y.shape[0]:
        raise DatasetError(f"{path} holds images of shape {x.shape} and {y.shape[0]} labels; expected (m, h, w, 3) and m. {fix}")
    return x, y, classes


def to_model_input(images) -> np.ndarray:
    """Scale uint8 images (one ``(64, 64, 3)`` image or a batch) to the float32 [0, 1] range the model trains on.

    The one place the scaling is defined: training, evaluation, the predict script and the server use it.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images (0-255), got {images.dtype}; pass the arrays load_dataset or prepare_image return.")
    return images.astype(np.float32) / 255.0


def make_predictor(model):
    """A traced inference function of ``model``: a float32 batch ``(n, h, w, 3)`` in [0, 1] -> probabilities.

    For one image at a time (a server, a photo), ``model.predict`` spends most of its time setting up a
    data pipeline and callbacks; the traced function runs just the graph, and it is safe to call from
    several threads at once.
    """

    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)])
    def predict(images):
        return model(images, training=False)

    return predict


def predict_image(model, source, classes=None) -> dict:
    """Classify one photo (path, file object, bytes or PIL image) exactly as the training images were prepared.

    ``model`` is a Keras model or a function from ``make_predictor``. Returns ``{"label": ...,
    "probability": ..., "probabilities": {label: probability, ...}}`` with the probabilities sorted from
    most to least likely. Raises ``ImageError`` for a file that is not a usable image.
    """
    batch = to_model_input(prepare_image(source))[None]
    outputs = model(batch, training=False) if isinstance(model, keras.Model) else model(tf.constant(batch))
    probabilities = np.asarray(outputs)[0].astype(float)
    classes = list(range(len(probabilities))) if classes is None else [c.item() if hasattr(c, "item") else c for c in classes]
    order = np.argsort(-probabilities, kind="stable")
    ranked = {classes[i]: round(float(probabilities[i]), 6) for i in order}
    best = int(order[0])
    return {"label": classes[best], "probability": round(float(probabilities[best]), 6), "probabilities": ranked}


def convert_to_one_hot(Y, C: int) -> np.ndarray:
    """One-hot encode integer labels ``Y`` (any shape, e.g. the course's ``(1, m)``) as an ``(m, C)`` array.

    Note: the course's helper returned ``(C, m)`` and was followed by ``.T``; here the result is already
    in the ``(examples, classes)`` layout Keras expects.
    """
    labels = np.asarray(Y).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"Labels must lie in 0..{C - 1}; got values from {labels.min()} to {labels.max()}.")
    return np.eye(C, dtype=np.float32)[labels]


def show_samples(X, Y, classes=None, n_per_class: int = 6, seed: int = 0, title: str | None = None):
    """Show a grid of images, one row per class, each row titled with its label. Returns the figure.

    ``Y`` holds class indices (0, 1, ...); ``classes`` names them (digits 6-9 are stored as 0-3, as a
    model's outputs are numbered, with ``classes`` = [6, 7, 8, 9]).
    """
    labels = np.asarray(Y).reshape(-1)
    classes = np.unique(labels) if classes is None else np.asarray(classes).reshape(-1)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(classes), n_per_class, figsize=(1.2 * n_per_class, 1.25 * len(classes)), squeeze=False)
    for class_index, (row, label) in enumerate(zip(axes, classes)):
        picks = rng.choice(np.flatnonzero(labels == class_index), size=n_per_class, replace=False)
        for ax, index in zip(row, picks):
            ax.imshow(X[index])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        row[0].set_ylabel(f"y = {label}", rotation=0, ha="right", va="center", fontsize=11)
    fig.suptitle(title or "Sample images, one row per class", fontweight="bold")
    fig.tight_layout()
    return fig


def plot_class_balance(Y_train, Y_test, classes):
    """Bar chart of how many training and test images each class has. Returns the figure."""
    classes = np.asarray(classes).reshape(-1)
    counts = [np.bincount(np.asarray(y).reshape(-1), minlength=len(classes)) for y in (Y_train, Y_test)]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    width = 0.4
    positions = np.arange(len(classes))
    for offset, count, name in zip((-width / 2, width / 2), counts, ("train", "test")):
        bars = ax.bar(positions + offset, count, width, label=name)
        ax.bar_label(bars, fontsize=9)
    ax.set_xticks(positions, [str(c) for c in classes])
    ax.set_xlabel("class (digit shown by the hand)")
    ax.set_ylabel("number of images")
    ax.set_title("Images per class")
    ax.legend(loc="upper right", ncol=2)
    ax.set_ylim(0, counts[0].max() * 1.3)
    fig.tight_layout()
    return fig


def plot_learning_curves(history: dict, title: str = "Learning curves"):
    """Training and validation loss and accuracy per epoch, side by side. ``history`` is ``History.history``."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric, label in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy")):
        ax.plot(epochs, history[metric], marker="o", markersize=3, label="training")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker="o", markersize=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.legend()
    acc_ax.set_ylim(0, 1.02)
    loss_ax.set_title("Loss")
    acc_ax.set_title("Accuracy")
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def plot_confusion_matrix(matrix, classes, title: str = "Confusion matrix (test set)"):
    """Heat map of a confusion matrix (rows: true class, columns: predicted class) with the counts written in."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.imshow(matrix, cmap="Blues")
    ax.grid(False)
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, [str(c) for c in classes])
    ax.set_yticks(ticks, [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def show_misclassified(X, y_true, y_pred, probabilities, max_images: int = 12):
    """Grid of the images the model got wrong, each titled 'true -> predicted (probability)'. Returns the figure."""
    wrong = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))[:max_images]
    if len(wrong) == 0:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "No misclassified images.", ha="center", va="center")
        return fig
    columns = min(len(wrong), 6)
    rows = int(np.ceil(len(wrong) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(max(1.9 * columns, 4.5), 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index in zip(axes.ravel(), wrong):
        ax.imshow(X[index])
        ax.set_title(f"{y_true[index]} → {y_pred[index]} ({probabilities[index, y_pred[index]]:.0%})", fontsize=10)
    fig.suptitle("Misclassified: true → predicted (probability)", fontweight="bold")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# The model (chapters 01-03 teach this exact code)
# ----------------------------------------------------------------------------------------------------
def identity_block(X, f, filters, training=True, initializer=random_uniform):
    """
    Implementation of the identity block: the shortcut adds the input, unchanged, to the main path.

    Arguments:
    X -- input tensor of shape (m, n_H_prev, n_W_prev, n_C_prev)
    f -- integer, the shape of the middle CONV's window for the main path
    filters -- python list of integers, the number of filters in the CONV layers of the main path
    training -- True: batch normalization uses the batch's statistics (training mode);
                False: it uses its moving averages (inference mode)
    initializer -- to set up the initial weights of a layer; called as initializer(seed=0)

    Returns:
    X -- output of the identity block, tensor of shape (m, n_H, n_W, n_C)
    """
    F1, F2, F3 = filters
    X_shortcut = X

    # First component of the main path: 1x1 convolution that reduces the channels
    X = layers.Conv2D(filters=F1, kernel_size=1, strides=(1, 1), padding="valid",
                      kernel_initializer=initializer(seed=0))(X)
    X = layers.BatchNormalization(axis=3)(X, training=training)
    X = layers.Activation("relu")(X)

    # Second component: f x f convolution, 'same' padding keeps the height and width
    X = layers.Conv2D(filters=F2, kernel_size=f, strides=(1, 1), padding="same",
                      kernel_initializer=initializer(seed=0))(X)
    X = layers.BatchNormalization(axis=3)(X, training=training)
    X = layers.Activation("relu")(X)

    # Third component: 1x1 convolution that restores the channels; no ReLU before the addition
    X = layers.Conv2D(filters=F3, kernel_size=1, strides=(1, 1), padding="valid",
                      kernel_initializer=initializer(seed=0))(X)
    X = layers.BatchNormalization(axis=3)(X, training=training)

    # Final step: add the shortcut to the main path, then apply the ReLU
    X = layers.Add()([X, X_shortcut])
    X = layers.Activation("relu")(X)
    return X


def convolutional_block(X, f, filters, s=2, training=True, initializer=glorot_uniform):
    """
    Implementation of the convolutional block: the shortcut has a 1x1 convolution, so the block can
    change the height, width and number of channels.

    Arguments:
    X -- input tensor of shape (m, n_H_prev, n_W_prev, n_C_prev)
    f -- integer, the shape of the middle CONV's window for the main path
    filters -- python list of integers, the number of filters in the CONV layers of the main path
    s -- integer, the stride of the first CONV and of the shortcut CONV
    training -- True: batch normalization uses the batch's statistics (training mode);
                False: it uses its moving averages (inference mode)
    initializer -- to set up the initial weights of a layer; called as initializer(seed=0)

    Returns:
    X -- output of the convolutional block, tensor of shape (m, n_H, n_W, n_C)
    """
    F1, F2, F3 = filters
    X_shortcut = X

    # Main path, first component: 1x1 convolution with stride s shrinks height and width
    X = layers.Conv2D(filters=F1, kernel_size=1, strides=(s, s), padding="valid",
                      kernel_initializer=initializer(seed=0))(X)
    X = layers.BatchNormalization(axis=3)(X, training=training)
    X = layers.Activation("relu")(X)

    # Second component: f x f convolution with 'same' padding
    X = layers.Conv2D(filters=F2, kernel_size=f, strides=(1, 1), padding="same",
                      kernel_initializer=initializer(seed=0))(X)
    X = layers.BatchNormalization(axis=3)(X, training=training)
    X = layers.Activation("relu")(X)

    # Third component: 1x1 convolution to F3 channels; no ReLU before the addition
    X = layers.Conv2D(filters=F3, kernel_size=1, strides=(1, 1), padding="valid",
                      kernel_initializer=initializer(seed=0))(X)
    X = layers.BatchNormalization(axis=3)(X, training=training)

    # Shortcut path: 1x1 convolution with stride s, then batch normalization, so the shapes match
    X_shortcut = layers.Conv2D(filters=F3, kernel_size=1, strides=(s, s), padding="valid",
                               kernel_initializer=initializer(seed=0))(X_shortcut)
    X_shortcut = layers.BatchNormalization(axis=3)(X_shortcut, training=training)

    # Final step: add the shortcut to the main path, then apply the ReLU
    X = layers.Add()([X, X_shortcut])
    X = layers.Activation("relu")(X)
    return X


def ResNet50(input_shape=(64, 64, 3), classes=6):
    """
    Stage-wise implementation of ResNet50:
    ZEROPAD -> CONV2D -> BATCHNORM -> RELU -> MAXPOOL -> CONVBLOCK -> IDBLOCK*2 -> CONVBLOCK -> IDBLOCK*3
    -> CONVBLOCK -> IDBLOCK*5 -> CONVBLOCK -> IDBLOCK*2 -> AVGPOOL -> FLATTEN -> DENSE

    Arguments:
    input_shape -- shape of the images of the dataset
    classes -- integer, number of classes

    Returns:
    model -- a keras.Model

    The blocks are called with training=None, so Keras decides: fit() uses batch statistics and updates
    the moving averages, predict(), evaluate() and model(x) use the moving averages.
    """
    X_input = keras.Input(input_shape, name="image")

    # Stage 1: the "stem" shrinks 64x64 to 15x15 before the expensive stages
    X = layers.ZeroPadding2D((3, 3))(X_input)
    X = layers.Conv2D(64, (7, 7), strides=(2, 2), kernel_initializer=glorot_uniform(seed=0))(X)
    X = layers.BatchNormalization(axis=3)(X)
    X = layers.Activation("relu")(X)
    X = layers.MaxPooling2D((3, 3), strides=(2, 2))(X)

    # Stage 2
    X = convolutional_block(X, f=3, filters=[64, 64, 256], s=1, training=None)
    X = identity_block(X, 3, [64, 64, 256], training=None)
    X = identity_block(X, 3, [64, 64, 256], training=None)

    # Stage 3
    X = convolutional_block(X, f=3, filters=[128, 128, 512], s=2, training=None)
    for _ in range(3):
        X = identity_block(X, 3, [128, 128, 512], training=None)

    # Stage 4
    X = convolutional_block(X, f=3, filters=[256, 256, 1024], s=2, training=None)
    for _ in range(5):
        X = identity_block(X, 3, [256, 256, 1024], training=None)

    # Stage 5
    X = convolutional_block(X, f=3, filters=[512, 512, 2048], s=2, training=None)
    for _ in range(2):
        X = identity_block(X, 3, [512, 512, 2048], training=None)

    # Head: average pooling, flatten, and a softmax over the classes
    X = layers.AveragePooling2D((2, 2))(X)
    X = layers.Flatten()(X)
    X = layers.Dense(classes, activation="softmax", kernel_initializer=glorot_uniform(seed=0),
                     name="predictions")(X)

    return keras.Model(inputs=X_input, outputs=X, name="ResNet50")


def cost_per_stage(model, blocks_per_stage=(3, 4, 6, 3)) -> list[tuple[str, tuple, int, int]]:
    """Split a ResNet's cost by stage: ``[(stage name, output shape, parameters, multiply-adds), ...]``.

    Multiply-adds are per image, counted for Conv2D (output positions x window x input x output channels)
    and Dense layers; the rest is negligible. Stages are as ``stage_of_each_layer`` assigns them.
    """
    names = stage_names(blocks_per_stage)
    params, macs, shapes = dict.fromkeys(names, 0), dict.fromkeys(names, 0), dict.fromkeys(names)
    for layer, stage in zip(model.layers, stage_of_each_layer(model, blocks_per_stage)):
        params[stage] += layer.count_params()
        macs[stage] += _multiply_adds(layer)
        shapes[stage] = tuple(layer.output.shape[1:])
    return [(name, shapes[name], params[name], macs[name]) for name in names]


def stage_names(blocks_per_stage=(3, 4, 6, 3)) -> list[str]:
    return ["stage 1 (stem)"] + [f"stage {i + 2}" for i in range(len(blocks_per_stage))] + ["head"]


def stage_of_each_layer(model, blocks_per_stage=(3, 4, 6, 3)) -> list[str]:
    """The stage name of each of ``model.layers``, in order (for freezing and unfreezing by stage).

    Stage 1 (the stem) ends with the first max-pooling layer. A residual block ends with the ReLU that
    follows its Add, and ``blocks_per_stage`` says how many blocks stages 2, 3, ... have (ResNet50: 3, 4,
    6, 3). Whatever follows the last block is the head.
    """
    names = stage_names(blocks_per_stage)
    stage_ends = set(np.cumsum(blocks_per_stage).tolist())
    stage, blocks_done, previous, result = 0, 0, None, []
    for layer in model.layers:
        result.append(names[stage])
        if stage == 0 and isinstance(layer, layers.MaxPooling2D):
            stage = 1
        elif isinstance(previous, layers.Add) and isinstance(layer, layers.Activation):
            blocks_done += 1
            stage += blocks_done in stage_ends
        previous = layer
    return result


def stage_output_layers(model, blocks_per_stage=(3, 4, 6, 3)) -> dict[str, str]:
    """``{stage name: name of the stage's last layer}``: where each stage's feature map comes out."""
    last = {}
    for layer, stage in zip(model.layers, stage_of_each_layer(model, blocks_per_stage)):
        last[stage] = layer.name
    return last


def _multiply_adds(layer) -> int:
    if isinstance(layer, layers.Conv2D):
        height, width, out_channels = layer.output.shape[1:]
        kernel_h, kernel_w = layer.kernel_size
        return int(height * width * kernel_h * kernel_w * layer.input.shape[-1] * out_channels)
    if isinstance(layer, layers.Dense):
        return int(layer.input.shape[-1] * layer.units)
    return 0


# ----------------------------------------------------------------------------------------------------
# Chapter 01's experiment: why depth alone does not help
# ----------------------------------------------------------------------------------------------------
def deep_stack(blocks: int, residual: bool, input_shape=(16, 16, 3), width: int = 16, classes: int = 6):
    """A deep network of ``blocks`` two-layer units, with or without skip connections.

    Each unit is conv3x3 -> BN -> ReLU -> conv3x3 -> BN, then (``residual=True``) the unit's input is
    added, then a ReLU: the layout of ResNet's basic block. With ``residual=False`` the addition is
    left out and nothing else changes, weights included (same seeds). ``2 * blocks + 1`` conv layers in
    all. Returns a ``keras.Model``.
    """
    x_in = keras.Input(input_shape)
    x = layers.Conv2D(width, 3, padding="same", kernel_initializer=glorot_uniform(seed=0))(x_in)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    for i in range(blocks):
        y = layers.Conv2D(width, 3, padding="same", kernel_initializer=glorot_uniform(seed=2 * i + 1))(x)
        y = layers.Activation("relu")(layers.BatchNormalization()(y))
        y = layers.Conv2D(width, 3, padding="same", kernel_initializer=glorot_uniform(seed=2 * i + 2))(y)
        y = layers.BatchNormalization()(y)
        if residual:
            y = layers.Add()([x, y])
        x = layers.Activation("relu")(y)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(classes, activation="softmax", kernel_initializer=glorot_uniform(seed=0))(x)
    return keras.Model(x_in, out, name=("residual" if residual else "plain") + f"_{2 * blocks + 1}_layers")


def kernel_gradient_norms(model, x, y) -> np.ndarray:
    """L2 norm of the loss gradient for each Conv2D kernel of ``model``, first layer first."""
    kernels = [layer.kernel for layer in model.layers if isinstance(layer, layers.Conv2D)]
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return np.array([float(tf.norm(g)) for g in tape.gradient(loss, kernels)])


# ----------------------------------------------------------------------------------------------------
# Chapter 05: where the network looks (Grad-CAM)
# ----------------------------------------------------------------------------------------------------
def grad_cam(model, images, layer_name: str, class_index=None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heatmaps (Selvaraju et al., 2017) of ``layer_name``'s feature map for uint8 ``images``.

    For each image: the gradient of the class's score (the logit, before the softmax) with respect to
    the layer's feature map, averaged over the positions, weighs each channel; the weighted sum of the
    channels, through a ReLU, is the heatmap. ``class_index`` is one int, one per image, or ``None`` for
    the predicted class. The model's last layer must be a Dense layer (its softmax is undone so the
    logit is used). Returns ``(heatmaps, class_indices)``: heatmaps of shape ``(n, h, w)`` at the layer's
    resolution, each scaled to a maximum of 1 (all zeros where no position speaks for the class).
    """
    images = np.asarray(images)
    batch = to_model_input(images[None] if images.ndim == 3 else images)
    head = model.layers[-1]
    if not isinstance(head, layers.Dense):
        raise ValueError(f"grad_cam needs a model whose last layer is Dense; {model.name}'s is {type(head).__name__}.")
    try:
        feature_layer = model.get_layer(layer_name)
    except ValueError:
        raise ValueError(f"{model.name} has no layer named {layer_name!r}; see stage_output_layers(model).") from None
    probe = keras.Model(model.input, [feature_layer.output, head.input])
    with tf.GradientTape() as tape:
        feature_map, head_input = probe(batch, training=False)
        logits = tf.matmul(head_input, head.kernel) + head.bias
        if class_index is None:
            classes = tf.argmax(logits, axis=1)
        else:
            classes = tf.broadcast_to(tf.constant(class_index, dtype=tf.int64), [len(batch)])
        scores = tf.gather(logits, classes, batch_dims=1)
    gradients = tape.gradient(scores, feature_map)
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    heatmaps = tf.nn.relu(tf.reduce_sum(channel_weights * feature_map, axis=-1)).numpy()
    peaks = heatmaps.max(axis=(1, 2), keepdims=True)
    heatmaps = np.divide(heatmaps, peaks, out=np.zeros_like(heatmaps), where=peaks > 0)
    return heatmaps, classes.numpy()


def upsample_heatmap(heatmap, size: int = 64) -> np.ndarray:
    """A ``(h, w)`` heatmap (or a batch ``(n, h, w)``) resized bilinearly to ``size`` x ``size``, to lie over the photo."""
    return tf.image.resize(np.asarray(heatmap, dtype=np.float32)[..., None], (size, size), method="bilinear").numpy()[..., 0]


def superimpose_heatmap(image, heatmap, alpha: float = 0.45, colormap: str = "inferno") -> np.ndarray:
    """The uint8 photo with the heatmap (any resolution, values in [0, 1]) laid over it in colour; uint8 RGB."""
    image = np.asarray(image)
    coloured = plt.get_cmap(colormap)(np.clip(upsample_heatmap(heatmap, image.shape[0]), 0, 1))[..., :3] * 255
    return np.clip((1 - alpha) * image + alpha * coloured, 0, 255).astype(np.uint8)


def hand_mask(images, threshold: int = 40) -> np.ndarray:
    """Boolean masks of the hand pixels in uint8 photos on this dataset's plain grey or white backgrounds.

    Skin is redder than it is blue; the backgrounds are grey, white or bluish. A pixel whose red value
    exceeds its blue value by more than ``threshold`` (of 255) counts as hand. Good enough to measure
    where a heatmap lies on these photos, not a general hand detector.
    """
    images = np.asarray(images).astype(np.int16)
    return (images[..., 0] - images[..., 2]) > threshold


def heatmap_peak_on(heatmaps, masks) -> np.ndarray:
    """For each heatmap (upsampled to the masks' size), whether its hottest pixel lies on the mask."""
    masks = np.asarray(masks)
    up = upsample_heatmap(heatmaps, masks.shape[1])
    peaks = up.reshape(len(up), -1).argmax(axis=1)
    return masks.reshape(len(masks), -1)[np.arange(len(masks)), peaks] & (up.max(axis=(1, 2)) > 0)


def heatmap_mass_on(heatmaps, masks) -> np.ndarray:
    """Share of each heatmap's total (after upsampling to the masks' size) that lies on the mask's pixels."""
    masks = np.asarray(masks)
    up = upsample_heatmap(heatmaps, masks.shape[1])
    totals = up.sum(axis=(1, 2))
    return np.divide((up * masks).sum(axis=(1, 2)), totals, out=np.full(len(up), np.nan), where=totals > 0)
