"""Build the SIGNS-format hand-sign dataset from the open Sign Language Digits Dataset.

The course this repository follows trains on ``train_signs.h5`` / ``test_signs.h5`` ("SIGNS"), which are
not openly licensed. This module builds files with the same schema from the Sign Language Digits Dataset
(Apache-2.0, https://github.com/ardamavi/Sign-Language-Digits-Dataset, pinned to one commit):

* digits 0-5 (the course's six classes); per class, 180 training and 20 test images chosen with a
  fixed seed. Digits 6-9 are built the same way into ``datasets/digits_6_9/`` for chapter 05's
  transfer learning (``--digits 6-9``);
* every image verified against ``datasets/signs_manifest.sha256`` before it is used;
* 100x100 photos resized to 64x64 with an antialiasing filter (``prepare_image``), the same function
  that prepares "your own" photos later, so training and inference see images made the same way;
* both files written to temporary names and renamed at the end, so a failed or interrupted build never
  leaves a half-written file behind.

Where the source archive comes from, first match wins:

1. ``$SIGNS_SOURCE``: a path to the archive (.zip) or an http(s) URL to download it from;
2. an archive already in ``datasets/`` (``Sign-Language-Digits-Dataset-*.zip``);
3. a download of the pinned archive with ``keras.utils.get_file`` into the Keras cache.

Command line (``make data`` runs the first form)::

    python -m signs_dataset                 # build datasets/*.h5 unless they are already there
    python -m signs_dataset --force         # rebuild them
    python -m signs_dataset --digits 6-9    # digits 6-9 into datasets/digits_6_9/ (chapter 05)
    python -m signs_dataset manifest ZIP    # maintainers: regenerate the manifest from an archive

This module does not import TensorFlow (only the download path does), so building data stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PINNED_COMMIT = "4b09433ef9d5c60602e8805bb54b8aa2428527f8"
ARCHIVE_NAME = f"Sign-Language-Digits-Dataset-{PINNED_COMMIT}.zip"
ARCHIVE_URL = f"https://github.com/ardamavi/Sign-Language-Digits-Dataset/archive/{PINNED_COMMIT}.zip"
SOURCE_ENV = "SIGNS_SOURCE"

DATA_DIR = Path(__file__).resolve().parent / "datasets"
MANIFEST_PATH = DATA_DIR / "signs_manifest.sha256"
TRAIN_FILE = "train_signs.h5"
TEST_FILE = "test_signs.h5"

CLASSES = (0, 1, 2, 3, 4, 5)
NEW_CLASSES = (6, 7, 8, 9)  # chapter 05: new signs for the network trained on CLASSES
NEW_CLASSES_DIR = DATA_DIR / "digits_6_9"
TRAIN_PER_CLASS = 180
TEST_PER_CLASS = 20
SPLIT_SEED = 0
IMAGE_SIZE = 64

# The formats phones and browsers produce. Pillow is told to try only these, so every other format it
# could read (ICO, TIFF, AVIF, PSD, ...) is refused from its first bytes, before any decoder runs:
# fewer decoders, fewer of their bugs and costs (Pillow's security notes advise the same).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")  # JPEG includes MPO, the multi-picture JPEG of some phones
ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF or BMP"
# Pixel limits, read from the header before decoding. A JPEG is decoded at a reduced scale (at least
# DRAFT_SIDE pixels on its short side), so a 40-megapixel phone photo costs little; the lossless formats
# decode at full size, so they get a lower limit: 12 MP, a 4032x3024 camera frame (a 12-MP WebP costs
# about 190 MB while it is decoded: tools/decode_cost.py).
MAX_IMAGE_PIXELS = 40_000_000
MAX_LOSSLESS_PIXELS = 12_000_000
DRAFT_SIDE = 256
# The dataset's images are about 10 kB; a member this large is not one of them, whatever its name.
MAX_MEMBER_BYTES = 2 * 2**20


class DatasetError(RuntimeError):
    """The dataset or its source is missing, corrupt or not what we expect. The message says what to do."""


class ImageError(ValueError):
    """A file given as an image cannot be used as one. The message says why."""


class NotAnImageError(ImageError):
    """The file is empty or not in an image format Pillow reads (as opposed to a damaged image)."""


class ImageTooLargeError(ImageError):
    """The image decodes to more than ``MAX_IMAGE_PIXELS`` pixels (a decompression bomb, or just too big)."""


# ----------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------
def prepare_image(source, size: int = IMAGE_SIZE) -> np.ndarray:
    """Turn a photo into a ``(size, size, 3)`` uint8 array, exactly as the dataset images were made.

    ``source`` is a path, a binary file object, raw ``bytes`` or a ``PIL.Image``. The photo is rotated
    as its EXIF orientation says, converted to RGB (greyscale, palette and RGBA images included; a
    transparent background becomes white), centre-cropped to a square and resized with Lanczos
    filtering, which antialiases when it shrinks. Only ``ACCEPTED_FORMATS`` are opened; the pixel limits
    are checked from the header; a large JPEG is decoded at a reduced scale and any large image is
    box-reduced before the filtering (an image under ``DRAFT_SIDE`` pixels a side, like the dataset's,
    takes exactly the same path as before). Raises ``ImageError`` for anything that is not a usable image.
    """
    if isinstance(source, Image.Image):
        return _fit(source, size)
    name = str(source) if isinstance(source, (str, Path)) else "The uploaded file"
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise NotAnImageError("The image file is empty.")
        source = io.BytesIO(source)
    try:
        image = Image.open(source, formats=ACCEPTED_FORMATS)
        limit = MAX_IMAGE_PIXELS if image.format in ("JPEG", "MPO") else MAX_LOSSLESS_PIXELS
        if image.width * image.height > limit:
            raise ImageTooLargeError(
                f"{name} is {image.width}x{image.height} pixels, more than the {limit:,} allowed for "
                f"{image.format} images; resize it before classifying it."
            )
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))  # decode at 1/2, 1/4 or 1/8 scale when that still leaves enough pixels
        image.load()
        return _fit(image, size)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name} does not exist.") from None
    except UnidentifiedImageError:
        raise NotAnImageError(f"{name} is not a {ACCEPTED_NAMES} image.") from None
    except Image.DecompressionBombError as exc:  # Pillow's own guard, above our limits
        raise ImageTooLargeError(f"{name} is too large to decode safely: {exc}") from None
    except MemoryError:
        raise ImageTooLargeError(f"{name} needs more memory to decode than is available.") from None
    except Exception as exc:  # noqa: BLE001 - any decoder's error (OSError, SyntaxError, RuntimeError, struct.error, ...) means a bad file
        raise ImageError(f"{name} could not be decoded, it may be truncated or corrupt: {type(exc).__name__}: {exc}") from None


def _fit(image: Image.Image, size: int) -> np.ndarray:
    reduction = min(image.size) // DRAFT_SIDE
    if reduction >= 2:  # a cheap integer box reduction first, before any full-size copy; the Lanczos filter below does the rest
        if image.mode in ("1", "P"):  # box reduction needs real grey or colour values
            image = image.convert("RGBA" if image.mode == "P" and "transparency" in image.info else "L" if image.mode == "1" else "RGB")
        image = image.reduce(reduction)  # keeps image.info, and with it the EXIF orientation
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB")
    image = ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------
# The source archive
# ----------------------------------------------------------------------------------------------------
def read_manifest(path: Path = MANIFEST_PATH) -> dict[str, str]:
    """Return ``{relative path: sha256}`` from a ``sha256sum``-style manifest."""
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            entries[name.strip()] = digest
    return entries


def find_source(download: bool = True) -> Path:
    """Locate the source archive (see the module docstring for the order); download it if allowed."""
    configured = os.environ.get(SOURCE_ENV, "").strip()
    if configured:
        if re.match(r"https?://", configured):
            return _download(configured)
        path = Path(configured).expanduser()
        if not path.is_file():
            raise DatasetError(
                f"{SOURCE_ENV} points at {path}, which is not a file. Set it to the path of "
                f"{ARCHIVE_NAME} (or an http(s) URL to download it from), or unset it."
            )
        return path
    local = sorted(DATA_DIR.glob("Sign-Language-Digits-Dataset-*.zip"))
    if local:
        return local[0]
    if not download:
        raise DatasetError(
            f"No source archive found. Set {SOURCE_ENV}=/path/to/{ARCHIVE_NAME}, or put the archive "
            f"in {DATA_DIR}/ (download it from {ARCHIVE_URL})."
        )
    return _download(ARCHIVE_URL)


def _download(url: str) -> Path:
    # Keras' downloader caches in ~/.keras/datasets, so a second build does not download again.
    from resnets_utils import keras  # imports TensorFlow quietly; only needed on this path

    try:
        return Path(keras.utils.get_file(fname=ARCHIVE_NAME, origin=url, cache_subdir="datasets"))
    except Exception as exc:  # noqa: BLE001 - any network or HTTP failure gets the same advice
        raise DatasetError(
            f"Could not download the dataset from {url} ({exc}). Download {ARCHIVE_NAME} by hand and set "
            f"{SOURCE_ENV}=/path/to/it, or put it in {DATA_DIR}/."
        ) from None


def read_verified_images(archive: Path, manifest: dict[str, str]) -> dict[str, bytes]:
    """Read every manifest file from ``archive`` and check its SHA-256; return ``{name: bytes}``.

    GitHub regenerates archives on request, so two downloads need not be byte-identical; the images
    inside must be. Any missing, unreadable or altered image stops the build with a message naming it.
    """
    advice = (
        f"Delete {archive} and build again to download a fresh copy, or set {SOURCE_ENV} to a good copy "
        f"of {ARCHIVE_NAME}."
    )
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {_strip_top_folder(n): n for n in zf.namelist() if not n.endswith("/")}
            images = {}
            for name, expected in manifest.items():
                if name not in members:
                    raise DatasetError(
                        f"{archive} lacks {name}: it is incomplete or not the pinned commit {PINNED_COMMIT}. {advice}"
                    )
                data = _read_member(zf, members[name], name, archive, advice)
                actual = hashlib.sha256(data).hexdigest()
                if actual != expected:
                    raise DatasetError(
                        f"{name} in {archive} does not match the manifest (sha256 {actual[:12]}..., expected "
                        f"{expected[:12]}...): the file was altered or damaged. {advice}"
                    )
                images[name] = data
            return images
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{archive} is not a readable zip archive ({exc}); it may be truncated. {advice}") from None
    except OSError as exc:
        raise DatasetError(f"Could not read {archive}: {exc}. {advice}") from None


def _read_member(zf: zipfile.ZipFile, member: str, name: str, archive: Path, advice: str) -> bytes:
    """A member's bytes, read in chunks and refused past ``MAX_MEMBER_BYTES`` (whatever its header claims),
    so a huge file under a dataset name costs no more memory than a real image."""
    too_big = DatasetError(
        f"{name} in {archive} is larger than {MAX_MEMBER_BYTES:,} bytes, far larger than any image of the dataset: "
        f"the archive is not the pinned one. {advice}"
    )
    if zf.getinfo(member).file_size > MAX_MEMBER_BYTES:
        raise too_big
    chunks, total = [], 0
    with zf.open(member) as f:
        while chunk := f.read(2**16):
            total += len(chunk)
            if total > MAX_MEMBER_BYTES:
                raise too_big
            chunks.append(chunk)
    return b"".join(chunks)


def _strip_top_folder(member: str) -> str:
    """``Sign-Language-Digits-Dataset-<sha>/Dataset/0/a.JPG`` -> ``Dataset/0/a.JPG``."""
    return member.split("/", 1)[1] if "/" in member else member


# ----------------------------------------------------------------------------------------------------
# The split and the build
# ----------------------------------------------------------------------------------------------------
def split_names(names, seed: int = SPLIT_SEED, classes=CLASSES) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Choose ``TRAIN_PER_CLASS`` + ``TEST_PER_CLASS`` images of each digit in ``classes``.

    Per class, the file names are sorted, shuffled with a generator seeded by ``seed`` and cut: the
    first 20 go to the test set, the next 180 to the training set, the rest are not used. Each set is
    then shuffled so classes are interleaved, as in the course's files. Returns two lists of
    ``(name, index)``, where ``index`` is the digit's position in ``classes`` (the digit itself for 0-5;
    6-9 become 0-3, as a model's outputs are numbered; the files' ``list_classes`` maps them back).
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for index, digit in enumerate(classes):
        in_class = sorted(n for n in names if n.startswith(f"Dataset/{digit}/"))
        needed = TRAIN_PER_CLASS + TEST_PER_CLASS
        if len(in_class) < needed:
            raise DatasetError(f"Digit {digit} has {len(in_class)} images in the manifest; {needed} are needed.")
        chosen = [in_class[i] for i in rng.permutation(len(in_class))[:needed]]
        test += [(n, index) for n in chosen[:TEST_PER_CLASS]]
        train += [(n, index) for n in chosen[TEST_PER_CLASS:]]
    train = [train[i] for i in rng.permutation(len(train))]
    test = [test[i] for i in rng.permutation(len(test))]
    return train, test


def build(output_dir: Path = DATA_DIR, source: Path | None = None, manifest_path: Path = MANIFEST_PATH, classes=CLASSES) -> tuple[Path, Path]:
    """Build ``train_signs.h5`` and ``test_signs.h5`` of the digits ``classes`` in ``output_dir``; return their paths.

    Both files are written under temporary names and renamed only once both are complete; on any
    error (or Ctrl-C) the temporary files are removed and existing files are left as they were.
    """
    output_dir = Path(output_dir)
    source = Path(source) if source is not None else find_source()
    manifest = read_manifest(manifest_path)
    images = read_verified_images(source, manifest)
    train, test = split_names(manifest, classes=classes)

    targets = {TRAIN_FILE: ("train", train), TEST_FILE: ("test", test)}
    temporary = {name: output_dir / f".{name}.partial-{os.getpid()}" for name in targets}
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_partial_files(output_dir)
        for name, (prefix, items) in targets.items():
            x = np.stack([prepare_image(images[n]) for n, _ in items])
            y = np.array([label for _, label in items], dtype=np.int64)
            _write_h5(temporary[name], prefix, x, y, source, classes)
        for name in targets:
            os.replace(temporary[name], output_dir / name)
    except OSError as exc:  # a read-only or full folder, a file where the folder should be
        raise DatasetError(
            f"could not write the dataset to {output_dir}: {exc.strerror or exc}. Make that folder writable by you "
            "(or free some space), or build into another folder: `python -m signs_dataset --output-dir DIR`, "
            "then `ru.load_dataset(DIR)`."
        ) from None
    finally:
        for path in temporary.values():
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
    return output_dir / TRAIN_FILE, output_dir / TEST_FILE


def remove_stale_partial_files(output_dir: Path) -> list[Path]:
    """Remove the temporary files of builds that were killed (their process is gone); return them."""
    removed = []
    for path in output_dir.glob(".*.partial-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _write_h5(path: Path, prefix: str, x: np.ndarray, y: np.ndarray, source: Path, classes=CLASSES) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(f"{prefix}_set_x", data=x)
        f.create_dataset(f"{prefix}_set_y", data=y)
        f.create_dataset("list_classes", data=np.array(classes, dtype=np.int64))
        f.attrs["source"] = f"Sign Language Digits Dataset, commit {PINNED_COMMIT} ({source.name})"
        f.attrs["license"] = "Apache-2.0"
        f.attrs["split_seed"] = SPLIT_SEED
        f.attrs["builder"] = "signs_dataset.py"
    with open(path, "rb") as f:  # make sure the bytes are on disk before the rename publishes the file
        os.fsync(f.fileno())


def ensure_built(data_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """Return the two h5 paths in ``data_dir``, building them first if either is missing.

    ``NEW_CLASSES_DIR`` gets digits 6-9, any other folder digits 0-5.
    """
    data_dir = Path(data_dir)
    train_path, test_path = data_dir / TRAIN_FILE, data_dir / TEST_FILE
    if train_path.is_file() and test_path.is_file():
        return train_path, test_path
    return build(data_dir, classes=classes_for(data_dir))


def classes_for(data_dir: Path) -> tuple[int, ...]:
    """The digits this repository builds into ``data_dir``: 6-9 in ``NEW_CLASSES_DIR``, else 0-5."""
    return NEW_CLASSES if Path(data_dir).resolve() == NEW_CLASSES_DIR.resolve() else CLASSES


def make_manifest(archive: Path) -> str:
    """Return manifest text (``sha256  Dataset/<digit>/<file>``) for every image in ``archive``."""
    lines = [
        f"# SHA-256 of every image in {ARCHIVE_NAME}, paths relative to its top folder.",
        "# Generated by `python -m signs_dataset manifest ARCHIVE`; the build refuses images that differ.",
    ]
    with zipfile.ZipFile(archive) as zf:
        for member in sorted(zf.namelist()):
            name = _strip_top_folder(member)
            if re.fullmatch(r"Dataset/\d/[^/]+\.JPG", name):
                lines.append(f"{hashlib.sha256(zf.read(member)).hexdigest()}  {name}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m signs_dataset", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="build", choices=["build", "manifest"])
    parser.add_argument("archive", nargs="?", help="with 'manifest': the archive to describe")
    parser.add_argument("--digits", choices=["0-5", "6-9"], default="0-5", help="0-5: the course's six classes (default); 6-9: chapter 05's new signs")
    parser.add_argument("--output-dir", type=Path, help="where to write the h5 files (default: datasets/, or datasets/digits_6_9/ for 6-9)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the files exist")
    args = parser.parse_args(argv)
    try:
        if args.command == "manifest":
            if not args.archive:
                parser.error("manifest needs the path of an archive")
            sys.stdout.write(make_manifest(Path(args.archive)))
            return 0
        classes = NEW_CLASSES if args.digits == "6-9" else CLASSES
        if args.output_dir is None:
            args.output_dir = NEW_CLASSES_DIR if classes == NEW_CLASSES else DATA_DIR
        train_path, test_path = args.output_dir / TRAIN_FILE, args.output_dir / TEST_FILE
        if not args.force and train_path.is_file() and test_path.is_file():
            print(f"Dataset ready: {train_path} and {test_path} (use --force to rebuild).")
            return 0
        start = time.perf_counter()
        source = find_source()
        build(args.output_dir, source, classes=classes)
        print(
            f"Built {train_path} ({len(classes) * TRAIN_PER_CLASS} images of digits {args.digits}) and {test_path} "
            f"({len(classes) * TEST_PER_CLASS} images) from {source} in {time.perf_counter() - start:.1f} s."
        )
        return 0
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
