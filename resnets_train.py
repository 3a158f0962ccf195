"""Train, evaluate and save ResNet50 on the SIGNS data: ``make train`` or ``python -m resnets_train``.

Three recipes, so the differences can be measured:

* ``DEFAULT`` (this repository's): batch-norm momentum 0.9 instead of 0.99, so the moving averages
  that inference uses catch up with the weights within an epoch; augmentation that mimics how people
  photograph a hand (either hand, a little rotation, framing, zoom, light, the colour of the light, JPEG
  compression); after six epochs, half the photos on new walls (the hand cut out with its mask and put on
  a random colour, gradient, blotches or stripes; the share grows to half over four epochs), so the
  network finds the hand by its shape, not by its colour against this dataset's grey walls; AdamW with a
  three-epoch warm-up to 2e-3 and cosine decay over 25 epochs, gradients clipped to a global norm of 1
  (the walls' arrival makes some batches much harder); label smoothing; a validation split carved from
  the training set, with the best weights (by validation loss) kept.
* ``PLAIN_WALLS``: the default as it was before the new walls (and the clipping that came with them, and
  the longer warm-up and the light and JPEG changes that came after them): as accurate on this dataset's
  photos, far worse on photos with another wall behind the hand.
* ``COURSE``: what the course and the systems this repository learns from use: Adam at 1e-3,
  categorical cross-entropy, batch 32, no augmentation, Keras' default batch-norm momentum (0.99).

All compile without XLA (``jit_compile=False``): on a CPU, Keras' default XLA compilation makes a
ResNet50 training step about four times slower.

Beyond one CPU (``--strategy``): ``mirrored`` trains one replica per GPU of this machine (or per
logical CPU device), ``multi-worker`` one per machine of the cluster that ``TF_CONFIG`` describes.
Each replica keeps the recipe's batch of 32, so batch normalization sees the statistics it was tuned
on (per replica, not synchronised: that would cost an all-reduce in each of the 53 batch-norm layers
per step); the global batch is 32 x replicas and the learning rate grows with it (the linear scaling
rule of Goyal et al., 2017, after the recipe's warm-up). The training data is sharded per worker
(by element: every worker shuffles with the same seed and keeps its share). ``--backup-dir`` saves the
training state after every epoch, so a multi-worker run whose worker died resumes where it was when
the workers are started again; only the chief writes the run's files. ``--precision mixed_bfloat16``
(CPUs with AMX or AVX-512 BF16) or ``mixed_float16`` (GPUs) computes in 16 bits and keeps the weights
in 32.

A run writes to its output folder: ``model.keras`` (written under a temporary name and renamed, so an
interrupted run never leaves a truncated model where a good one is expected), ``history.csv`` and
``history.json``, ``learning_curves.png``, ``confusion_matrix.png``, ``classification_report.txt`` and
``metrics.json`` (test accuracy, wall time, epochs, seed, recipe, versions).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import photo_conditions
import resnets_utils as ru
from resnets_predict import MODEL_FILE, RUNS_DIR
from resnets_utils import keras, layers, tf

DEFAULT_OUTPUT_ROOT = RUNS_DIR


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run except the seed."""

    name: str
    epochs: int
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # "adam" or "adamw"
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_epochs: int = 0  # linear warm-up, then cosine decay to 0; 0 and cosine=False: a constant rate
    cosine: bool = False
    label_smoothing: float = 0.0
    clip_norm: float = 0.0  # if > 0, gradients are scaled down so their global norm is at most this: no step is huge
    bn_momentum: float = 0.99
    augment: bool = False
    tilt: float = 0.05  # the largest random rotation, in turns (0.05: 18 degrees)
    contrast: float = 0.2  # random contrast factors in 1 +- this
    new_walls: float = 0.0  # share of training photos whose wall is replaced: a colour, gradient, blotches or stripes
    new_walls_after_epoch: int = 0  # no new walls before this many epochs: the hand is learnt first
    new_walls_ramp_epochs: int = 0  # then the share grows linearly to ``new_walls`` over this many epochs
    varied_walls: bool = False  # new walls also of many-coloured blotches, stripes of any width and edge, checks, grain
    new_walls_zoom_out: float = 0.0  # a photo on a new wall is also shrunk to a scale in [1 - this, 1], anywhere in the frame
    white_balance: float = 0.0  # per-channel light gains drawn from 1 +- this (warm and cool light)
    greyscale: float = 0.0  # share of training photos turned grey
    jpeg: float = 0.0  # share of training photos saved as a JPEG of quality 20-90 and read back
    validation_per_class: int = 0  # images per class held out of training for validation
    restore_best: bool = False  # keep the weights of the epoch with the lowest validation loss

    def __repr__(self) -> str:
        # The options added after chapter 04 was written are listed only when they differ from their defaults: a
        # recipe that does not use them reads (and prints, as in chapter 04) as it did before they existed.
        shown = [f for f in dataclasses.fields(self) if not (f.name in _LISTED_WHEN_ON and getattr(self, f.name) == f.default)]
        return f"Recipe({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in shown)})"


_LISTED_WHEN_ON = {"tilt", "contrast", "clip_norm", "new_walls", "new_walls_after_epoch", "new_walls_ramp_epochs", "varied_walls", "new_walls_zoom_out", "white_balance",
                   "greyscale", "jpeg"}


DEFAULT = Recipe(
    name="default",
    epochs=25,  # at 20, a seed whose loss jumps early has too little time to recover (docs/results.md)
    learning_rate=2e-3,  # the peak, after the warm-up
    optimizer="adamw",
    weight_decay=5e-4,
    warmup_epochs=3,  # with one, some seeds sat at chance for epochs and met the new walls half-trained (docs/results.md)
    cosine=True,
    label_smoothing=0.1,
    clip_norm=1.0,  # without it, the walls' arrival threw one seed in three back for many epochs (docs/results.md)
    bn_momentum=0.9,
    augment=True,
    new_walls=0.5,  # the other half keeps this dataset's walls: the photos it will be tested on
    new_walls_after_epoch=6,  # the hand on the usual walls first: with new walls from the start, a run did not learn for ten epochs
    new_walls_ramp_epochs=4,
    white_balance=0.15,  # a lamp, the sun or a phone's white balance tints the whole photo
    jpeg=0.3,  # photos sent from a phone are compressed; the training photos are not
    validation_per_class=18,
    restore_best=True,
)
# The default before the new walls: to compare with (docs/results.md#other-conditions-photos-taken-differently).
PLAIN_WALLS = dataclasses.replace(DEFAULT, name="plain-walls", warmup_epochs=1, clip_norm=0.0, new_walls=0.0, new_walls_after_epoch=0,
                                  new_walls_ramp_epochs=0, white_balance=0.0, jpeg=0.0)
COURSE = Recipe(name="course", epochs=20)
RECIPES = {recipe.name: recipe for recipe in (DEFAULT, PLAIN_WALLS, COURSE)}
STRATEGIES = ("none", "mirrored", "multi-worker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def make_strategy(name: str):
    """``None`` for "none" (one device, as in the chapters), else the ``tf.distribute`` strategy of that name."""
    if name == "none":
        return None
    if name == "mirrored":  # every GPU, else every logical CPU device (one, unless split as the tests do)
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy multi-worker needs TF_CONFIG: the cluster's addresses and this worker's index "
                             "(https://www.tensorflow.org/guide/distributed_training#TF_CONFIG).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}.")


def for_replicas(recipe: Recipe, replicas: int) -> Recipe:
    """The recipe for ``replicas`` replicas: the same batch per replica, so a ``replicas`` times larger global
    batch, and the learning rate scaled with it (the warm-up keeps the first steps gentle). Under a strategy,
    Keras clips each replica's share of the gradient (a ``replicas``-th of it) before the shares are summed,
    so each share gets a ``replicas``-th of the clipping norm: the sum stays within the recipe's norm."""
    if replicas == 1:
        return recipe
    return dataclasses.replace(recipe, batch_size=recipe.batch_size * replicas, learning_rate=recipe.learning_rate * replicas,
                               clip_norm=recipe.clip_norm / replicas)


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files: always, except on the non-chief workers of a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def strategy_name(strategy) -> str:
    """The ``--strategy`` name of a strategy object (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    if strategy is None:
        return "none"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi-worker"
    return "mirrored" if isinstance(strategy, tf.distribute.MirroredStrategy) else type(strategy).__name__


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------
def split_validation(labels, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation images: ``per_class`` of each class held out, chosen by ``seed``."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    held_out = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)] if per_class else []
    validation = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=int)
    return np.setdiff1d(np.arange(len(labels)), validation), validation


def subset_per_class(labels, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` images of each class, chosen by ``seed`` (for small-data experiments)."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        in_class = np.flatnonzero(labels == c)
        if per_class > len(in_class):
            raise ValueError(f"Asked for {per_class} images of class {c}, but the training set has {len(in_class)}.")
        chosen.append(rng.permutation(in_class)[:per_class])
    return np.sort(np.concatenate(chosen))


def augmentation(seed: int, tilt: float = 0.05, contrast: float = 0.2) -> keras.Sequential:
    """Random changes that match how people photograph a hand: either hand (a horizontal flip), a tilt of up
    to ``tilt`` of a turn (0.05: 18 degrees), the hand off-centre or nearer/further, and other light and contrast."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(tilt, fill_mode="nearest", seed=seed + 1),
            layers.RandomZoom(0.15, fill_mode="nearest", seed=seed + 2),
            layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 3),
            layers.RandomContrast(contrast, seed=seed + 4),
            layers.RandomBrightness(0.2, value_range=(0.0, 1.0), seed=seed + 5),
        ],
        name="augmentation",
    )


def random_walls(generator: tf.random.Generator, n, size: int, varied: bool = False) -> tf.Tensor:
    """``n`` random ``(size, size, 3)`` walls in [0, 1]: a plain colour (35%), a two-colour gradient (20%), blotches
    (25%) or stripes (20%) at a random angle. Colours are drawn with uniform hue, saturation and brightness,
    so dark, pale, skin-like and vivid walls all occur. ``varied``: plain (20%), gradient (10%), blotches (15%),
    blotches of many colours (20%), stripes of any width and edge (20%) or checks (15%), each with its own grain."""
    def colour():
        hsv = tf.concat([generator.uniform((n, 1, 1, 1)), generator.uniform((n, 1, 1, 1)), generator.uniform((n, 1, 1, 1), 0.1, 1.0)], axis=-1)
        return tf.image.hsv_to_rgb(hsv)

    first, second = colour(), colour()
    ys, xs = tf.meshgrid(tf.linspace(0.0, 1.0, size), tf.linspace(0.0, 1.0, size), indexing="ij")
    angle = generator.uniform((n, 1, 1, 1), 0, np.pi)
    along = xs[None, ..., None] * tf.cos(angle) + ys[None, ..., None] * tf.sin(angle)
    low, high = tf.reduce_min(along, axis=[1, 2], keepdims=True), tf.reduce_max(along, axis=[1, 2], keepdims=True)
    gradient = first + (second - first) * (along - low) / (high - low)
    stripes = first + (second - first) * tf.cast(tf.sin(along * 2 * np.pi * generator.uniform((n, 1, 1, 1), 3, 7)) > 0, tf.float32)
    blotches = first + (second - first) * tf.image.resize(generator.uniform((n, 6, 6, 1)), (size, size), method="bicubic")
    blotches += generator.normal((n, size, size, 3), 0, 0.03)
    kind = generator.uniform((n, 1, 1, 1))
    plain = tf.broadcast_to(first, tf.shape(gradient))
    if not varied:
        walls = tf.where(kind < 0.35, plain, tf.where(kind < 0.55, gradient, tf.where(kind < 0.8, blotches, stripes)))
        return tf.clip_by_value(walls, 0.0, 1.0)
    # Varied: stripes of any width, duty and edge (soft to hard), checks, and blotches of many colours at three
    # scales, each wall with its own grain: textures as a room, a shirt or a tablecloth show them.
    def u(low=0.0, high=1.0):
        return generator.uniform((n, 1, 1, 1), low, high)

    sharpness = tf.exp(u(np.log(2.0), np.log(60.0)))
    across = xs[None, ..., None] * -tf.sin(angle) + ys[None, ..., None] * tf.cos(angle)
    wave = tf.sin(along * 2 * np.pi * u(2, 10) + u(0, 2 * np.pi))
    stripes = first + (second - first) * tf.sigmoid((wave - u(-0.6, 0.6)) * sharpness)
    checks = first + (second - first) * tf.sigmoid(wave * tf.sin(across * 2 * np.pi * u(2, 8)) * sharpness)
    scale = u()
    many = [tf.image.resize(tf.image.hsv_to_rgb(tf.concat([generator.uniform((n, g, g, 2)), generator.uniform((n, g, g, 1), 0.1, 1.0)], -1)),
                            (size, size), method="bicubic") for g in (3, 6, 12)]
    many_colours = tf.where(scale < 1 / 3, many[0], tf.where(scale < 2 / 3, many[1], many[2]))
    walls = tf.where(kind < 0.2, plain, tf.where(kind < 0.3, gradient, tf.where(kind < 0.45, blotches, tf.where(
        kind < 0.65, many_colours, tf.where(kind < 0.85, stripes, checks)))))
    walls += generator.normal((n, size, size, 3)) * u(0.0, 0.05)
    return tf.clip_by_value(walls, 0.0, 1.0)


def _shrink_anywhere(hands, masks, generator: tf.random.Generator, zoom_out: float):
    """The cut-out ``hands`` (photos times ``masks``) and their ``masks``, each pair shrunk to a scale drawn in
    [1 - ``zoom_out``, 1] and moved to a random place in the frame; nothing (a zero mask) around them."""
    n, size = tf.shape(hands)[0], hands.shape[1]
    scale = generator.uniform((n, 1), 1.0 - zoom_out, 1.0)
    offset = generator.uniform((n, 2)) * (1.0 - scale) * size  # the shrunk photo's top-left corner, inside the frame
    zeros, ones = tf.zeros((n, 1)), tf.ones((n, 1))
    # output pixel (x, y) reads input pixel ((x - offset_x) / scale, (y - offset_y) / scale)
    transforms = tf.concat([ones / scale, zeros, -offset[:, :1] / scale, zeros, ones / scale, -offset[:, 1:] / scale, zeros, zeros], axis=1)
    both = tf.raw_ops.ImageProjectiveTransformV3(images=tf.concat([hands, masks], axis=-1), transforms=transforms,
                                                 output_shape=[size, size], fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return both[..., :3], both[..., 3:]


def light_and_compression(images, generator: tf.random.Generator, recipe: Recipe) -> tf.Tensor:
    """The recipe's last photo changes, after ``augmentation``: white-balance gains per colour channel drawn from
    1 +- ``white_balance``, ``greyscale`` of the photos turned grey, then ``jpeg`` of them saved as a JPEG of
    quality 20-90 and read back. ``images``: a batch in [0, 1]; the result is clipped to [0, 1]."""
    n = tf.shape(images)[0]
    if recipe.white_balance:
        images = images * generator.uniform((n, 1, 1, 3), 1 - recipe.white_balance, 1 + recipe.white_balance)
    if recipe.greyscale:
        grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(images))
        images = tf.where(generator.uniform((n, 1, 1, 1)) < recipe.greyscale, grey, images)
    images = tf.clip_by_value(images, 0.0, 1.0)
    if recipe.jpeg:
        qualities = tf.cast(generator.uniform((n,), 20, 91), tf.int32)
        compressed = tf.map_fn(lambda pair: tf.image.adjust_jpeg_quality(pair[0], pair[1]), (images, qualities),
                               fn_output_signature=tf.float32)
        images = tf.where(generator.uniform((n, 1, 1, 1)) < recipe.jpeg, compressed, images)
    return images


def make_dataset(x, y_one_hot, batch_size: int, seed: int, recipe: Recipe | None = None, shuffle: bool = True, shard: bool = False) -> tf.data.Dataset:
    """A ``tf.data`` pipeline of scaled images and one-hot labels, shuffled unless ``shuffle`` is false.

    ``recipe``: a training recipe whose photo changes to apply (none if ``None`` or its ``augment`` is off):
    ``new_walls`` of the photos get ``random_walls`` behind the hand (its mask, ``photo_conditions.hand_alpha``,
    computed once per photo; none in the first ``new_walls_after_epoch`` epochs, then a share that grows
    linearly to ``new_walls`` over ``new_walls_ramp_epochs``; with ``new_walls_zoom_out`` the hand is also
    shrunk, and the new wall fills the frame around it), then every photo gets ``augmentation`` and
    ``light_and_compression``.
    ``shard``: on a cluster, each worker keeps its share of every batch (by element: there are no files).
    """
    augment = recipe is not None and recipe.augment
    walls = augment and recipe.new_walls > 0
    columns = (ru.to_model_input(x), y_one_hot.astype(np.float32))
    if walls:
        columns += (photo_conditions.hand_alpha(np.asarray(x))[..., None].astype(np.float32),)
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment:
        augmenter = augmentation(seed, recipe.tilt, recipe.contrast)
        generator = tf.random.Generator.from_seed(seed + 10)  # used in order (no parallel map): the same draws every run
        batches_made = tf.Variable(0, dtype=tf.int64, trainable=False)  # counts in the same order: the epoch, for the ramp
        steps_per_epoch = math.ceil(len(x) / batch_size)

        def change(images, labels, masks=None):
            n = tf.shape(images)[0]
            if walls:
                epoch = tf.cast(batches_made.assign_add(1) - 1, tf.float32) // steps_per_epoch
                ramp = (epoch - recipe.new_walls_after_epoch + 1) / max(recipe.new_walls_ramp_epochs, 1)
                share = recipe.new_walls * tf.clip_by_value(ramp, 0.0, 1.0)
                hands = images * masks
                if recipe.new_walls_zoom_out:
                    hands, masks = _shrink_anywhere(hands, masks, generator, recipe.new_walls_zoom_out)
                on_new_wall = hands + random_walls(generator, n, images.shape[1], recipe.varied_walls) * (1.0 - masks)
                images = tf.where(generator.uniform((n, 1, 1, 1)) < share, on_new_wall, images)
            return light_and_compression(augmenter(images, training=True), generator, recipe), labels

        dataset = dataset.map(change)
    if shard:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(options)
    return dataset.prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------
def build_model(recipe: Recipe, steps_per_epoch: int, input_shape=(64, 64, 3), classes: int = 6):
    """ResNet50 from ``resnets_utils``, with the recipe's batch-norm momentum, optimizer, schedule and loss."""
    model = ru.ResNet50(input_shape=input_shape, classes=classes)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = recipe.bn_momentum
    return compile_model(model, recipe, steps_per_epoch)


def compile_model(model, recipe: Recipe, steps_per_epoch: int):
    """Compile ``model`` with the recipe's optimizer, learning-rate schedule and loss; return it."""
    total_steps = recipe.epochs * steps_per_epoch
    if recipe.cosine:
        warmup_steps = recipe.warmup_epochs * steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else recipe.learning_rate,
            decay_steps=max(total_steps - warmup_steps, 1),
            warmup_target=recipe.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    else:
        learning_rate = recipe.learning_rate
    clipping = {"global_clipnorm": recipe.clip_norm} if recipe.clip_norm else {}
    if recipe.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=recipe.weight_decay, **clipping)
    elif recipe.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate, **clipping)
    else:
        raise ValueError(f"Unknown optimizer {recipe.optimizer!r}; use 'adam' or 'adamw'.")
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
        jit_compile=False,  # XLA makes ResNet50 training ~4x slower on a CPU
    )
    return model


def save_model_atomically(model, path: Path) -> None:
    """Save ``model`` for inference to a temporary file beside ``path``, then rename: ``path`` is complete or untouched.

    What is saved is an uncompiled model with the same layers and weights: the ``.keras`` format would
    otherwise include the optimizer's state, twice the size of the weights (283 MB instead of 95 MB for
    ResNet50 with AdamW), which predictions never use.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}.keras")
    inference_model = keras.Model(model.input, model.output, name=model.name)  # same layers, not compiled
    try:
        inference_model.save(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class _ChiefsBackup(keras.callbacks.BackupAndRestore):
    """Keras' ``BackupAndRestore`` for a cluster: the chief writes the backup, and every worker restores from
    it, so all resume from the same epoch. (With a copy per worker, a worker killed between two epochs'
    backups left the copies an epoch apart; restarted, the workers ran different epochs and their
    collectives no longer matched.) On separate machines ``backup_dir`` must be storage that all of them read."""

    def __init__(self, backup_dir, chief: bool):
        super().__init__(str(backup_dir), double_checkpoint=True, delete_checkpoint=chief)
        self.chief = chief

    def on_train_begin(self, logs=None):
        if self.chief:
            return super().on_train_begin(logs)
        try:  # read only: restoring is the chief's to repair
            self._load_model()
        except OSError:  # the chief's latest state is unreadable: it goes back to its previous one, so does this worker
            self._weights_path, self._training_metadata_path = self._prev_weights_path, self._prev_training_metadata_path
            self._load_model()

    def _save_model(self):
        if self.chief:
            super()._save_model()


# ----------------------------------------------------------------------------------------------------
# A whole run
# ----------------------------------------------------------------------------------------------------
def train(recipe: Recipe, seed: int, output_dir: Path | None = None, verbose: int = 1, data=None, callbacks=(), model=None,
          train_per_class: int | None = None, strategy=None, precision: str = "float32", backup_dir: Path | None = None) -> dict:
    """Train ``recipe`` with ``seed``, evaluate on the test set, and (if ``output_dir``) write every artefact.

    Sets the global seeds and TensorFlow's op determinism, so the same seed gives the same numbers.
    ``data`` defaults to ``ru.load_dataset()``; ``train_per_class`` keeps only that many training images
    of each class (chosen by ``seed``). ``model`` (optional) is a network to train instead of a new
    ResNet50, e.g. chapter 05's with a frozen backbone; it is compiled here with the recipe. Returns the
    metrics dict (also written as ``metrics.json``) with the model under ``"model"`` and the Keras history
    under ``"history"``. ``strategy`` (from ``make_strategy``), ``precision`` and ``backup_dir``: see the
    module's docstring; with a strategy the recipe is scaled by ``for_replicas``.
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    x_train_all, y_train_all, x_test, y_test, classes = data if data is not None else ru.load_dataset()
    y_train_all, y_test = y_train_all.reshape(-1), y_test.reshape(-1)
    if train_per_class is not None:
        kept = subset_per_class(y_train_all, train_per_class, seed)
        x_train_all, y_train_all = x_train_all[kept], y_train_all[kept]
    n_classes = len(classes)
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    recipe = for_replicas(recipe, replicas)
    train_idx, val_idx = split_validation(y_train_all, recipe.validation_per_class, seed)
    one_hot = lambda y: ru.convert_to_one_hot(y, n_classes)  # noqa: E731
    shard = strategy is not None
    train_data = make_dataset(x_train_all[train_idx], one_hot(y_train_all[train_idx]), recipe.batch_size, seed, recipe, shard=shard)
    val_data = (
        make_dataset(x_train_all[val_idx], one_hot(y_train_all[val_idx]), 64 * replicas, seed, shuffle=False, shard=shard)
        if len(val_idx)
        else None
    )
    steps_per_epoch = math.ceil(len(train_idx) / recipe.batch_size)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)  # layers built from here on compute in this precision
    try:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            if model is None:
                model = build_model(recipe, steps_per_epoch, input_shape=x_train_all.shape[1:], classes=n_classes)
            else:
                compile_model(model, recipe, steps_per_epoch)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    fit_callbacks = list(callbacks)
    if backup_dir is not None:
        fit_callbacks.append(_ChiefsBackup(backup_dir, chief=is_chief(strategy)))
    if recipe.restore_best and val_data is not None:
        fit_callbacks.append(_RestoreBestWeights())
    on_a_cluster = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with _keras_on_a_cluster(model, strategy, train_data) if on_a_cluster else contextlib.nullcontext():
        start = time.perf_counter()
        history = model.fit(train_data, validation_data=val_data, epochs=recipe.epochs, verbose=verbose, callbacks=fit_callbacks, shuffle=False)
        train_seconds = time.perf_counter() - start
        probabilities = model.predict(ru.to_model_input(x_test), batch_size=64, verbose=0)
    predictions = probabilities.argmax(axis=1)
    metrics = {
        "recipe": dataclasses.asdict(recipe),
        "seed": seed,
        "classes": [c.item() if hasattr(c, "item") else c for c in classes],
        "epochs_run": len(history.history["loss"]),
        "best_epoch": next((cb.best_epoch for cb in fit_callbacks if isinstance(cb, _RestoreBestWeights)), None),
        "train_images": int(len(train_idx)),
        "validation_images": int(len(val_idx)),
        "test_images": int(len(y_test)),
        "test_accuracy": float((predictions == y_test).mean()),
        "train_wall_time_s": round(train_seconds, 1),
        "versions": versions(),
    }
    if strategy is not None or precision != "float32":
        metrics |= {"strategy": strategy_name(strategy), "replicas": replicas, "precision": precision}
    if output_dir is not None and is_chief(strategy):
        write_run(Path(output_dir), model, history.history, metrics, y_test, predictions, classes)
    return {**metrics, "model": model, "history": history.history, "test_predictions": predictions}


@contextlib.contextmanager
def _keras_on_a_cluster(model, strategy, dataset):
    """Work around two faults of Keras 3's ``fit`` under MultiWorkerMirroredStrategy (tensorflow/tensorflow#72388):

    * it peeks at one distributed batch and averages it with ``strategy.reduce`` to learn the input shapes,
      which fails for an (images, labels) pair ("Attempt to convert a value (PerReplica...)"): build from a
      local batch first, so there is nothing left to build;
    * it averages each step's logs across workers along axis 0, which a scalar does not have ("Invalid
      reduction dimension 0"): average them as the scalars they are, for the time of this ``fit``.
    """
    from keras.src.backend.tensorflow import trainer

    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(dataset)))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean"):
            return keras.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None) if isinstance(v, tf.distribute.DistributedValues) else v, values)
        return original(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        trainer.reduce_per_replica = original
        del model._maybe_symbolic_build


class _RestoreBestWeights(keras.callbacks.Callback):
    """Keep the weights of the epoch with the lowest validation loss and put them back when training ends."""

    def on_train_begin(self, logs=None):
        self.best_loss, self.best_epoch, self.best_weights = math.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_loss"] < self.best_loss:
            self.best_loss, self.best_epoch, self.best_weights = logs["val_loss"], epoch + 1, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def write_run(output_dir: Path, model, history: dict, metrics: dict, y_true, y_pred, classes) -> None:
    """Write the model, history, figures, report and metrics of a finished run to ``output_dir``."""
    from sklearn.metrics import classification_report, confusion_matrix

    output_dir.mkdir(parents=True, exist_ok=True)
    save_model_atomically(model, output_dir / MODEL_FILE)
    epochs = range(1, len(history["loss"]) + 1)
    with open(output_dir / "history.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *history])
        writer.writerows([epoch, *(round(float(history[k][i]), 6) for k in history)] for i, epoch in enumerate(epochs))
    (output_dir / "history.json").write_text(json.dumps({k: [float(v) for v in vals] for k, vals in history.items()}, indent=1) + "\n")
    names = [str(c) for c in classes]
    report = classification_report(y_true, y_pred, labels=list(range(len(classes))), target_names=names, digits=3, zero_division=0)
    (output_dir / "classification_report.txt").write_text(f"Test set, {len(y_true)} images\n\n{report}")
    ru.use_course_style()
    for filename, figure in (
        ("learning_curves.png", ru.plot_learning_curves(history, f"ResNet50, {metrics['recipe']['name']} recipe, seed {metrics['seed']}")),
        ("confusion_matrix.png", ru.plot_confusion_matrix(confusion_matrix(y_true, y_pred, labels=list(range(len(classes)))), classes)),
    ):
        figure.savefig(output_dir / filename)
        plt.close(figure)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


_OWN_OPTIONS = {"epochs": "--epochs", "batch_size": "--batch-size"}  # the recipe's fields that have a command-line option


def _recipe_change(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` for ``--set``: a field of ``Recipe`` (not its name) and a value of that field's type."""
    field_name, sep, value = text.partition("=")
    if field_name in _OWN_OPTIONS:  # one way to set each: --set epochs=35 beside --epochs 3 would be ambiguous
        raise argparse.ArgumentTypeError(f"{field_name} has an option of its own: {_OWN_OPTIONS[field_name]} {value or 'N'}")
    fields = {f.name: f for f in dataclasses.fields(Recipe) if f.name != "name" and f.name not in _OWN_OPTIONS}
    if not sep or field_name not in fields:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with FIELD one of {', '.join(fields)}; got {text!r}")
    kind = type(getattr(DEFAULT, field_name))
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"{field_name} is true or false, got {value!r}")
        return field_name, value.lower() == "true"
    try:
        return field_name, kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{field_name} needs a {kind.__name__}, got {value!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m resnets_train", description="Train ResNet50 on the SIGNS data and save the run.")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                        help="default: this repository's; plain-walls: the default without new walls behind the hand (as before 2026-11); course: Adam 1e-3, no augmentation")
    parser.add_argument("--epochs", type=_positive_int, help="number of epochs (default: the recipe's)")
    parser.add_argument("--batch-size", type=_positive_int, help="images per batch (default: the recipe's, 32)")
    parser.add_argument("--set", type=_recipe_change, action="append", default=[], metavar="FIELD=VALUE", dest="changes",
                        help="change one setting of the recipe, e.g. --set clip_norm=0 (repeatable; the fields are resnets_train.Recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights' order, split, shuffling and augmentation (default 0)")
    parser.add_argument("--output-dir", type=Path, help="where to write the run (default: runs/<recipe>-seed<seed>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--strategy", choices=STRATEGIES, default="none", help="none (default): one device; mirrored: every GPU "
                        "(or logical CPU) of this machine; multi-worker: the machines in TF_CONFIG. Batch 32 per replica.")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help="mixed_bfloat16 for CPUs with AMX/AVX-512 BF16, "
                        "mixed_float16 for GPUs (default float32)")
    parser.add_argument("--backup-dir", type=Path, help="save the training state here after every epoch and resume from it "
                        "when started again (for multi-worker runs that lose a worker; the chief writes it, every worker reads it: shared storage)")
    args = parser.parse_args(argv)
    if args.output_dir is None:
        args.output_dir = DEFAULT_OUTPUT_ROOT / f"{args.recipe}-seed{args.seed}"
    if args.output_dir.exists() and not args.output_dir.is_dir():
        parser.error(f"--output-dir {args.output_dir} is a file; give a folder")
    if args.batch_size is not None and args.batch_size > 1080:
        parser.error(f"--batch-size {args.batch_size} is larger than the training set")
    return args


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe ``--recipe`` names, with ``--epochs``, ``--batch-size`` and each ``--set`` applied."""
    recipe = RECIPES[args.recipe]
    return dataclasses.replace(recipe, epochs=args.epochs or recipe.epochs, batch_size=args.batch_size or recipe.batch_size, **dict(args.changes))


def main(argv=None) -> int:
    args = parse_args(argv)
    recipe = recipe_from_args(args)
    try:
        strategy = make_strategy(args.strategy)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create --output-dir {args.output_dir}: {exc}", file=sys.stderr)
        return 2
    replicas = f", {strategy.num_replicas_in_sync} replicas" if strategy is not None else ""
    print(f"Training ResNet50, {recipe.name} recipe, {recipe.epochs} epochs, seed {args.seed}{replicas} -> {args.output_dir}", flush=True)
    try:
        result = train(recipe, args.seed, args.output_dir, verbose=0 if args.quiet else 1, strategy=strategy,
                       precision=args.precision, backup_dir=args.backup_dir)
    except ru.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nInterrupted: the run did not finish. {MODEL_FILE} files are only ever written whole.", file=sys.stderr)
        return 130
    saved = f"Saved {args.output_dir / MODEL_FILE}." if is_chief(strategy) else "The chief saves the run."
    print(
        f"Test accuracy {result['test_accuracy']:.1%} after {result['epochs_run']} epochs "
        f"({result['train_wall_time_s']:.0f} s of training). {saved}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
