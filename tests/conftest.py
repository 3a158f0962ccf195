"""Shared fixtures. Tests never touch the network: the source archive comes from $SIGNS_SOURCE or datasets/."""

import pytest

import signs_dataset


@pytest.fixture(scope="session")
def source_archive():
    """The pinned source archive; fails (does not skip) with the fix when it cannot be found."""
    try:
        return signs_dataset.find_source(download=False)
    except signs_dataset.DatasetError as exc:
        pytest.fail(f"The data tests need the source archive offline: {exc}")


@pytest.fixture(scope="session")
def built_dataset(tmp_path_factory, source_archive):
    """One build into a temporary folder, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("signs")
    signs_dataset.build(out, source_archive)
    return out


@pytest.fixture(scope="session")
def stand_in_model_file(tmp_path_factory):
    """A small saved model with ResNet50's input and output shapes, for the service's tests (training the real one takes minutes)."""
    import resnets_utils as ru

    keras, layers = ru.keras, ru.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3), name="image")
    x = layers.Conv2D(8, 5, strides=4, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(6, activation="softmax", name="predictions")(x), name="stand_in")
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path
