"""The SavedModel for TF Serving answers a client's REST body as ``ru.predict_image`` answers the same photos.

The model here is a small network trained for a few seconds (ResNet50 is trained by chapter 04, after
these tests): what is tested is the export's preparation of the image bytes, which is the same for any
network. ``python tools/serving_benchmark.py`` measures the same comparison on the trained ResNet50.
"""

import io
import json

import numpy as np
import pytest
from PIL import Image

import resnets_export as rx
import resnets_utils as ru
import signs_dataset as sd
from resnets_predict import CLASSES
from resnets_utils import keras, layers, tf

# Largest difference allowed between the export's and predict_image's probabilities. Both decode JPEG with
# the same accurate inverse DCT (the same pixels); what differs is the Lanczos kernel (Pillow's fixed-point
# against TensorFlow's float one): 18% of the 64x64 values differ, by 0.18 levels of 255 on average. On the
# trained ResNet50 that moves a probability by at most 0.0009 (tools/serving_benchmark.py); 0.005 leaves room
# for another network and CPU. TensorFlow's default (fast) DCT, broken on purpose, gave 0.026.
TOLERANCE = 0.005


@pytest.fixture(scope="module")
def test_photos(source_archive):
    """The 120 test photos as the archive has them (100x100 JPEG files, what a client would send), with labels."""
    manifest = sd.read_manifest()
    images = sd.read_verified_images(source_archive, manifest)
    _, test = sd.split_names(list(manifest))
    return [images[name] for name, _ in test], [label for _, label in test]


@pytest.fixture(scope="module")
def small_model(built_dataset):
    keras.utils.set_random_seed(0)
    x_train, y_train, _, _, _ = ru.load_dataset(built_dataset)
    inputs = keras.Input((64, 64, 3))
    x = layers.MaxPooling2D()(layers.Conv2D(32, 5, strides=2, activation="relu")(inputs))
    x = layers.MaxPooling2D()(layers.Conv2D(64, 3, activation="relu")(x))
    model = keras.Model(inputs, layers.Dense(6, activation="softmax")(layers.Flatten()(x)))
    model.compile("adam", "categorical_crossentropy")
    model.fit(ru.to_model_input(x_train), ru.convert_to_one_hot(y_train, 6), epochs=8, batch_size=32, verbose=0)  # about 3 s
    return model


@pytest.fixture(scope="module")
def exported(small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("serving") / "resnets"
    first = rx.export(small_model, out)
    return out, first, tf.saved_model.load(str(first)).signatures["serving_default"]


def test_export_writes_tf_servings_versioned_layout(exported, small_model):
    out, first, _ = exported
    assert first == out / "1" and (first / "saved_model.pb").is_file() and (first / "variables").is_dir()
    second = rx.export(small_model, out)
    assert second == out / "2"
    assert sorted(p.name for p in out.iterdir()) == ["1", "2"], "no partial folder left behind"


def test_the_rest_body_a_client_posts_gets_predict_images_answers(exported, small_model, test_photos):
    _, _, signature = exported
    files, labels = test_photos
    body = rx.request_body(files)  # what `curl -d @body.json .../v1/models/resnets:predict` sends
    assert json.loads(body)["instances"][0].keys() == {"b64"}
    answers = rx.rest_predict(signature, body)["predictions"]
    assert len(answers) == 120
    expected = [ru.predict_image(small_model, f, classes=CLASSES) for f in files]
    accuracy = np.mean([e["label"] == label for e, label in zip(expected, labels)])
    assert accuracy > 0.8, f"the small network should have learnt the signs ({accuracy:.0%})"
    assert [a["label"] for a in answers] == [str(e["label"]) for e in expected]
    differences = [abs(a["probabilities"][i] - e["probabilities"][c]) for a, e in zip(answers, expected) for i, c in enumerate(CLASSES)]
    assert max(differences) < TOLERANCE, f"largest difference {max(differences):.4f}"
    first = answers[0]
    assert first["classes"] == [str(c) for c in CLASSES] and first["probability"] == max(first["probabilities"])


def _encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def test_png_grey_transparent_gif_and_non_square_photos_are_prepared_like_prepare_image(exported, small_model, test_photos):
    _, _, signature = exported
    photo = Image.open(io.BytesIO(test_photos[0][3])).convert("RGB")
    transparent = photo.convert("RGBA")
    transparent.putalpha(Image.new("L", photo.size, 0).transform(photo.size, Image.Transform.EXTENT, (0, 0, 50, 50)))
    wide = Image.new("RGB", (160, 100), (90, 120, 200))
    wide.paste(photo, (30, 0))
    files = [_encoded(photo, "PNG"), _encoded(photo.convert("L"), "PNG"), _encoded(transparent, "PNG"),
             _encoded(photo, "GIF"), _encoded(photo, "BMP"), _encoded(wide, "JPEG")]
    body = json.dumps({"instances": [{rx.INPUT_NAME: {"b64": b64}} for b64 in (json.loads(rx.request_body(files))["instances"][i]["b64"] for i in range(len(files)))]})
    answers = rx.rest_predict(signature, body)["predictions"]  # the named-input form of the same request
    for name, data, answer in zip(["png", "grey", "transparent", "gif", "bmp", "wide"], files, answers):
        expected = ru.predict_image(small_model, data, classes=CLASSES)
        largest = max(abs(answer["probabilities"][i] - expected["probabilities"][c]) for i, c in enumerate(CLASSES))
        assert largest < TOLERANCE, f"{name}: largest difference {largest:.4f}"


def test_a_file_that_is_not_an_image_is_refused_by_the_signature(exported):
    _, _, signature = exported
    with pytest.raises(tf.errors.InvalidArgumentError):  # TF Serving answers it with 400 and this message
        signature(image_bytes=tf.constant([b"not an image"]))


def test_the_command_line_names_the_missing_model(tmp_path, capsys):
    assert rx.main(["--model", str(tmp_path / "none.keras"), "--out", str(tmp_path / "out")]) == 1
    assert "make train" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
