"""Other conditions: the SIGNS photos as other people would take them, to measure how far a network generalises.

Every photo in the dataset shows a hand on a plain grey or white wall, upright, filling the frame, in the
same light. Photos from other people differ in exactly those ways. ``conditions(images, seed)`` makes
fixed, seeded versions of the photos it is given, one per condition:

* the background replaced (the hand cut out with ``resnets_utils.hand_mask``, its edge feathered) by a
  plain colour (green, beige, dark blue, red) or a texture (blotches, stripes, a gradient);
* the hand tilted by 30 degrees either way, or at 60% of the frame;
* warm or cool light, low contrast, greyscale, JPEG quality 30;
* and pairs of two of those.

Build it from the *validation* photos to choose a recipe and from the *test* photos to report one, never
from training photos. ``python tools/conditions_benchmark.py`` measures trained networks on it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

import resnets_utils as ru

BACKGROUND_COLOURS = {"green": (60, 150, 70), "beige": (225, 200, 160), "dark blue": (30, 40, 90), "red": (170, 40, 40)}
TEXTURES = ("blotches", "stripes", "gradient")
PAIRS = (
    ("beige background", "tilted +30°"),
    ("dark blue background", "hand at 60% of the frame"),
    ("blotches background", "JPEG quality 30"),
    ("warm light", "low contrast"),
    ("green background", "greyscale"),
    ("cool light", "tilted -30°"),
)


def hand_alpha(images) -> np.ndarray:
    """Soft masks in [0, 1] of the hand in uint8 photos: ``ru.hand_mask``, closed by a pixel and its holes filled
    (nails and highlights are not redder than blue), its edge feathered over about a pixel."""
    from scipy import ndimage

    masks = [ndimage.binary_fill_holes(ndimage.binary_closing(mask)) for mask in ru.hand_mask(images)]
    return np.clip(np.stack([ndimage.gaussian_filter(mask.astype(np.float32), sigma=0.8) for mask in masks]) * 1.5 - 0.25, 0, 1)


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(size, size, 3)`` float background: coloured blotches, stripes at a random angle, or a two-colour gradient."""
    if kind == "blotches":
        coarse = rng.uniform(20, 235, size=(6, 6, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        return smooth + rng.normal(0, 8, size=(size, size, 3))
    y, x = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, np.pi)
    along = x * np.cos(angle) + y * np.sin(angle)
    first, second = rng.uniform(20, 235, size=(2, 3))
    if kind == "stripes":
        weight = (np.sin(along * 2 * np.pi * rng.uniform(3, 7)) > 0).astype(np.float32)
    elif kind == "gradient":
        weight = (along - along.min()) / (along.max() - along.min())
    else:
        raise ValueError(f"Unknown texture {kind!r}; use one of {TEXTURES}.")
    return first + (second - first) * weight[..., None]


def replace_background(images, backgrounds) -> np.ndarray:
    """The hand of each uint8 photo on the matching background (float arrays or one RGB colour)."""
    images = np.asarray(images, dtype=np.float32)
    alpha = hand_alpha(images.astype(np.uint8))[..., None]
    backgrounds = np.broadcast_to(np.asarray(backgrounds, dtype=np.float32), images.shape)
    return _uint8(images * alpha + backgrounds * (1 - alpha))


def border_colour(image) -> tuple[int, ...]:
    """The median colour of a photo's outermost pixels: what a wall behind the hand would show."""
    image = np.asarray(image)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return tuple(int(v) for v in np.median(border, axis=0))


def tilt(images, degrees: float) -> np.ndarray:
    """Each photo rotated by ``degrees`` (counter-clockwise), the corners filled with its own wall colour."""
    return np.stack([np.asarray(Image.fromarray(image).rotate(degrees, Image.Resampling.BICUBIC, fillcolor=border_colour(image)))
                     for image in np.asarray(images)])


def shrink(images, scale: float) -> np.ndarray:
    """Each photo at ``scale`` of the frame, centred, on its own wall colour: the hand further away."""
    out = []
    for image in np.asarray(images):
        size = image.shape[0]
        small = np.asarray(Image.fromarray(image).resize((round(size * scale),) * 2, Image.Resampling.LANCZOS), dtype=np.float32)
        side = small.shape[0]
        edge = np.minimum.outer(np.minimum(np.arange(side), np.arange(side)[::-1]), np.minimum(np.arange(side), np.arange(side)[::-1]))
        alpha = np.clip((edge + 1) / 5, 0, 1)[..., None]  # the photo's own edge fades into the wall over 4 pixels
        canvas = np.empty((size, size, 3), np.float32)
        canvas[:] = border_colour(image)
        top = (size - side) // 2
        canvas[top:top + side, top:top + side] = small * alpha + canvas[top:top + side, top:top + side] * (1 - alpha)
        out.append(_uint8(canvas))
    return np.stack(out)


def jpeg(images, quality: int) -> np.ndarray:
    """Each photo saved as a JPEG of ``quality`` and read back."""
    out = []
    for image in np.asarray(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return np.stack(out)


def _uint8(array) -> np.ndarray:
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def single_conditions(images, seed: int = 0) -> dict[str, np.ndarray]:
    """``{name: photos}`` for each single condition; textured backgrounds are drawn from ``seed``."""
    images = np.asarray(images)
    size = images.shape[1]
    as_float = images.astype(np.float32)
    mean = as_float.mean(axis=(1, 2, 3), keepdims=True)
    out = {f"{name} background": replace_background(images, colour) for name, colour in BACKGROUND_COLOURS.items()}
    for k, kind in enumerate(TEXTURES):  # one generator per photo and texture: photo i gets the same wall in any batch
        walls = [texture(kind, size, np.random.default_rng([seed, k, i])) for i in range(len(images))]
        out[f"{kind} background"] = replace_background(images, np.stack(walls))
    out.update({
        "tilted +30°": tilt(images, 30),
        "tilted -30°": tilt(images, -30),
        "hand at 60% of the frame": shrink(images, 0.6),
        "warm light": _uint8(as_float * np.array([1.12, 1.0, 0.8])),
        "cool light": _uint8(as_float * np.array([0.82, 0.97, 1.12])),
        "low contrast": _uint8((as_float - mean) * 0.5 + mean),
        "greyscale": np.repeat(np.asarray([np.asarray(Image.fromarray(i).convert("L")) for i in images])[..., None], 3, axis=-1),
        "JPEG quality 30": jpeg(images, 30),
    })
    return out


def conditions(images, seed: int = 0) -> dict[str, np.ndarray]:
    """``{name: photos}``: every single condition and every pair in ``PAIRS`` (the first applied first)."""
    single = single_conditions(images, seed)
    out = dict(single)
    for first, second in PAIRS:
        out[f"{first} + {second}"] = single_conditions(single[first], seed)[second]
    return out


def photo_sets(images, seed: int = 0) -> dict[str, np.ndarray]:
    """``{"as taken": images, **conditions(images, seed)}``: what the benchmark measures a network on."""
    return {"as taken": np.asarray(images), **conditions(images, seed)}


def predictions_per_condition(model, sets: dict[str, np.ndarray], mirror: bool = False) -> dict[str, np.ndarray]:
    """``{name: the class model predicts for each photo}`` for each set of uint8 photos in ``sets`` (``photo_sets``).

    ``mirror``: the class whose probability, averaged over the photo and its mirror image, is highest: a
    test-time trick measured here before any adoption (``ru.predict_image`` does not use it)."""
    def probabilities(photos):
        return model.predict(ru.to_model_input(photos), batch_size=64, verbose=0)

    return {name: (probabilities(photos) + probabilities(photos[:, :, ::-1]) if mirror else probabilities(photos)).argmax(axis=1)
            for name, photos in sets.items()}


def accuracy_per_condition(model, images, labels, seed: int = 0, mirror: bool = False) -> dict[str, float]:
    """Accuracy of ``model`` on the photos as taken and under each of ``conditions`` (``mirror``: see ``predictions_per_condition``)."""
    labels = np.asarray(labels).reshape(-1)
    predicted = predictions_per_condition(model, photo_sets(images, seed), mirror)
    return {name: float((classes == labels).mean()) for name, classes in predicted.items()}
