"""What the measurement scripts (benchmark, ablation) share: bookkeeping that no lesson or service needs.

* ``TestAccuracyEachEpoch``: test accuracy after every epoch, for reports only (nothing is chosen with it).
* ``ZeroInitResidual``: the zero-initialised residual batch norm variant that the ablation measures
  (each block's last batch norm starts at gamma = 0, so every block starts as its shortcut; Goyal et
  al., 2017). It is in neither recipe: docs/results.md says why.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import resnets_utils as ru  # noqa: E402
from resnets_utils import keras, layers  # noqa: E402


class TestAccuracyEachEpoch(keras.callbacks.Callback):
    """After every epoch, record the test accuracy and the training time so far, for reports only
    (benchmarks, ablations): nothing is chosen with it. The time spent measuring is not counted."""

    def __init__(self, images, labels):
        super().__init__()
        self.images, self.labels = ru.to_model_input(images), np.asarray(labels).reshape(-1)
        self.records = []

    def on_train_begin(self, logs=None):
        self.elapsed, self.epoch_start = 0.0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        epoch_s = time.perf_counter() - self.epoch_start  # before the measurement below
        self.elapsed += epoch_s
        predictions = self.model.predict(self.images, batch_size=64, verbose=0).argmax(axis=1)
        self.records.append(
            {"epoch": epoch + 1, "epoch_s": round(epoch_s, 2), "elapsed_s": round(self.elapsed, 2), "test_accuracy": float((predictions == self.labels).mean())}
        )


def residual_branch_norms(model) -> list:
    """The batch-norm layer at the end of each block's main path (the first input of each ``Add``)."""
    norms = []
    for layer in model.layers:
        if isinstance(layer, layers.Add):
            producer = layer.input[0]._keras_history.operation
            if not isinstance(producer, layers.BatchNormalization):
                raise ValueError(f"{layer.name}: expected its first input to come from a BatchNormalization, got {producer.name}")
            norms.append(producer)
    return norms


class ZeroInitResidual(keras.callbacks.Callback):
    """Before training starts, set gamma = 0 in the batch norm that ends each residual block's main path."""

    def on_train_begin(self, logs=None):
        for norm in residual_branch_norms(self.model):
            norm.gamma.assign(np.zeros(norm.gamma.shape, dtype="float32"))
