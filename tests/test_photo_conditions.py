"""photo_conditions: the "other conditions" benchmark's photos are fixed, seeded, built only from the photos
given, and change what they say they change."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import photo_conditions as pc
import resnets_utils as ru

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import conditions_benchmark  # noqa: E402


@pytest.fixture(scope="module")
def photos():
    return ru.load_dataset()[2][:12]


def test_conditions_are_fixed_for_a_seed_and_each_photo_depends_only_on_itself(photos):
    first, again = pc.conditions(photos, seed=0), pc.conditions(photos, seed=0)
    assert list(first) == list(again) and len(first) == 15 + len(pc.PAIRS)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name], err_msg=name)
        assert first[name].shape == photos.shape and first[name].dtype == np.uint8, name
        assert not np.array_equal(first[name], photos), f"{name} leaves the photos as they were"
    fewer = pc.conditions(photos[:5], seed=0)
    for name in first:
        np.testing.assert_array_equal(fewer[name], first[name][:5], err_msg=name)
    other_seed = pc.conditions(photos, seed=1)
    assert not np.array_equal(other_seed["blotches background"], first["blotches background"])
    np.testing.assert_array_equal(other_seed["green background"], first["green background"])


def test_a_new_background_keeps_the_hand_and_replaces_the_wall(photos):
    alpha = pc.hand_alpha(photos)
    green = pc.conditions(photos)["green background"].astype(int)
    hand, wall = alpha == 1, alpha == 0
    assert hand.mean() > 0.1 and wall.mean() > 0.4, "the mask finds a hand and a wall"
    np.testing.assert_array_equal(green[hand], photos[hand])
    assert (green[wall] == pc.BACKGROUND_COLOURS["green"]).all()


def test_tilt_and_framing_fill_with_the_wall_not_black(photos):
    for name in ("tilted +30°", "hand at 60% of the frame"):
        corners = pc.conditions(photos)[name][:, [0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.mean() > 60, f"{name}: corners are {corners.mean():.0f} on average, near black"


def test_accuracy_per_condition_measures_every_condition():
    labels = np.array([0, 1, 2, 3])

    class AlwaysTwo:
        def predict(self, x, batch_size=None, verbose=0):
            return np.tile(np.eye(6)[2], (len(x), 1))

    images = ru.load_dataset()[2][:4]
    accuracy = pc.accuracy_per_condition(AlwaysTwo(), images, labels)
    assert list(accuracy)[0] == "as taken" and len(accuracy) == 1 + len(pc.conditions(images))
    assert set(accuracy.values()) == {0.25}


def test_benchmark_table_ends_with_the_mean_and_the_worst_condition():
    text = conditions_benchmark.table({"a": {"as taken": 1.0, "x": 0.5, "y": 0.9}, "b": {"as taken": 0.9, "x": 1.0, "y": 0.8}})
    assert "| **mean over the conditions** | **70.0%** | **90.0%** |" in text
    assert "| **worst condition** | **50.0%** | **80.0%** |" in text


def test_benchmark_names_a_missing_network(tmp_path, capsys):
    assert conditions_benchmark.main(["--model", f"mine={tmp_path / 'none.keras'}", "--output", str(tmp_path)]) == 1
    assert "none.keras" in capsys.readouterr().err


def test_mirror_average_asks_about_the_photo_and_its_mirror_image():
    class LeftHalf:  # confident of class 1 when the photo's left half is the brighter, else mildly of class 4
        def __init__(self):
            self.seen = []

        def predict(self, x, batch_size=None, verbose=0):
            self.seen.append(x)
            left = x[:, :, : x.shape[2] // 2].mean(axis=(1, 2, 3)) > x[:, :, x.shape[2] // 2:].mean(axis=(1, 2, 3))
            return np.where(left[:, None], np.eye(6)[1] * 0.9, np.eye(6)[4] * 0.6)

    images = np.zeros((4, 8, 8, 3), np.uint8)
    images[:, :, :4] = 200  # every photo brighter on the left: class 1 as taken, class 4 in the mirror
    network = LeftHalf()
    plain = pc.predictions_per_condition(network, {"as taken": images})["as taken"]
    assert (plain == 1).all() and len(network.seen) == 1
    mirrored = pc.predictions_per_condition(network, {"as taken": images}, mirror=True)["as taken"]
    np.testing.assert_array_equal(network.seen[2], network.seen[1][:, :, ::-1])
    assert (mirrored == 1).all(), "0.9 for class 1 against 0.6 for class 4, summed over the two"
    images[:, :, :4], images[:, :, 4:] = 0, 200
    assert (pc.predictions_per_condition(network, {"as taken": images}, mirror=True)["as taken"] == 1).all()


def _fake_run(run_dir: Path, seed: int, per_class: int = 18, train_images: int = 972, validation_images: int = 108) -> Path:
    """A run directory as `make train` leaves it, with a tiny stand-in network: what the benchmark reads."""
    run_dir.mkdir(parents=True)
    metrics = {"seed": seed, "recipe": {"name": "default", "validation_per_class": per_class},
               "train_images": train_images, "validation_images": validation_images}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    model = ru.keras.Sequential([ru.keras.Input((64, 64, 3)), ru.keras.layers.Flatten(), ru.keras.layers.Dense(6, activation="softmax")])
    model.save(run_dir / "model.keras")
    return run_dir / "model.keras"


def test_validation_benchmark_measures_each_network_on_the_photos_its_own_run_held_out(tmp_path, monkeypatch):
    import resnets_train as rt

    x_train, y_train = ru.load_dataset()[:2]
    models = {f"seed{seed}": _fake_run(tmp_path / f"run{seed}", seed) for seed in (0, 1)}
    measured = {}

    def record(model, images, labels, seed=0, mirror=False):
        measured[len(measured)] = images
        return {"as taken": 1.0, "x": 0.5}

    monkeypatch.setattr(pc, "accuracy_per_condition", record)
    argv = ["--split", "validation", "--output", str(tmp_path / "out")] + [f"--model={n}={p}" for n, p in models.items()]
    assert conditions_benchmark.main(argv) == 0
    for k, seed in enumerate((0, 1)):
        training, validation = rt.split_validation(y_train.ravel(), 18, seed)
        np.testing.assert_array_equal(measured[k], x_train[validation])
        assert not np.isin(validation, training).any()
    assert json.loads((tmp_path / "out" / "conditions.json").read_text())["held_out_by_seed"] == {"seed0": 0, "seed1": 1}


@pytest.mark.parametrize("run, says", [
    ({"per_class": 0}, "held no validation photos"),
    ({"train_images": 100, "validation_images": 12}, "a subset"),
    (None, "no metrics.json"),
])
def test_validation_benchmark_refuses_a_network_whose_held_out_photos_are_unknown(tmp_path, capsys, run, says):
    if run is None:
        (tmp_path / "bare").mkdir()
        path = tmp_path / "bare" / "model.keras"
        path.write_bytes(b"not read")
    else:
        path = _fake_run(tmp_path / "run", seed=0, **run)
    assert conditions_benchmark.main(["--split", "validation", "--model", f"mine={path}", "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert says in err and "--split test" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
