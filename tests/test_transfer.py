"""Chapter 05's transfer learning and Grad-CAM helpers, and the `python -m resnets_transfer` command line.

Every test builds its own small or untrained networks: no trained model, no download (the ImageNet route
is exercised with ``weights=None`` and with a simulated failed download).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import resnets_train as rt
import resnets_transfer as rtl
import resnets_utils as ru
import signs_dataset as sd
from resnets_utils import keras, layers

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base():
    keras.utils.set_random_seed(0)
    return ru.ResNet50(input_shape=(64, 64, 3), classes=6)


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 64, 64, 3), dtype=np.uint8)


def _fresh_base():
    keras.utils.set_random_seed(0)
    return ru.ResNet50(input_shape=(64, 64, 3), classes=6)


def test_transfer_model_freezes_the_backbone_batch_norm_included(photos):
    base = _fresh_base()
    model = rtl.transfer_model(base, classes=4, train_images=photos)
    assert model.output.shape[1:] == (4,)
    trainable = [layer.name for layer in model.layers if layer.trainable_weights]
    assert trainable == ["new_predictions"]
    assert rtl.trainable_parameters(model) == 2048 * 4 + 4
    # Frozen batch norm normalizes with its moving averages even when called in training mode.
    features = keras.Model(model.input, rtl.features_of(base))
    x = ru.to_model_input(photos)
    np.testing.assert_allclose(features(x, training=True), features(x, training=False), rtol=1e-5, atol=1e-5)


def test_the_head_standardizes_the_features_it_is_given(photos):
    base = _fresh_base()
    model = rtl.transfer_model(base, classes=4, train_images=photos)
    standardize = model.get_layer("new_standardize")
    standardized = keras.Model(model.input, standardize.output).predict(ru.to_model_input(photos), verbose=0)
    np.testing.assert_allclose(standardized.mean(axis=0), 0, atol=1e-3)


def test_the_common_mistake_leaves_batch_norm_trainable(photos):
    base = _fresh_base()
    model = rtl.transfer_model(base, classes=4, train_images=photos, freeze_batch_norm=False)
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    assert norms and all(layer.trainable for layer in norms)
    assert not any(layer.trainable for layer in model.layers if isinstance(layer, layers.Conv2D))


def test_unfreeze_stage_5_opens_its_convolutions_only(photos):
    base = _fresh_base()
    model = rtl.transfer_model(base, classes=4, train_images=photos)
    stages = dict(zip((layer.name for layer in model.layers), ru.stage_of_each_layer(model)))
    expected = sum(layer.count_params() for layer in model.layers if stages[layer.name] == "stage 5" and isinstance(layer, layers.Conv2D))
    assert rtl.unfreeze_stage(model, "stage 5") == expected + 2048 * 4 + 4
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            assert not layer.trainable, layer.name
        elif isinstance(layer, layers.Conv2D):
            assert layer.trainable == (stages[layer.name] == "stage 5"), layer.name


def test_stage_outputs_match_the_shapes_of_resnet50(base):
    shapes = {stage: tuple(base.get_layer(name).output.shape[1:]) for stage, name in ru.stage_output_layers(base).items()}
    assert shapes["stage 2"] == (15, 15, 256) and shapes["stage 3"] == (8, 8, 512)
    assert shapes["stage 4"] == (4, 4, 1024) and shapes["stage 5"] == (2, 2, 2048)
    assert rtl.grad_cam_layer(base) == ru.stage_output_layers(base)["stage 4"]


def test_batch_statistics_accuracy_leaves_the_model_as_it_was(photos):
    base = _fresh_base()
    model = rtl.transfer_model(base, classes=4, train_images=photos)
    before = [w.numpy().copy() for w in model.weights]
    labels = np.arange(len(photos)) % 4
    accuracy = rtl.accuracy_with_batch_statistics(model, photos, labels, batch_size=4)
    assert 0.0 <= accuracy <= 1.0
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    assert not any(layer.trainable for layer in model.layers if isinstance(layer, layers.BatchNormalization))
    assert model.get_layer("new_dropout").rate == 0.2


def test_imagenet_backbone_builds_without_weights():
    model = rtl.imagenet_base(weights=None)
    assert model.output.shape[1:] == (2048,)
    assert model.input.shape[1:] == (64, 64, 3)
    transfer = rtl.transfer_model(model, classes=4, train_images=np.zeros((2, 64, 64, 3), np.uint8))
    assert rtl.trainable_parameters(transfer) == 2048 * 4 + 4


def test_imagenet_backbone_offline_gives_a_clear_error(monkeypatch):
    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.applications, "ResNet50", no_network)
    with pytest.raises(rtl.TransferError, match="94 MB download .* Connect to the internet once"):
        rtl.imagenet_base()


def test_missing_base_model_names_the_command_that_trains_one(tmp_path):
    with pytest.raises(rtl.TransferError, match="make train"):
        rtl.load_base(tmp_path / "model.keras")


def test_from_scratch_sees_the_photos_the_transfer_recipes_see():
    # a fair comparison: the same photo changes as the new head's, and the same number of epochs
    changes = ("augment", "tilt", "contrast", "new_walls", "white_balance", "greyscale", "jpeg", "new_walls_zoom_out")
    assert [getattr(rtl.SCRATCH, name) for name in changes] == [getattr(rtl.HEAD, name) for name in changes]
    assert rtl.SCRATCH.epochs == rtl.HEAD.epochs + rtl.FINE_TUNE.epochs and rtl.SCRATCH.warmup_epochs < rtl.SCRATCH.epochs


def test_subset_per_class_is_balanced_and_seeded():
    labels = np.repeat(np.arange(4), 10)
    chosen = rt.subset_per_class(labels, 3, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[chosen]), [3, 3, 3, 3])
    assert not np.array_equal(chosen, rt.subset_per_class(labels, 3, seed=1))
    with pytest.raises(ValueError, match="has 10"):
        rt.subset_per_class(labels, 11, seed=0)


# ----------------------------------------------------------------------------------------------------
# Grad-CAM
# ----------------------------------------------------------------------------------------------------
def _quadrant_model():
    """Class 0's score is the mean brightness of the red channel, class 1's of the blue one, via a 1x1 conv."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(2, 1, use_bias=False, activation="relu", name="features")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("features").set_weights([np.array([[[[1, 0], [0, 0], [0, 1]]]], dtype=np.float32)])
    model.get_layer("predictions").set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    return model


def test_grad_cam_points_at_the_evidence_for_each_class():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:4, :4, 0] = 255  # red top-left: evidence for class 0
    image[4:, 4:, 2] = 128  # blue bottom-right: evidence for class 1
    model = _quadrant_model()
    heatmaps, classes = ru.grad_cam(model, image, "features")
    assert classes.tolist() == [0] and heatmaps.shape == (1, 8, 8)
    assert heatmaps[0, :4, :4].min() == 1.0 and heatmaps[0, 4:, :].max() == 0.0
    heatmaps, classes = ru.grad_cam(model, image, "features", class_index=1)
    assert classes.tolist() == [1]
    assert heatmaps[0, 4:, 4:].min() == 1.0 and heatmaps[0, :4, :].max() == 0.0


def test_grad_cam_explains_its_errors():
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        ru.grad_cam(_quadrant_model(), np.zeros((8, 8, 3), np.uint8), "nope")
    no_dense = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(2, 1, name="features"), layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match="last layer is Dense"):
        ru.grad_cam(no_dense, np.zeros((8, 8, 3), np.uint8), "features")


def test_hand_mask_and_heatmap_mass():
    image = np.full((1, 4, 4, 3), 200, np.uint8)  # a grey background ...
    image[0, :, :2] = (220, 170, 140)  # ... and skin on the left half
    mask = ru.hand_mask(image)
    assert mask[0, :, :2].all() and not mask[0, :, 2:].any()
    left = np.array([[[1.0, 0.0], [1.0, 0.0]]])  # a 2x2 heatmap with all its mass on the left
    # upsampled bilinearly to 4 columns: 1, 0.75, 0.25, 0; the left half holds 1.75 of 2
    np.testing.assert_allclose(ru.heatmap_mass_on(left, mask), [0.875], atol=1e-6)
    assert np.isnan(ru.heatmap_mass_on(np.zeros((1, 2, 2)), mask)[0])
    right = left[:, :, ::-1]
    assert ru.heatmap_peak_on(np.concatenate([left, right, np.zeros((1, 2, 2))]), np.repeat(mask, 3, axis=0)).tolist() == [True, False, False]


def test_superimposed_heatmap_is_an_image_of_the_photo_size():
    photo = np.full((64, 64, 3), 128, np.uint8)
    out = ru.superimpose_heatmap(photo, np.eye(4))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[0, 0], out[0, 63])  # hot and cold corners differ


# ----------------------------------------------------------------------------------------------------
# The command line: files from a (tiny) run, and clear errors
# ----------------------------------------------------------------------------------------------------
def _run(*args):
    return subprocess.run([sys.executable, "-m", "resnets_transfer", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_train_and_predict_write_their_files(tmp_path):
    base_path = tmp_path / "base.keras"
    _fresh_base().save(base_path)
    run_dir = tmp_path / "run"
    trained = _run("train", "--base", str(base_path), "--data", str(sd.NEW_CLASSES_DIR), "--per-class", "2", "--epochs", "1",
                   "--fine-tune-epochs", "1", "--batch-size", "8", "--quiet", "--output-dir", str(run_dir))
    assert trained.returncode == 0, trained.stderr
    for name in ("model.keras", "model_summary.txt", "architecture.png", "learning_curves.png", "confusion_matrix.png",
                 "classification_report.txt", "history.csv", "metrics.json"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["classes"] == [6, 7, 8, 9] and metrics["epochs_run"] == 2 and metrics["train_images"] == 8
    assert "new_predictions" in (run_dir / "model_summary.txt").read_text()

    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 80, 3), dtype=np.uint8)).save(photo)
    predicted = _run("predict", str(photo), "--model", str(run_dir / "model.keras"))
    assert predicted.returncode == 0, predicted.stderr
    result = json.loads((run_dir / "predict" / "prediction.json").read_text())
    assert result["label"] in (6, 7, 8, 9) and set(result["probabilities"]) == {"6", "7", "8", "9"}
    assert Image.open(run_dir / "predict" / "heatmap.png").size[0] > 300


def test_command_line_errors_are_messages(tmp_path):
    missing = _run("train", "--base", str(tmp_path / "none.keras"), "--output-dir", str(tmp_path / "out"))
    assert missing.returncode == 1 and "No trained model" in missing.stderr and "Traceback" not in missing.stderr
    bad_data = _run("train", "--data", str(tmp_path / "nowhere"))
    assert bad_data.returncode == 2 and "is not a folder" in bad_data.stderr
    no_model = _run("predict", "photo.jpg", "--model", str(tmp_path / "none.keras"))
    assert no_model.returncode == 2 and "does not exist" in no_model.stderr
    model_path = tmp_path / "m.keras"
    _fresh_base().save(model_path)
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a photo")
    bad_image = _run("predict", str(not_image), "--model", str(model_path), "--output-dir", str(tmp_path / "p"))
    assert bad_image.returncode == 1 and "is not a JPEG, PNG, WebP, GIF or BMP image" in bad_image.stderr and "Traceback" not in bad_image.stderr
    assert not (tmp_path / "p").exists()
