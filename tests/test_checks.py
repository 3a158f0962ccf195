"""The exercise checks pass the reference code and catch each deliberately broken block with the right message.

Broken blocks are made the way a student makes them: by editing the reference source. Each case is
(the text to change, what to change it to, a fragment the check's message must contain).
"""

import inspect
import json
import textwrap

import numpy as np
import pytest

import resnets_checks as rc
import resnets_utils as ru


def variant(function, old, new, count: int = 1):
    """Return ``function`` rebuilt from its source with ``old`` replaced by ``new`` (``count`` times, -1 for all).

    ``old`` and ``new`` may be tuples of strings, replaced pairwise.
    """
    source = textwrap.dedent(inspect.getsource(function))
    olds, news = (old, new) if isinstance(old, tuple) else ((old,), (new,))
    for before, after in zip(olds, news):
        assert before in source, f"{before!r} is not in {function.__name__}'s source"
        source = source.replace(before, after, count)
    namespace = dict(vars(ru))
    exec(source, namespace)  # noqa: S102 - test-only, our own source
    return namespace[function.__name__]


def test_reference_implementations_pass(capsys):
    rc.check_identity_block(ru.identity_block)
    rc.check_convolutional_block(ru.convolutional_block)
    rc.check_resnet50(ru.ResNet50)
    out = capsys.readouterr().out
    assert out.count("✓") == 3
    assert "23,600,006 parameters (23,546,886 trainable, 53,120 non-trainable)" in out


# (text to change, replacement, fragment the message must contain[, how many occurrences: -1 for all])
SHARED_BREAKS = {
    "missing final ReLU": ('X = layers.Add()([X, X_shortcut])\n    X = layers.Activation("relu")(X)', "X = layers.Add()([X, X_shortcut])", "missing final ReLU"),
    "ReLU before the add": (
        'X = layers.Add()([X, X_shortcut])\n    X = layers.Activation("relu")(X)',
        'X = layers.Activation("relu")(X)\n    X = layers.Add()([X, X_shortcut])',
        "the ReLU comes before the Add",
    ),
    "BN without training": ("(X, training=training)", "(X)", "was called without `training=`", -1),
    "not implemented": ("F1, F2, F3 = filters", "raise NotImplementedError()", "not implemented yet"),
}

IDENTITY_BREAKS = {
    "padding of the middle conv": ('kernel_size=f, strides=(1, 1), padding="same"', 'kernel_size=f, strides=(1, 1), padding="valid"', "wrong padding"),
    "stride of the first conv": ("filters=F1, kernel_size=1, strides=(1, 1)", "filters=F1, kernel_size=1, strides=(2, 2)", "wrong stride"),
    "BN always training": ("(X, training=training)", "(X, training=True)", "training=True although the block was called with training=False", -1),
    "initializer ignored": ("kernel_initializer=initializer(seed=0)", "kernel_initializer='glorot_uniform'", "ignores the `initializer` argument", -1),
    "window not f": ("kernel_size=f,", "kernel_size=3,", "wrong window"),
    "filters swapped": ("filters=F1,", "filters=F2,", "wrong number of filters"),
    "BN on the wrong axis": ("BatchNormalization(axis=3)", "BatchNormalization(axis=1)", "normalize the channels axis, axis=3"),
    "no skip connection": ("X = layers.Add()([X, X_shortcut])", "pass", "the shortcut is never added back"),
    "returns nothing": ("return X", "return None", "returned None"),
}

CONV_BREAKS = {
    "shortcut missing its BN": ("X_shortcut = layers.BatchNormalization(axis=3)(X_shortcut, training=training)", "pass", "shortcut is missing its BatchNormalization"),
    "shortcut without conv": (
        ("X_shortcut = layers.Conv2D(", "X_shortcut = layers.BatchNormalization(axis=3)(X_shortcut, training=training)"),
        ("unused = layers.Conv2D(", "pass"),
        "the shortcut has no Conv2D",
    ),
    "stride missing on the main path": ("filters=F1, kernel_size=1, strides=(s, s)", "filters=F1, kernel_size=1, strides=(1, 1)", "wrong stride: the 1st Conv2D of the main path"),
    "stride missing on the shortcut": ("filters=F3, kernel_size=1, strides=(s, s)", "filters=F3, kernel_size=1, strides=(1, 1)", "wrong stride: the 1st Conv2D of the shortcut"),
    "padding of the first conv": ('filters=F1, kernel_size=1, strides=(s, s), padding="valid"', 'filters=F1, kernel_size=1, strides=(s, s), padding="same"', "wrong padding"),
}

BROKEN_BLOCKS = [
    pytest.param(block, check, spec, id=f"{block.__name__}: {name}")
    for block, check, specific in (
        (ru.identity_block, rc.check_identity_block, IDENTITY_BREAKS),
        (ru.convolutional_block, rc.check_convolutional_block, CONV_BREAKS),
    )
    for name, spec in {**SHARED_BREAKS, **specific}.items()
]


@pytest.mark.parametrize("block, check, spec", BROKEN_BLOCKS)
def test_broken_block_is_caught_with_the_right_message(block, check, spec):
    old, new, message, *count = spec
    broken = variant(block, old, new, *count)
    with pytest.raises(rc.CheckFailed) as excinfo:
        check(broken)
    assert message in str(excinfo.value), str(excinfo.value)


def test_values_are_checked_not_only_structure():
    # Same layers, but batch normalization with another epsilon: only the values can tell.
    broken = variant(ru.identity_block, "BatchNormalization(axis=3)", "BatchNormalization(axis=3, epsilon=0.5)", -1)
    with pytest.raises(rc.CheckFailed, match="values differ from the reference"):
        rc.check_identity_block(broken)


def test_reference_cases_match_the_stored_inputs():
    stored = json.loads(rc.BLOCKS_REFERENCE.read_text())
    for kind, cases in rc.BLOCK_CASES.items():
        assert [entry["case"] for entry in stored[kind]] == cases


@pytest.mark.parametrize("kind", ["identity_block", "convolutional_block"])
def test_stored_block_references_match_the_module(kind):
    """The stored structures and outputs are what resnets_utils gives now; regenerate them if the module changes on purpose."""
    stored = json.loads(rc.BLOCKS_REFERENCE.read_text())[kind]
    for entry in stored:
        evidence = rc.block_evidence(kind, getattr(ru, kind), entry["case"])
        assert evidence["structure"] == entry["structure"]
        np.testing.assert_allclose(evidence["output"], np.array(entry["output"]), rtol=1e-4, atol=1e-4)


def test_checks_never_call_the_reference_implementation(monkeypatch):
    """The grader hides resnets_utils' answers from a submission; the notebook's own check must still work then."""
    def hidden(*args, **kwargs):
        raise AssertionError("a check called the reference implementation")

    for name in ("identity_block", "convolutional_block"):
        block = getattr(ru, name)
        with monkeypatch.context() as patch:
            patch.setattr(ru, name, hidden)
            getattr(rc, f"check_{name}")(block)
    model = ru.ResNet50  # uses ru's blocks: chapter 03 hands them out, only ResNet50 is hidden while grading it
    monkeypatch.setattr(ru, "ResNet50", hidden)
    rc.check_resnet50(model)


def test_evidence_is_plain_data_and_the_judge_needs_nothing_else():
    evidence = rc.block_evidence("identity_block", ru.identity_block, rc.BLOCK_CASES["identity_block"][0])
    assert set(evidence) == {"structure", "output"} and isinstance(evidence["output"], np.ndarray)
    json.dumps(evidence["structure"])
    reference = json.loads(rc.BLOCKS_REFERENCE.read_text())["identity_block"][0]
    rc.judge_block("identity_block", reference["case"], evidence, reference)
    evidence["output"] = evidence["output"] + 0.01  # what a forged or tampered output looks like to the judge
    with pytest.raises(rc.CheckFailed, match="values differ from the reference"):
        rc.judge_block("identity_block", reference["case"], evidence, reference)


def test_probe_weights_make_same_structure_predict_the_same_and_catch_training_mode():
    reference = rc.resnet50_evidence(ru.ResNet50, (64, 64, 3), 6, probe_weights=True)
    again = rc.resnet50_evidence(ru.ResNet50, (64, 64, 3), 6, probe_weights=True)
    np.testing.assert_array_equal(reference["one_at_a_time"], again["one_at_a_time"])
    spread = reference["one_at_a_time"].max(axis=1) - reference["one_at_a_time"].min(axis=1)
    assert (spread > 0.01).all() and (reference["one_at_a_time"].max() < 0.99), "probabilities must not be flat or saturated"
    rows = json.loads(rc.RESNET50_REFERENCE.read_text())
    rc.judge_resnet50(again, rows, rc.RESNET50_TOTALS, reference["one_at_a_time"])
    swapped = variant(ru.ResNet50, "X = layers.AveragePooling2D((2, 2))(X)", "X = layers.AveragePooling2D((2, 2))(X) * 1.5")
    with pytest.raises(rc.CheckFailed, match="with the same weights its predictions differ from the reference's"):
        rc.judge_resnet50(rc.resnet50_evidence(swapped, (64, 64, 3), 6, probe_weights=True), rows, rc.RESNET50_TOTALS, reference["one_at_a_time"])


def test_blocks_called_eagerly_on_numpy_return_tensors():
    X = rc._block_input()
    for block, kwargs, shape in ((ru.identity_block, {"f": 2, "filters": [4, 4, 3]}, (3, 4, 4, 3)), (ru.convolutional_block, {"f": 2, "filters": [2, 4, 6], "s": 2}, (3, 2, 2, 6))):
        output = block(X, **kwargs)
        assert ru.keras.ops.is_tensor(output)
        assert tuple(output.shape) == shape


def test_resnet50_check_names_a_stage_with_the_wrong_number_of_blocks():
    four_identity_blocks = variant(ru.ResNet50, "for _ in range(5):", "for _ in range(4):")
    with pytest.raises(rc.CheckFailed, match=r"^stage 4 has 1 convolutional block and 4 identity blocks; it needs 1 convolutional block, then 5 identity blocks"):
        rc.check_resnet50(four_identity_blocks)
    no_stage_2_projection = variant(ru.ResNet50, "X = convolutional_block(X, f=3, filters=[64, 64, 256], s=1, training=None)",
                                    "X = layers.Conv2D(256, 1)(X)")
    with pytest.raises(rc.CheckFailed, match=r"^stage 2 has 0 convolutional blocks and 2 identity blocks"):
        rc.check_resnet50(no_stage_2_projection)


def test_resnet50_check_catches_blocks_left_in_training_mode():
    """Blocks called without training=None default to training=True: batch statistics at inference."""
    training_mode = variant(ru.ResNet50, "training=None", "training=True", count=-1)
    with pytest.raises(rc.CheckFailed, match=r"depending on the other photos in its batch(.|\n)*Call every block with training=None"):
        rc.check_resnet50(training_mode)
    defaults = variant(ru.ResNet50, ", training=None)", ")", count=-1)  # as a student would write it
    with pytest.raises(rc.CheckFailed, match=r"batch normalization uses batch statistics at inference"):
        rc.check_resnet50(defaults)


def test_resnet50_layer_comparator_names_the_first_mismatch():
    rows = json.loads(rc.RESNET50_REFERENCE.read_text())
    fewer_layers = rows[:132] + rows[142:]  # one identity block of stage 4 missing
    with pytest.raises(rc.CheckFailed, match=r"Layer 132 differs from the reference(.|\n)*expected: \['Conv2D', \[None, 4, 4, 256\]"):
        rc.compare_layer_summaries(fewer_layers, rows)
    no_softmax = variant(ru.ResNet50, 'layers.Dense(classes, activation="softmax"', "layers.Dense(classes")
    with pytest.raises(rc.CheckFailed, match=r"Layer 176 differs(.|\n)*'softmax'(.|\n)*'linear'"):
        rc.check_resnet50(no_softmax)


def test_layer_summary_rows_have_the_promised_fields():
    rows = rc.layer_summary(ru.ResNet50())
    conv = next(r for r in rows if r[0] == "Conv2D")
    assert conv == ["Conv2D", [None, 32, 32, 64], 9472, "valid", "linear", "GlorotUniform", [2, 2]]
    pool = next(r for r in rows if r[0] == "MaxPooling2D")
    assert pool[3:] == [[3, 3], [2, 2], "valid"]
    assert rows[-1] == ["Dense", [None, 6], 12294, "softmax"]


def test_stored_resnet50_reference_matches_the_module():
    assert json.loads(json.dumps(rc.layer_summary(ru.ResNet50()))) == json.loads(rc.RESNET50_REFERENCE.read_text())
