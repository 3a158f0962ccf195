"""The SIGNS-format data pipeline: schema, split, integrity checks, atomic builds, course-style loading."""

import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest
from PIL import Image, ImageOps

import resnets_utils as ru
import signs_dataset as sd


def test_schema_shapes_and_dtypes(built_dataset):
    with h5py.File(built_dataset / sd.TRAIN_FILE) as train, h5py.File(built_dataset / sd.TEST_FILE) as test:
        assert set(train) == {"train_set_x", "train_set_y", "list_classes"}
        assert set(test) == {"test_set_x", "test_set_y", "list_classes"}
        assert train["train_set_x"].shape == (1080, 64, 64, 3) and train["train_set_x"].dtype == np.uint8
        assert train["train_set_y"].shape == (1080,) and train["train_set_y"].dtype == np.int64
        assert test["test_set_x"].shape == (120, 64, 64, 3) and test["test_set_x"].dtype == np.uint8
        assert test["test_set_y"].shape == (120,) and test["test_set_y"].dtype == np.int64
        np.testing.assert_array_equal(test["list_classes"][:], [0, 1, 2, 3, 4, 5])


def test_class_balance(built_dataset):
    _, y_train, _, y_test, _ = ru.load_dataset(built_dataset)
    np.testing.assert_array_equal(np.bincount(y_train.ravel()), [180] * 6)
    np.testing.assert_array_equal(np.bincount(y_test.ravel()), [20] * 6)


def test_images_are_real_photos_not_blank(built_dataset):
    x_train, *_ = ru.load_dataset(built_dataset)
    assert 60 < x_train.mean() < 200
    assert x_train.std(axis=(1, 2, 3)).min() > 10  # every image has contrast


def test_train_and_test_share_no_source_image(source_archive):
    train, test = sd.split_names(sd.read_manifest())
    assert not {n for n, _ in train} & {n for n, _ in test}
    assert all(name.startswith(f"Dataset/{label}/") for name, label in train + test)


def test_split_is_identical_across_builds(built_dataset, tmp_path, source_archive):
    sd.build(tmp_path, source_archive)
    for name in (sd.TRAIN_FILE, sd.TEST_FILE):
        with h5py.File(built_dataset / name) as a, h5py.File(tmp_path / name) as b:
            for key in a:
                np.testing.assert_array_equal(a[key][:], b[key][:])


def test_split_depends_on_the_seed():
    assert sd.split_names(sd.read_manifest(), seed=0) != sd.split_names(sd.read_manifest(), seed=1)


def test_course_style_label_shapes_and_one_hot(built_dataset):
    x_train, y_train, x_test, y_test, classes = ru.load_dataset(built_dataset)
    assert y_train.shape == (1, 1080) and y_test.shape == (1, 120)
    one_hot = ru.convert_to_one_hot(y_train, 6)
    assert one_hot.shape == (1080, 6)
    np.testing.assert_array_equal(one_hot.argmax(axis=1), y_train.ravel())
    np.testing.assert_array_equal(one_hot.sum(axis=1), 1)
    with pytest.raises(ValueError, match="Labels must lie in 0..5"):
        ru.convert_to_one_hot(np.array([[0, 6]]), 6)


def _rewrite_member(source, target, member_suffix, transform):
    """Copy zip ``source`` to ``target``, passing the member ending in ``member_suffix`` through ``transform``."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(member_suffix):
                data = transform(data)
                if data is None:
                    continue
            zout.writestr(info, data)


def test_tampered_image_is_rejected_by_name(tmp_path, source_archive):
    victim = "Dataset/3/IMG_1131.JPG"
    assert victim in sd.read_manifest()
    tampered = tmp_path / "tampered.zip"
    _rewrite_member(source_archive, tampered, victim, lambda data: data[:-10] + bytes(10))
    with pytest.raises(sd.DatasetError, match=rf"{victim} in .*tampered.zip does not match the manifest"):
        sd.build(tmp_path / "out", tampered)
    assert not (tmp_path / "out" / sd.TRAIN_FILE).exists()


def test_missing_image_is_named(tmp_path, source_archive):
    incomplete = tmp_path / "incomplete.zip"
    _rewrite_member(source_archive, incomplete, "Dataset/0/IMG_1118.JPG", lambda data: None)
    with pytest.raises(sd.DatasetError, match="lacks Dataset/0/IMG_1118.JPG"):
        sd.build(tmp_path / "out", incomplete)


def test_truncated_archive_gets_a_clear_error(tmp_path, source_archive):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(source_archive.read_bytes()[: 5_000_000])
    with pytest.raises(sd.DatasetError, match="truncated.zip is not a readable zip archive"):
        sd.build(tmp_path / "out", truncated)


def test_missing_source_gives_the_documented_message(tmp_path, monkeypatch):
    monkeypatch.setenv(sd.SOURCE_ENV, str(tmp_path / "nowhere.zip"))
    with pytest.raises(sd.DatasetError, match=r"SIGNS_SOURCE points at .*nowhere.zip, which is not a file"):
        sd.find_source()
    monkeypatch.delenv(sd.SOURCE_ENV)
    monkeypatch.setattr(sd, "DATA_DIR", tmp_path)
    with pytest.raises(sd.DatasetError, match="No source archive found. Set SIGNS_SOURCE="):
        sd.find_source(download=False)


def test_command_line_reports_errors_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(sd.SOURCE_ENV, str(tmp_path / "nowhere.zip"))
    assert sd.main(["--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: SIGNS_SOURCE points at") and "Traceback" not in err


def test_command_line_reports_write_errors_without_a_traceback(tmp_path, source_archive, monkeypatch, capsys):
    monkeypatch.setenv(sd.SOURCE_ENV, str(source_archive))
    read_only = tmp_path / "read-only"
    read_only.write_text("a file where a folder should be")
    assert sd.main(["--output-dir", str(read_only)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not write the dataset to {read_only}") and "Traceback" not in err


def test_interrupted_build_leaves_nothing_loadable(tmp_path, source_archive, monkeypatch):
    calls = {"n": 0}
    real_prepare = sd.prepare_image

    def interrupt_midway(data, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 700:
            raise KeyboardInterrupt
        return real_prepare(data, *args, **kwargs)

    monkeypatch.setattr(sd, "prepare_image", interrupt_midway)
    with pytest.raises(KeyboardInterrupt):
        sd.build(tmp_path, source_archive)
    assert list(tmp_path.iterdir()) == []  # no h5 file, and no temporary file left behind


def test_interrupted_rebuild_keeps_the_previous_files(built_dataset, tmp_path, source_archive, monkeypatch):
    for name in (sd.TRAIN_FILE, sd.TEST_FILE):
        shutil.copy(built_dataset / name, tmp_path / name)
    before = hashlib.sha256((tmp_path / sd.TRAIN_FILE).read_bytes()).hexdigest()
    monkeypatch.setattr(sd, "_write_h5", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(sd.DatasetError, match=r"could not write the dataset to .*: No space left on device\. Make that folder writable"):
        sd.build(tmp_path, source_archive)
    assert hashlib.sha256((tmp_path / sd.TRAIN_FILE).read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [sd.TEST_FILE, sd.TRAIN_FILE]


def test_corrupt_h5_gets_a_clear_error(built_dataset, tmp_path):
    shutil.copy(built_dataset / sd.TEST_FILE, tmp_path / sd.TEST_FILE)
    (tmp_path / sd.TRAIN_FILE).write_bytes((built_dataset / sd.TRAIN_FILE).read_bytes()[:4096])
    with pytest.raises(sd.DatasetError, match=r"train_signs.h5 cannot be read .* Delete .* and run `make data`"):
        ru.load_dataset(tmp_path)


def test_course_files_drop_in(tmp_path):
    """Files with only the course's keys (no attributes of ours) load the same way."""
    rng = np.random.default_rng(0)
    for prefix, m in (("train", 12), ("test", 6)):
        with h5py.File(tmp_path / f"{prefix}_signs.h5", "w") as f:
            f["list_classes"] = np.arange(6)
            f[f"{prefix}_set_x"] = rng.integers(0, 256, (m, 64, 64, 3), dtype=np.uint8)
            f[f"{prefix}_set_y"] = np.arange(m) % 6
    x_train, y_train, x_test, y_test, classes = ru.load_dataset(tmp_path)
    assert x_train.shape == (12, 64, 64, 3) and y_train.shape == (1, 12) and y_test.shape == (1, 6)


def test_prepare_image_handles_phone_style_photos(tmp_path):
    # A 4:3 RGBA photo stored sideways (EXIF orientation 6 = rotate 90 degrees clockwise to view).
    photo = Image.new("RGBA", (400, 300), (255, 0, 0, 255))
    photo.paste((0, 0, 255, 255), (0, 0, 200, 300))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    photo.save(path, exif=exif)
    array = sd.prepare_image(path)
    assert array.shape == (64, 64, 3) and array.dtype == np.uint8
    # After rotating, the blue half is on top.
    assert array[5, 32, 2] > 200 and array[58, 32, 0] > 200
    assert sd.prepare_image(Image.new("L", (10, 10), 128)).shape == (64, 64, 3)
    assert sd.prepare_image(Image.new("P", (10, 10))).shape == (64, 64, 3)


@pytest.mark.parametrize(
    "payload, message",
    [(b"", "empty"), (b"not an image at all", "is not a JPEG, PNG, WebP, GIF or BMP image")],
)
def test_prepare_image_rejects_non_images(payload, message):
    with pytest.raises(sd.ImageError, match=message):
        sd.prepare_image(payload)


def test_prepare_image_rejects_truncated_and_huge_images(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (300, 300), (10, 200, 30)).save(path)
    with pytest.raises(sd.ImageError, match="could not be decoded"):
        sd.prepare_image(path.read_bytes()[: path.stat().st_size // 2])
    bomb = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(bomb)  # a few kB on disk, 64 million pixels decoded
    assert bomb.stat().st_size < 100_000
    with pytest.raises(sd.ImageError, match="more than the 12,000,000 allowed for PNG images"):
        sd.prepare_image(bomb)


def _image_bytes(size, format, mode="RGB", **save) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 120, 40) if mode == "RGB" else 0).save(buffer, format, **save)
    return buffer.getvalue()


@pytest.mark.parametrize("format", ["ICO", "TIFF", "AVIF", "PPM", "TGA"])
def test_prepare_image_opens_only_the_formats_phones_and_browsers_make(format):
    with pytest.raises(sd.NotAnImageError, match="is not a JPEG, PNG, WebP, GIF or BMP image"):
        sd.prepare_image(_image_bytes((32, 32), format))


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_prepare_image_reads_the_accepted_formats(format):
    assert sd.prepare_image(_image_bytes((80, 60), format)).shape == (64, 64, 3)


def test_a_large_photo_is_decoded_at_a_reduced_scale_and_a_small_one_exactly_as_before():
    # 6000x4000 (24 MP): over the lossless limit, under the JPEG one; decoded at 1/8 scale.
    big = sd.prepare_image(_image_bytes((6000, 4000), "JPEG", quality=90))
    assert big.shape == (64, 64, 3) and abs(int(big[32, 32, 0]) - 200) < 8
    with pytest.raises(sd.ImageTooLargeError, match="allowed for PNG images"):
        sd.prepare_image(_image_bytes((6000, 4000), "PNG"))
    small = Image.new("RGB", (100, 100))
    small.putdata([(x % 256, (3 * x) % 256, (7 * x) % 256) for x in range(100 * 100)])
    buffer = io.BytesIO()
    small.save(buffer, "JPEG")
    exact = np.asarray(ImageOps.fit(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), (64, 64), method=Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(sd.prepare_image(buffer.getvalue()), exact)  # the dataset's own path, unchanged


def test_a_large_sideways_photo_is_reduced_and_still_turned_upright(tmp_path):
    photo = Image.new("RGB", (1200, 900), (255, 0, 0))
    photo.paste((0, 0, 255), (0, 0, 600, 900))  # left half blue; EXIF 6: rotate 90 degrees clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    photo.save(buffer, "PNG", exif=exif)
    array = sd.prepare_image(buffer.getvalue())
    assert array[5, 32, 2] > 200 and array[58, 32, 0] > 200  # blue on top


def test_any_decoder_error_is_an_image_error():
    png = bytearray(_image_bytes((40, 40), "PNG"))
    png[60:70] = b"\xff" * 10  # damage the compressed data
    with pytest.raises(sd.ImageError, match="could not be decoded"):
        sd.prepare_image(bytes(png))


def test_a_huge_member_under_a_dataset_name_is_refused_before_it_is_read(tmp_path, source_archive):
    manifest = sd.read_manifest()
    name = sorted(manifest)[0]
    archive = tmp_path / "huge.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"top/{name}", b"\0" * (sd.MAX_MEMBER_BYTES + 1))  # compresses to a few kB
    with pytest.raises(sd.DatasetError, match=r"larger than 2,097,152 bytes, far larger than any image of the dataset"):
        sd.read_verified_images(archive, {name: manifest[name]})


def test_a_killed_build_leaves_partial_files_that_the_next_build_removes(tmp_path, source_archive):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".{sd.TRAIN_FILE}.partial-{dead}"
    stale.write_bytes(b"half an h5 file")
    alive = tmp_path / f".{sd.TEST_FILE}.partial-{os.getppid()}"  # a build still running: left alone
    alive.write_bytes(b"in progress")
    sd.build(tmp_path, source_archive)
    assert not stale.exists() and alive.exists()


def test_an_unwritable_folder_gets_advice_not_a_traceback(tmp_path, source_archive):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    with pytest.raises(sd.DatasetError, match=r"could not write the dataset to .*blocked.*build into another folder"):
        sd.build(blocked / "datasets", source_archive)


# ----------------------------------------------------------------------------------------------------
# Digits 6-9 (chapter 05's new signs): built the same way, into their own folder
# ----------------------------------------------------------------------------------------------------
def test_digits_6_to_9_are_built_the_same_way(tmp_path, source_archive):
    sd.build(tmp_path, source_archive, classes=sd.NEW_CLASSES)
    x_train, y_train, x_test, y_test, classes = ru.load_dataset(tmp_path)
    np.testing.assert_array_equal(classes, [6, 7, 8, 9])
    np.testing.assert_array_equal(np.bincount(y_train.ravel()), [180] * 4)  # labels 0-3 index `classes`
    np.testing.assert_array_equal(np.bincount(y_test.ravel()), [20] * 4)
    assert x_train.shape == (720, 64, 64, 3) and x_test.shape == (80, 64, 64, 3)
    train, test = sd.split_names(sd.read_manifest(), classes=sd.NEW_CLASSES)
    assert all(name.startswith(f"Dataset/{sd.NEW_CLASSES[index]}/") for name, index in train + test)
    assert not {n for n, _ in train} & {n for n, _ in test}


def test_the_digits_6_to_9_folder_builds_digits_6_to_9(monkeypatch, tmp_path):
    monkeypatch.setattr(sd, "NEW_CLASSES_DIR", tmp_path / "digits_6_9")
    assert sd.classes_for(tmp_path / "digits_6_9") == sd.NEW_CLASSES
    assert sd.classes_for(tmp_path / "elsewhere") == sd.CLASSES


def test_command_line_builds_digits_6_to_9(tmp_path, source_archive, monkeypatch, capsys):
    monkeypatch.setenv(sd.SOURCE_ENV, str(source_archive))
    assert sd.main(["--digits", "6-9", "--output-dir", str(tmp_path)]) == 0
    assert "720 images of digits 6-9" in capsys.readouterr().out
    with h5py.File(tmp_path / sd.TRAIN_FILE) as f:
        np.testing.assert_array_equal(f["list_classes"][:], [6, 7, 8, 9])
