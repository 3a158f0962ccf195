"""Check-your-work helpers for the exercises of chapters 01-03.

Each ``check_*`` function runs the reader's function on fixed inputs, then either prints one line that
says it passed or raises ``CheckFailed`` with what is probably wrong. It looks in two places:

* **structure**: the block is built on a symbolic input and its Keras graph is walked back from the
  output: the main path, the shortcut and what follows the ``Add``, layer by layer, are compared with
  the reference implementation's (stored in ``reference/``). This finds the usual mistakes by name (a
  missing final ReLU, a ReLU before the addition, a wrong stride or padding, batch normalization not
  told whether it is training, a shortcut without its batch normalization, an ignored initializer, ...).
* **values**: the block is called eagerly on NumPy inputs with constant initializers, for
  ``training=True`` and ``training=False``, and the outputs are compared with references stored in
  ``reference/``. They were made with this repository's implementation (``python -m resnets_checks
  --write-references``); the course's printed sample values came from TF1's random initializers and
  cannot be reproduced.

``layer_summary`` and ``compare_layer_summaries`` do the same for the whole ResNet50, layer by layer.

Each check is two steps, so the grader can run them apart: ``*_evidence`` calls the reader's function
and returns plain data (never raises), ``judge_*`` compares that data with the reference and raises
``CheckFailed``. The notebooks run both in their kernel; ``classroom`` collects the evidence in a sandbox
and judges it in its own process, where a submission cannot reach. No check calls the reference
implementation, so the grader can hide it from the submission.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import resnets_utils
from resnets_utils import keras, layers

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
BLOCKS_REFERENCE = REFERENCE_DIR / "blocks.json"
RESNET50_REFERENCE = REFERENCE_DIR / "resnet50_layers.json"

RESNET50_TOTALS = {"total": 23_600_006, "trainable": 23_546_886, "non_trainable": 53_120}


class CheckFailed(AssertionError):
    """An exercise's output or structure differs from the reference; the message says how."""


def constant_initializer(seed=0):
    """Every weight 1: makes a block's output depend only on its structure and inputs."""
    return keras.initializers.Constant(value=1.0)


# The inputs of the value checks: three examples whose pixels are all -1, all 1 and all 3, so that ReLUs
# clip some values and not others, and batch statistics differ from the moving averages.
def _block_input(height=4, width=4, channels=3):
    return np.concatenate([np.full((1, height, width, channels), v, dtype=np.float32) for v in (-1.0, 1.0, 3.0)])


BLOCK_CASES = {
    "identity_block": [
        {"f": 2, "filters": [4, 4, 3], "training": False},
        {"f": 2, "filters": [4, 4, 3], "training": True},
        {"f": 3, "filters": [2, 5, 3], "training": True},
    ],
    "convolutional_block": [
        {"f": 2, "filters": [2, 4, 6], "s": 2, "training": False},
        {"f": 2, "filters": [2, 4, 6], "s": 2, "training": True},
        {"f": 3, "filters": [4, 4, 5], "s": 1, "training": True},
    ],
}


# ----------------------------------------------------------------------------------------------------
# Checks the notebooks call
# ----------------------------------------------------------------------------------------------------
def check_identity_block(identity_block) -> None:
    """Check an ``identity_block(X, f, filters, training, initializer)`` implementation."""
    __tracebackhide__ = True  # IPython and pytest show the message, not this helper's frames
    _check_block("identity_block", identity_block)


def check_convolutional_block(convolutional_block) -> None:
    """Check a ``convolutional_block(X, f, filters, s, training, initializer)`` implementation."""
    __tracebackhide__ = True
    _check_block("convolutional_block", convolutional_block)


def check_resnet50(ResNet50) -> None:
    """Check a ``ResNet50(input_shape, classes)`` implementation layer by layer, then its parameter totals."""
    __tracebackhide__ = True
    evidence = resnet50_evidence(ResNet50)
    judge_resnet50(evidence, json.loads(RESNET50_REFERENCE.read_text()), RESNET50_TOTALS)
    totals = evidence["totals"]
    print(
        f"✓ ResNet50 passes: all {len(evidence['summary'])} layers match the reference, "
        f"{totals['total']:,} parameters ({totals['trainable']:,} trainable, {totals['non_trainable']:,} non-trainable)."
    )


NOT_IMPLEMENTED = "not implemented"
PROBE_PHOTOS = 4  # photos predicted together and one at a time


def resnet50_evidence(ResNet50, input_shape=(64, 64, 3), classes=6, probe_weights: bool = False) -> dict:
    """Everything the ResNet50 check needs from the reader's function, as plain data; never raises.

    The model's layer table, its blocks per stage, its parameter totals, and its class probabilities for
    ``PROBE_PHOTOS`` random photos predicted together and one at a time. With ``probe_weights`` the
    weights are first set by ``set_probe_weights``, so two networks of the same structure give the same
    probabilities (the grader compares them with the reference's).
    """
    try:
        model = ResNet50(input_shape=input_shape, classes=classes)
    except NotImplementedError:
        return {"error": NOT_IMPLEMENTED}
    except Exception as exc:  # noqa: BLE001 - any error in the reader's code becomes a message, not a traceback
        return {"error": _describe_exception(exc)}
    if not isinstance(model, keras.Model):
        return {"returned": type(model).__name__}
    evidence = {
        "summary": json.loads(json.dumps(layer_summary(model))),
        "blocks_per_stage": {stage: list(counts) for stage, counts in blocks_per_stage(model).items()},
        "totals": parameter_totals(model),
    }
    try:
        if probe_weights:
            set_probe_weights(model)
        photos = np.random.default_rng(0).random((PROBE_PHOTOS, *input_shape), dtype=np.float32)
        evidence["together"] = np.asarray(model(photos), dtype=np.float32)  # called as chapters 04-06 and Grad-CAM call it
        evidence["one_at_a_time"] = np.concatenate([np.asarray(model(photos[i : i + 1]), dtype=np.float32) for i in range(len(photos))])
    except Exception as exc:  # noqa: BLE001
        evidence["call_error"] = _describe_exception(exc)
    return evidence


def judge_resnet50(evidence: dict, reference_summary: list, reference_totals: dict | None = None, reference_probabilities=None,
                   call: str = "ResNet50(input_shape=(64, 64, 3), classes=6)") -> None:
    """Raise ``CheckFailed`` with what is wrong in ``evidence`` (from ``resnet50_evidence``), or return if it matches."""
    __tracebackhide__ = True
    if evidence.get("error") == NOT_IMPLEMENTED:
        raise CheckFailed("ResNet50 is not implemented yet: replace `raise NotImplementedError()` with your code.")
    if "error" in evidence:
        raise CheckFailed(f"Calling {call} raised {evidence['error']}")
    if "returned" in evidence:
        raise CheckFailed(f"ResNet50 must return a keras.Model; it returned {evidence['returned']}.")
    check_blocks_per_stage(evidence["blocks_per_stage"])
    compare_layer_summaries(evidence["summary"], reference_summary)
    if reference_totals is not None and evidence["totals"] != reference_totals:
        raise CheckFailed(f"Parameter totals {evidence['totals']} differ from the expected {reference_totals}.")
    if "call_error" in evidence:
        raise CheckFailed(f"Calling the model on {PROBE_PHOTOS} photos raised {evidence['call_error']}")
    check_inference_mode(evidence["together"], evidence["one_at_a_time"])
    if reference_probabilities is not None:
        difference = float(np.max(np.abs(np.asarray(evidence["one_at_a_time"]) - reference_probabilities)))
        if not difference <= 1e-3:
            raise CheckFailed(
                f"{call} has the reference's layers, but with the same weights its predictions differ from the reference's "
                f"(class probabilities by up to {difference:.3g}): check what each block takes as input."
            )


def set_probe_weights(model) -> None:
    """Give every weight a value drawn from its position and shape: same structure, same weights.

    Convolution and dense kernels ~ N(0, 1/fan_in), biases and betas small, batch-norm scales and
    moving statistics near 1 and 0, so activations stay in range through 50 layers and the class
    probabilities of two networks can be compared.
    """
    for index, weight in enumerate(model.weights):
        rng = np.random.default_rng(index)
        shape, name = tuple(weight.shape), weight.path.rsplit("/", 1)[-1]
        if name in ("gamma", "moving_variance"):
            values = rng.uniform(0.8, 1.2, shape)
        elif name in ("beta", "moving_mean", "bias"):
            values = rng.uniform(-0.1, 0.1, shape)
        else:
            values = rng.normal(0.0, 1.0 / np.sqrt(max(1, int(np.prod(shape[:-1])))), shape)
        weight.assign(values.astype("float32"))


# Each stage of ResNet50: the number of channels its blocks output, then (convolutional, identity) block counts.
STAGES = {
    "stage 2": (256, (1, 2)),
    "stage 3": (512, (1, 3)),
    "stage 4": (1024, (1, 5)),
    "stage 5": (2048, (1, 2)),
}


def blocks_per_stage(model) -> dict[str, tuple[int, int]]:
    """(convolutional, identity) blocks in each stage of ``model``, found by their ``Add`` layers.

    A block's ``Add`` joins its main path with its shortcut. In a convolutional block both come out of a
    batch normalization (the shortcut has its own convolution and batch norm); in an identity block the
    shortcut is the block's input, the output of the block or pooling before it. The stage is read from
    the number of channels of the block's output, so any input size works.
    """
    counts = {stage: [0, 0] for stage in STAGES}
    for layer in model.layers:
        if not isinstance(layer, layers.Add):
            continue
        channels = layer.output.shape[-1]
        stage = next((name for name, (stage_channels, _) in STAGES.items() if stage_channels == channels), None)
        if stage is None:
            continue  # a block of the wrong width: the layer-by-layer comparison names it
        producers = [tensor._keras_history.operation for tensor in layer.input]
        projection = all(isinstance(producer, layers.BatchNormalization) for producer in producers)
        counts[stage][0 if projection else 1] += 1
    return {stage: tuple(count) for stage, count in counts.items()}


def check_blocks_per_stage(counts: dict) -> None:
    """Raise ``CheckFailed`` naming the first stage whose blocks (from ``blocks_per_stage``) are not one
    convolutional block, then identity blocks."""
    __tracebackhide__ = True

    def blocks(count, kind):
        return f"{count} {kind} block" + ("" if count == 1 else "s")

    for stage, (want_conv, want_identity) in ((stage, spec[1]) for stage, spec in STAGES.items()):
        conv, identity = counts.get(stage, (0, 0))
        if (conv, identity) != (want_conv, want_identity):
            raise CheckFailed(
                f"{stage} has {blocks(conv, 'convolutional')} and {blocks(identity, 'identity')}; it needs "
                f"{blocks(want_conv, 'convolutional')}, then {blocks(want_identity, 'identity')} "
                f"(stages 2 to 5 have 2, 3, 5 and 2 identity blocks)."
            )


def check_inference_mode(together, one_at_a_time) -> None:
    """Raise ``CheckFailed`` if photos predicted together and one at a time get different probabilities.

    A block called with its default ``training=True`` fixes every batch norm in it to training mode, so
    ``model(x)`` normalizes each batch by its own statistics: a photo's prediction then depends on the
    other photos in its batch.
    """
    __tracebackhide__ = True
    difference = float(np.max(np.abs(np.asarray(together) - np.asarray(one_at_a_time))))
    if not difference <= 1e-4:
        raise CheckFailed(
            "Your model predicts a photo differently depending on the other photos in its batch (probabilities "
            f"differ by up to {difference:.2f} between {len(together)} photos at once and one at a time): its batch "
            "normalization uses batch statistics at inference. Call every block with training=None, e.g. "
            "identity_block(X, 3, [64, 64, 256], training=None); the blocks' own default is training=True."
        )


# ----------------------------------------------------------------------------------------------------
# Layer summaries (the Keras 3 version of the course's `summary` and `comparator`)
# ----------------------------------------------------------------------------------------------------
def layer_summary(model) -> list[list]:
    """One row per layer: class, output shape, parameter count, then what matters for that kind of layer.

    Conv2D: padding, activation, kernel initializer, strides. Pooling: pool size, strides, padding.
    ZeroPadding2D: padding. Dense: activation. Rows are lists of JSON-friendly values.
    """
    rows = []
    for layer in model.layers:
        row = [type(layer).__name__, list(layer.output.shape), layer.count_params()]
        if isinstance(layer, layers.Conv2D):
            row += [layer.padding, layer.activation.__name__, type(layer.kernel_initializer).__name__, list(layer.strides)]
        elif isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
            row += [list(layer.pool_size), list(layer.strides), layer.padding]
        elif isinstance(layer, layers.ZeroPadding2D):
            row += [[list(p) for p in layer.padding]]
        elif isinstance(layer, layers.Dense):
            row += [layer.activation.__name__]
        rows.append(row)
    return rows


def compare_layer_summaries(actual: list[list], expected: list[list]) -> None:
    """Raise ``CheckFailed`` naming the first layer where ``actual`` differs from ``expected``."""
    __tracebackhide__ = True
    actual = json.loads(json.dumps(actual))  # tuples -> lists, so rows compare like the stored ones
    for index, (mine, reference) in enumerate(zip(actual, expected)):
        if mine != reference:
            raise CheckFailed(
                f"Layer {index} differs from the reference.\n  expected: {reference}\n  yours:    {mine}\n"
                f"(Layers {max(index - 2, 0)}-{index - 1} before it match: {expected[max(index - 2, 0):index]})"
            )
    if len(actual) != len(expected):
        extra = actual[len(expected)] if len(actual) > len(expected) else expected[len(actual)]
        which = "has extra layers" if len(actual) > len(expected) else "stops early"
        raise CheckFailed(
            f"Your model {which}: {len(actual)} layers, the reference has {len(expected)}. "
            f"The first layer not in both: {extra}"
        )


def parameter_totals(model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts of ``model``."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    non_trainable = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


# ----------------------------------------------------------------------------------------------------
# Block checks
# ----------------------------------------------------------------------------------------------------
def _check_block(kind: str, block) -> None:
    __tracebackhide__ = True
    references = json.loads(BLOCKS_REFERENCE.read_text())[kind]
    for case, reference in zip(BLOCK_CASES[kind], references):
        judge_block(kind, case, block_evidence(kind, block, case), reference)
    modes = sorted({str(c["training"]) for c in BLOCK_CASES[kind]})
    print(f"✓ {kind} passes: layers, output shapes and values match the reference for training={' and training='.join(modes)}.")


def block_evidence(kind: str, block, case: dict, X=None, initializer=constant_initializer) -> dict:
    """Everything a block check needs from one call of the reader's block, as plain data; never raises.

    ``structure``: the block built on a symbolic input of ``X``'s shape, described by ``describe_block``
    (or ``structure_error``, with the paths built before the error in ``main_so_far``/``shortcut_so_far``);
    ``output``: the block called eagerly on ``X`` (default: the three-example ``_block_input``), as a
    float32 array (or ``output_error``). The grader collects this in a sandbox and judges it outside.
    """
    X = _block_input() if X is None else X
    evidence = {}
    try:
        evidence["structure"] = json.loads(json.dumps(describe_block(_symbolic_block(block, case, X.shape[1:], initializer))))
    except NotImplementedError:
        evidence["structure_error"] = NOT_IMPLEMENTED
    except Exception as exc:  # noqa: BLE001
        # Usually the two paths' shapes clash at the Add. The main path built so far is still in the
        # reader's local variables: the judge compares what exists of it, layer by layer, to name the culprit.
        main, shortcut = _paths_in_failed_call(exc, block)
        evidence.update(structure_error=_describe_exception(exc), main_so_far=json.loads(json.dumps(main)),
                        shortcut_so_far=json.loads(json.dumps(shortcut)))
    try:
        output = block(X, initializer=initializer, **case)
    except NotImplementedError:
        evidence["output_error"] = NOT_IMPLEMENTED
    except Exception as exc:  # noqa: BLE001 - any error in the reader's code becomes a message, not a traceback
        evidence["output_error"] = _describe_exception(exc)
    else:
        try:
            evidence["output"] = np.asarray(keras.ops.convert_to_numpy(output), dtype=np.float32) if output is not None else None
        except Exception:  # noqa: BLE001
            evidence["output_error"] = f"returned a {type(output).__name__}, not a tensor"
    return evidence


def judge_block(kind: str, case: dict, evidence: dict, reference: dict, call: str | None = None) -> None:
    """Raise ``CheckFailed`` with the first thing in ``evidence`` that differs from ``reference`` (its structure and output)."""
    __tracebackhide__ = True
    call = call or f"{kind}({_case_text(case)})"
    if NOT_IMPLEMENTED in (evidence.get("structure_error"), evidence.get("output_error")):
        raise CheckFailed(f"{kind} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    if "structure" in evidence:
        _judge_structure(kind, call, evidence["structure"], reference["structure"])
    else:
        main, shortcut = evidence.get("main_so_far") or [], evidence.get("shortcut_so_far")
        if main:
            _compare_path(call, "main path", main, reference["structure"]["main"][: len(main)])
        if shortcut is not None:
            _check_shortcut(kind, call, shortcut, reference["structure"]["shortcut"])
        # else the eager call's error, below, says it in the reader's own words
    if "output_error" in evidence:
        error = evidence["output_error"]
        if error.startswith("returned a "):
            raise CheckFailed(f"{kind} {error}.")
        hint = f" {_shape_hint(kind)}" if "shape" in error.lower() else ""
        raise CheckFailed(f"Calling {call} raised {error}{hint}")
    output, expected = evidence["output"], np.asarray(reference["output"], dtype=np.float32)
    if output is None:
        raise CheckFailed(f"{kind} returned None: end the function with `return X`.")
    if tuple(output.shape) != expected.shape:
        raise CheckFailed(f"{call} returned shape {tuple(output.shape)}; expected {expected.shape}. " + _shape_hint(kind))
    if not np.allclose(output, expected, rtol=1e-4, atol=1e-4):
        worst = float(np.max(np.abs(output - expected)))
        raise CheckFailed(
            f"{call} has the right shape and layers but its values differ from the "
            f"reference (by up to {worst:.4g}). Check that each layer takes the previous layer's output, "
            "that the shortcut is the block's input, and that the initializer is used as given."
        )


def _case_text(case) -> str:
    return ", ".join(f"{k}={v}" for k, v in case.items())


def _describe_exception(exc: Exception) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line[:300]}"


def _shape_hint(kind: str) -> str:
    if kind == "identity_block":
        return "The output must have the input's shape: 'same' padding on the middle conv, stride 1 everywhere, F3 = input channels."
    return "Height and width shrink by the stride s (first main-path conv and the shortcut conv); channels become F3."


# ---- structure -------------------------------------------------------------------------------------
def _layer_facts(layer, call_kwargs) -> dict:
    """The facts about one layer that the structural comparison looks at."""
    facts = {"type": type(layer).__name__}
    if isinstance(layer, layers.Conv2D):
        facts.update(
            filters=layer.filters,
            kernel_size=tuple(layer.kernel_size),
            strides=tuple(layer.strides),
            padding=layer.padding,
            activation=layer.activation.__name__,
            initializer=type(layer.kernel_initializer).__name__,
        )
    elif isinstance(layer, layers.BatchNormalization):
        facts.update(axis=layer.axis % 4, training=call_kwargs.get("training"))
    elif isinstance(layer, layers.Activation):
        facts.update(activation=layer.activation.__name__)
    return facts


def _walk_back(tensor):
    """Follow single-input layers back from ``tensor``; return (facts earliest-first, stopping layer, its inputs)."""
    chain = []
    while True:
        history = tensor._keras_history
        operation = history.operation
        if isinstance(operation, keras.layers.InputLayer):
            return list(reversed(chain)), None, []
        node = operation._inbound_nodes[history.node_index]
        inputs = node.arguments.keras_tensors
        if len(inputs) != 1:
            return list(reversed(chain)), operation, inputs
        chain.append(_layer_facts(operation, node.arguments.kwargs))
        tensor = inputs[0]


def describe_block(output_tensor) -> dict:
    """Split a block's graph into ``tail`` (after the Add), ``main`` and ``shortcut`` paths, as lists of facts.

    The main path is the longer of the two that meet at the Add. ``merge`` names the layer that
    joins them (``None`` when the graph has no merge at all).
    """
    tail, merge, inputs = _walk_back(output_tensor)
    description = {"tail": tail, "merge": type(merge).__name__ if merge is not None else None, "main": [], "shortcut": []}
    if merge is not None and len(inputs) == 2:
        paths = []
        for tensor in inputs:
            path, stop, _ = _walk_back(tensor)
            paths.append((path, stop))
        paths.sort(key=lambda p: len(p[0]), reverse=True)
        description["main"], description["shortcut"] = paths[0][0], paths[1][0]
        description["branches_reach_input"] = all(stop is None for _, stop in paths)
    return description


def _symbolic_block(block, case, input_shape=(4, 4, 3), initializer=constant_initializer):
    X = keras.Input(shape=tuple(input_shape))
    return block(X, initializer=initializer, **case)


def _judge_structure(kind, call, mine, reference) -> None:
    """Compare the reader's block graph with the reference's; raise ``CheckFailed`` on the first difference."""
    __tracebackhide__ = True
    if mine["merge"] is None:
        raise CheckFailed(f"{call}: the shortcut is never added back. Add it to the main path with Add()([X, X_shortcut]) before the final ReLU.")
    if mine["merge"] != "Add":
        raise CheckFailed(f"{call}: the paths are joined with {mine['merge']}; a residual block adds them with Add()([X, X_shortcut]).")
    if not mine.get("branches_reach_input", True):
        raise CheckFailed(f"{call}: the Add should join two paths that both start at the block's input X (the main path and the shortcut).")

    # What follows the Add: exactly one ReLU.
    if not mine["tail"]:
        main = mine["main"]
        if main and main[-1]["type"] == "Activation":
            raise CheckFailed(f"{call}: the ReLU comes before the Add. Add the shortcut to the output of the last BatchNormalization, then apply the ReLU.")
        raise CheckFailed(f"{call}: missing final ReLU. After adding the shortcut, apply Activation('relu').")
    if mine["tail"] != reference["tail"]:
        raise CheckFailed(f"{call}: after the Add expected only {_describe_facts(reference['tail'])}, found {_describe_facts(mine['tail'])}.")

    _compare_path(call, "main path", mine["main"], reference["main"])
    _check_shortcut(kind, call, mine["shortcut"], reference["shortcut"])


def _check_shortcut(kind, call, shortcut, reference) -> None:
    __tracebackhide__ = True
    if kind == "convolutional_block":
        shortcut_types = [f["type"] for f in shortcut]
        if not shortcut_types:
            raise CheckFailed(f"{call}: the shortcut has no Conv2D, so its shape cannot match the main path. Pass X_shortcut through Conv2D(F3, (1, 1), strides=(s, s)) and BatchNormalization.")
        if shortcut_types == ["Conv2D"]:
            raise CheckFailed(f"{call}: the shortcut is missing its BatchNormalization after the Conv2D.")
    elif shortcut:
        raise CheckFailed(f"{call}: the identity block's shortcut must be the input itself, unchanged; found {_describe_facts(shortcut)} on it.")
    _compare_path(call, "shortcut", shortcut, reference)


def _paths_in_failed_call(exc: Exception, block) -> tuple[list[dict], list[dict] | None]:
    """The main path and the shortcut (if a local variable is named like one) as the reader's function held them when it failed.

    The main path is the longest chain of layers from the input among its symbolic tensors.
    """
    code = getattr(block, "__code__", None)
    traceback = exc.__traceback__
    while traceback is not None and traceback.tb_frame.f_code is not code:
        traceback = traceback.tb_next
    if traceback is None:
        return [], None
    main, shortcut = [], None
    for name, value in traceback.tb_frame.f_locals.items():
        if isinstance(value, keras.KerasTensor) and hasattr(value, "_keras_history"):
            path, stop, _ = _walk_back(value)
            if stop is not None:
                continue
            if "shortcut" in name.lower():
                shortcut = path
            elif len(path) > len(main):
                main = path
    return main, shortcut


def _compare_path(call, where, mine, reference) -> None:
    __tracebackhide__ = True
    types_mine = [f["type"] for f in mine]
    types_ref = [f["type"] for f in reference]
    if types_mine != types_ref:
        if types_mine == types_ref + ["Activation"]:
            raise CheckFailed(f"{call}: the ReLU comes before the Add. Add the shortcut to the output of the last BatchNormalization, then apply the ReLU.")
        raise CheckFailed(f"{call}: the {where} should be {_describe_facts(reference)}; yours is {_describe_facts(mine)}.")
    counters = {}
    for facts, expected in zip(mine, reference):
        counters[facts["type"]] = counters.get(facts["type"], 0) + 1
        name = f"{_ordinal(counters[facts['type']])} {facts['type']} of the {where}"
        for key, want in expected.items():
            got = facts.get(key)
            if got != want:
                raise CheckFailed(f"{call}: {_explain(name, key, got, want)}")


def _explain(name, key, got, want) -> str:
    if key == "training":
        if got is None:
            return (f"the {name} was called without `training=`. Call it as BatchNormalization(axis=3)(X, training=training) "
                    "so the block decides whether batch normalization uses batch statistics (training) or moving averages.")
        return f"the {name} was called with training={got} although the block was called with training={want}: pass training=training."
    if key == "initializer":
        return f"the {name} ignores the `initializer` argument (it uses {got}). Pass kernel_initializer=initializer(seed=0)."
    if key == "strides":
        return f"wrong stride: the {name} has strides {got}; expected {want}."
    if key == "padding":
        return f"wrong padding: the {name} has padding '{got}'; expected '{want}'."
    if key == "kernel_size":
        return f"wrong window: the {name} has kernel_size {got}; expected {want} (f x f for the middle conv, 1 x 1 for the others)."
    if key == "filters":
        return f"wrong number of filters: the {name} has {got}; expected {want} (F1, F2, F3 in order)."
    if key == "axis":
        return f"the {name} normalizes axis {got}; normalize the channels axis, axis=3."
    if key == "activation":
        return f"the {name} applies '{got}'; expected '{want}'."
    return f"the {name} has {key}={got}; expected {want}."


def _describe_facts(chain) -> str:
    return " -> ".join(f["type"] + (f"({f['activation']})" if f["type"] == "Activation" else "") for f in chain) or "nothing"


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


# ----------------------------------------------------------------------------------------------------
# Reference outputs
# ----------------------------------------------------------------------------------------------------
def write_references() -> None:
    """Recompute ``reference/*.json`` from ``resnets_utils`` (maintainers only; review the diff)."""
    REFERENCE_DIR.mkdir(exist_ok=True)
    entries = {}
    for kind, cases in BLOCK_CASES.items():
        entries[kind] = []
        for case in cases:
            evidence = block_evidence(kind, getattr(resnets_utils, kind), case)
            entries[kind].append({"case": case, "structure": evidence["structure"], "output": np.round(evidence["output"], 5).tolist()})
    lines = [
        f' "{kind}": [\n' + ",\n".join("  " + json.dumps(entry) for entry in kind_entries) + "\n ]"
        for kind, kind_entries in entries.items()
    ]
    BLOCKS_REFERENCE.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    rows = layer_summary(resnets_utils.ResNet50(input_shape=(64, 64, 3), classes=6))
    RESNET50_REFERENCE.write_text("[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Maintainers: regenerate the stored reference outputs.")
    parser.add_argument("--write-references", action="store_true", required=True)
    parser.parse_args()
    write_references()
    print(f"Wrote {BLOCKS_REFERENCE} and {RESNET50_REFERENCE}.")
