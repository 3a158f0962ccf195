"""The training and predict entry points: a real (tiny) run end to end, atomic saves, clear errors."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import resnets_predict
import resnets_train as rt
import resnets_utils as ru

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import measurements  # noqa: E402  (the benchmark's per-epoch tracker, checked on the same tiny run)

TINY = rt.Recipe(name="tiny", epochs=1, batch_size=8, validation_per_class=1, augment=True, restore_best=True, bn_momentum=0.9)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real run of the full pipeline on 4 images per class (one held out for validation), 1 epoch."""
    x_train, y_train, x_test, y_test, classes = ru.load_dataset()
    pick = np.concatenate([np.flatnonzero(y_train.ravel() == c)[:4] for c in range(6)])
    out = tmp_path_factory.mktemp("run")
    tracker = measurements.TestAccuracyEachEpoch(x_test[:12], y_test[:, :12])
    data = (x_train[pick], y_train[:, pick], x_test[:12], y_test[:, :12], classes)
    result = rt.train(TINY, seed=3, output_dir=out, verbose=0, data=data, callbacks=[tracker])
    return out, {**result, "tracker": tracker}


def test_a_run_writes_every_artefact(tiny_run):
    out, result = tiny_run
    for name in ("model.keras", "history.csv", "history.json", "learning_curves.png", "confusion_matrix.png", "classification_report.txt", "metrics.json"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seed"] == 3 and metrics["epochs_run"] == 1 and metrics["recipe"]["name"] == "tiny"
    assert metrics["train_images"] == 18 and metrics["validation_images"] == 6 and metrics["test_images"] == 12
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["versions"]["tensorflow"] == ru.tf.__version__
    assert "precision" in (out / "classification_report.txt").read_text()
    assert (out / "history.csv").read_text().splitlines()[0] == "epoch,accuracy,loss,val_accuracy,val_loss"


def test_per_epoch_test_accuracy_is_the_final_one_for_a_one_epoch_run(tiny_run):
    out, result = tiny_run
    [record] = result["tracker"].records
    assert record["epoch"] == 1 and record["elapsed_s"] == record["epoch_s"] > 0
    assert record["test_accuracy"] == result["test_accuracy"]


def test_saved_model_has_no_optimizer_state(tiny_run):
    out, result = tiny_run
    weights_bytes = 4 * result["model"].count_params()
    assert (out / "model.keras").stat().st_size < 1.2 * weights_bytes  # with AdamW's state it would be ~3x


def test_saved_model_reloads_with_identical_predictions(tiny_run):
    out, result = tiny_run
    reloaded = resnets_predict.load_model(out / "model.keras")
    x = ru.to_model_input(ru.load_dataset()[2][:8])
    np.testing.assert_array_equal(result["model"].predict(x, verbose=0), reloaded.predict(x, verbose=0))


def test_save_is_atomic(tiny_run, tmp_path, monkeypatch):
    out, result = tiny_run
    target = tmp_path / "model.keras"
    target.write_bytes(b"previous good model")

    def save_half_then_fail(self, path, *args, **kwargs):
        open(path, "wb").write(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(ru.keras.Model, "save", save_half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        rt.save_model_atomically(result["model"], target)
    assert target.read_bytes() == b"previous good model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_validation_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(6), 180)
    train, val = rt.split_validation(labels, 18, seed=0)
    assert len(val) == 108 and np.bincount(labels[val]).tolist() == [18] * 6
    assert not set(train) & set(val) and len(train) + len(val) == 1080
    assert np.array_equal(val, rt.split_validation(labels, 18, seed=0)[1])
    assert not np.array_equal(val, rt.split_validation(labels, 18, seed=1)[1])


def test_recipes_differ_only_where_documented():
    assert rt.COURSE == rt.Recipe(name="course", epochs=20, learning_rate=1e-3, optimizer="adam", batch_size=32)
    assert rt.DEFAULT.bn_momentum == 0.9 and rt.DEFAULT.augment and rt.DEFAULT.validation_per_class == 18
    assert rt.DEFAULT.learning_rate == 2e-3 and rt.DEFAULT.warmup_epochs == 3 and rt.DEFAULT.cosine and rt.DEFAULT.epochs == 25
    assert (rt.DEFAULT.new_walls, rt.DEFAULT.new_walls_after_epoch, rt.DEFAULT.new_walls_ramp_epochs, rt.DEFAULT.clip_norm) == (0.5, 6, 4, 1.0)
    assert (rt.DEFAULT.white_balance, rt.DEFAULT.jpeg, rt.DEFAULT.greyscale, rt.DEFAULT.varied_walls, rt.DEFAULT.new_walls_zoom_out) == (0.15, 0.3, 0.0, False, 0.0)
    assert rt.PLAIN_WALLS == dataclasses.replace(rt.DEFAULT, name="plain-walls", warmup_epochs=1, new_walls=0.0, new_walls_after_epoch=0,
                                                 new_walls_ramp_epochs=0, clip_norm=0.0, white_balance=0.0, jpeg=0.0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs: must be at least 1, got 0"),
        (["--epochs", "ten"], "--epochs: expected a whole number, got 'ten'"),
        (["--batch-size", "5000"], "--batch-size 5000 is larger than the training set"),
        (["--recipe", "fast"], "invalid choice: 'fast'"),
        (["--set", "clipnorm=1"], "expected FIELD=VALUE with FIELD one of learning_rate, optimizer"),
        (["--set", "epochs=35"], "epochs has an option of its own: --epochs 35"),
        (["--set", "batch_size=64"], "batch_size has an option of its own: --batch-size 64"),
        (["--set", "clip_norm"], "expected FIELD=VALUE"),
        (["--set", "name=mine"], "expected FIELD=VALUE"),
        (["--set", "new_walls=half"], "new_walls needs a float, got 'half'"),
        (["--set", "augment=yes"], "augment is true or false, got 'yes'"),
    ],
)
def test_train_command_line_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        rt.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_train_command_line_changes_settings_of_the_recipe():
    args = rt.parse_args(["--recipe", "default", "--set", "clip_norm=0", "--set", "augment=false", "--set", "new_walls_after_epoch=2", "--epochs", "3"])
    assert rt.recipe_from_args(args) == dataclasses.replace(rt.DEFAULT, clip_norm=0.0, augment=False, new_walls_after_epoch=2, epochs=3)
    assert rt.recipe_from_args(rt.parse_args([])) == rt.DEFAULT


def test_train_command_line_rejects_a_file_as_output_dir(tmp_path, capsys):
    existing = tmp_path / "a-file"
    existing.write_text("")
    with pytest.raises(SystemExit):
        rt.parse_args(["--output-dir", str(existing)])
    assert "is a file; give a folder" in capsys.readouterr().err


def test_predict_prints_class_and_probabilities(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    photo = tmp_path / "hand.png"
    Image.fromarray(ru.load_dataset()[2][0]).resize((300, 200)).save(photo)
    assert resnets_predict.main([str(photo), "--model", str(out / "model.keras"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["label"] in range(6) and len(result["probabilities"]) == 6
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
    assert list(result["probabilities"].values()) == sorted(result["probabilities"].values(), reverse=True)
    assert resnets_predict.main([str(photo), "--model", str(out / "model.keras")]) == 0
    assert capsys.readouterr().out.startswith(f"{photo}: {result['label']} (")


def test_predict_errors_are_clear(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    assert resnets_predict.main([str(not_an_image), "--model", str(out / "model.keras")]) == 1
    assert "is not a JPEG, PNG, WebP, GIF or BMP image" in capsys.readouterr().err
    assert resnets_predict.main([str(not_an_image), "--model", str(tmp_path / "none.keras")]) == 1
    err = capsys.readouterr().err
    assert "No trained model at" in err and "Train one with `make train`" in err
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    assert resnets_predict.main([str(not_an_image), "--model", str(broken)]) == 1
    assert "is not a loadable Keras model" in capsys.readouterr().err


def test_show_misclassified_titles_each_mistake():
    x = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    probabilities = np.full((3, 6), 0.1)
    probabilities[1, 4] = 0.5
    fig = ru.show_misclassified(x, np.array([0, 1, 2]), np.array([0, 4, 2]), probabilities)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["1 → 4 (50%)"]


def test_mixed_bfloat16_computes_in_16_bits_keeps_weights_in_32_and_restores_the_policy():
    x_train, y_train, x_test, y_test, classes = ru.load_dataset()
    pick = np.concatenate([np.flatnonzero(y_train.ravel() == c)[:2] for c in range(6)])
    data = (x_train[pick], y_train[:, pick], x_test[:6], y_test[:, :6], classes)
    recipe = rt.Recipe(name="tiny", epochs=1, batch_size=12)
    result = rt.train(recipe, seed=0, verbose=0, data=data, precision="mixed_bfloat16")
    model = result["model"]
    convolutions = [layer for layer in model.layers if isinstance(layer, ru.layers.Conv2D)]
    assert {layer.compute_dtype for layer in convolutions} == {"bfloat16"}
    assert {w.dtype for w in model.weights} == {"float32"}
    assert result["precision"] == "mixed_bfloat16" and np.isfinite(result["history"]["loss"][0])
    assert ru.keras.mixed_precision.global_policy().name == "float32", "the chapters' later models stay float32"


def test_train_command_line_needs_tf_config_for_multi_worker(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert rt.main(["--strategy", "multi-worker", "--output-dir", str(tmp_path / "run")]) == 2
    assert "needs TF_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _first_batches(**changes):
    x_train, y_train, _, _, _ = ru.load_dataset()
    pick = np.concatenate([np.flatnonzero(y_train.ravel() == c)[:8] for c in range(6)])
    dataset = rt.make_dataset(x_train[pick], ru.convert_to_one_hot(y_train.ravel()[pick], 6), 16, seed=1, recipe=dataclasses.replace(rt.PLAIN_WALLS, **changes))
    return np.concatenate([images.numpy() for images, _ in dataset])


def test_new_walls_replace_the_plain_wall_behind_the_hand_and_are_repeatable():
    plain = _first_batches()
    walls, again = _first_batches(new_walls=1.0), _first_batches(new_walls=1.0)
    np.testing.assert_array_equal(walls, again)  # the same seed draws the same walls
    corners = lambda images: np.concatenate([images[:, :4, :4], images[:, :4, -4:]], axis=1).reshape(len(images), -1, 3).mean(axis=1)  # noqa: E731
    # this dataset's walls are grey or white; the new ones are coloured
    saturation = lambda images: (corners(images).max(axis=1) - corners(images).min(axis=1)).mean()  # noqa: E731
    assert saturation(walls) > 0.2 > saturation(plain), (saturation(walls), saturation(plain))
    # the hand stays: the geometry is the same draw either way, so where the hand is, the photos agree
    redder = (plain[..., 0] - plain[..., 2]) > 0.25  # clearly skin in the plain version (the wall is never this red)
    assert redder.mean() > 0.05
    assert np.abs(walls[redder] - plain[redder]).mean() < 0.05, np.abs(walls[redder] - plain[redder]).mean()


def test_random_walls_cover_dark_pale_and_vivid_colours():
    walls = rt.random_walls(ru.tf.random.Generator.from_seed(0), 400, 16).numpy()
    assert walls.shape == (400, 16, 16, 3) and walls.min() >= 0 and walls.max() <= 1
    brightness, colourfulness = walls.mean(axis=(1, 2, 3)), (walls.max(axis=-1) - walls.min(axis=-1)).mean(axis=(1, 2))
    assert (brightness < 0.25).mean() > 0.1 and (brightness > 0.6).mean() > 0.1 and (colourfulness > 0.4).mean() > 0.1
    textured = walls.reshape(400, -1, 3).std(axis=1).mean(axis=1) > 0.05
    assert 0.3 < textured.mean() < 0.9  # plain walls and gradients, blotches, stripes


def test_varied_walls_add_walls_of_many_colours():
    def many_coloured(walls):  # a wall's colours spread off the line between two colours: a second principal component
        pixels = walls.reshape(len(walls), -1, 3)
        pixels = pixels - pixels.mean(axis=1, keepdims=True)
        return np.linalg.svd(pixels, compute_uv=False)[:, 1] / np.sqrt(pixels.shape[1]) > 0.08

    generator = lambda: ru.tf.random.Generator.from_seed(0)  # noqa: E731
    basic, varied = rt.random_walls(generator(), 400, 32).numpy(), rt.random_walls(generator(), 400, 32, varied=True).numpy()
    assert varied.shape == (400, 32, 32, 3) and varied.min() >= 0 and varied.max() <= 1
    assert many_coloured(basic).mean() < 0.02 and 0.1 < many_coloured(varied).mean() < 0.5, (many_coloured(basic).mean(), many_coloured(varied).mean())


def test_light_changes_white_balance_and_greyscale():
    plain = _first_batches()
    grey = _first_batches(greyscale=1.0)
    assert np.abs(grey[..., 0] - grey[..., 2]).max() < 1e-6 < np.abs(plain[..., 0] - plain[..., 2]).max()
    balanced = _first_batches(white_balance=0.2)
    ratio = balanced.reshape(len(balanced), -1, 3).mean(axis=1) / plain.reshape(len(plain), -1, 3).mean(axis=1)
    assert np.ptp(ratio[:, 0] / ratio[:, 2]) > 0.1  # red and blue scaled differently, photo by photo


def test_new_walls_can_also_shrink_the_hand(monkeypatch):
    # on black walls the photo's brightness is the hand's: a hand at scale s keeps about s squared of it
    monkeypatch.setattr(rt, "random_walls", lambda generator, n, size, *kinds: ru.tf.zeros((n, size, size, 3)))
    full, shrunk = _first_batches(new_walls=1.0), _first_batches(new_walls=1.0, new_walls_zoom_out=0.5)
    kept = shrunk.mean(axis=(1, 2, 3)) / full.mean(axis=(1, 2, 3))
    assert 0.25 < kept.mean() < 0.8 and kept.max() < 1.05, kept  # scales from 0.5 to 1: about 0.58 of the area on average
    np.testing.assert_array_equal(shrunk, _first_batches(new_walls=1.0, new_walls_zoom_out=0.5))


def test_tilt_and_contrast_are_recipe_options():
    plain = _first_batches()
    np.testing.assert_array_equal(plain, _first_batches())
    assert np.abs(_first_batches(tilt=0.25) - plain).mean() > 0.05  # the same draws, turned further
    assert np.abs(_first_batches(contrast=0.6) - plain).mean() > 0.005


def test_jpeg_compression_changes_photos_a_little():
    plain, compressed = _first_batches(), _first_batches(jpeg=1.0)
    difference = np.abs(compressed - plain).mean(axis=(1, 2, 3))
    assert (difference > 0.002).all() and difference.mean() < 0.03, difference


def test_new_walls_start_after_some_epochs_and_ramp_up():
    x_train, y_train, _, _, _ = ru.load_dataset()
    pick = np.concatenate([np.flatnonzero(y_train.ravel() == c)[:4] for c in range(6)])
    y = ru.convert_to_one_hot(y_train.ravel()[pick], 6)
    epochs = lambda **changes: [np.concatenate([b.numpy() for b, _ in dataset]) for dataset in [rt.make_dataset(x_train[pick], y, 8, 1, dataclasses.replace(rt.PLAIN_WALLS, **changes))] for _ in range(3)]  # noqa: E731
    plain, ramped = epochs(), epochs(new_walls=1.0, new_walls_after_epoch=1, new_walls_ramp_epochs=2)
    np.testing.assert_array_equal(ramped[0], plain[0])  # epoch 1: no photo on a new wall
    changed = lambda a, b: (np.abs(a - b).reshape(len(a), -1).max(axis=1) > 0.01).mean()  # noqa: E731  share of photos that differ
    assert 0.2 < changed(ramped[1], plain[1]) < 0.8 and changed(ramped[2], plain[2]) == 1.0, (changed(ramped[1], plain[1]), changed(ramped[2], plain[2]))


def test_a_recipe_prints_its_photo_changes_only_when_they_are_on():
    assert "new_walls" not in repr(rt.PLAIN_WALLS) and "clip_norm" not in repr(rt.PLAIN_WALLS)
    assert repr(rt.PLAIN_WALLS).endswith("augment=True, validation_per_class=18, restore_best=True)")
    assert "clip_norm=1.0, bn_momentum=0.9, augment=True, new_walls=0.5, new_walls_after_epoch=6, new_walls_ramp_epochs=4, white_balance=0.15, jpeg=0.3, validation_per_class" in repr(rt.DEFAULT)
    assert "greyscale=0.1" in repr(dataclasses.replace(rt.DEFAULT, greyscale=0.1))
    assert "tilt" not in repr(rt.DEFAULT) and "tilt=0.08" in repr(dataclasses.replace(rt.DEFAULT, tilt=0.08))
    assert "jpeg" not in repr(rt.PLAIN_WALLS) and "new_walls_zoom_out=0.4" in repr(dataclasses.replace(rt.DEFAULT, new_walls_zoom_out=0.4))


def _small_network():
    inputs = ru.keras.Input((4,))
    return ru.keras.Model(inputs, ru.keras.layers.Dense(3, activation="softmax")(ru.keras.layers.Dense(8, activation="relu")(inputs)))


def test_gradient_clipping_is_the_optimizers_when_the_recipe_asks():
    clipped = rt.compile_model(_small_network(), dataclasses.replace(TINY, clip_norm=1.0), steps_per_epoch=2)
    assert clipped.optimizer.global_clipnorm == 1.0
    assert rt.compile_model(_small_network(), TINY, steps_per_epoch=2).optimizer.global_clipnorm is None
    # on two replicas Keras clips each replica's share (half the gradient) before summing them: half the norm each
    assert rt.for_replicas(rt.DEFAULT, 2).clip_norm == rt.DEFAULT.clip_norm / 2
