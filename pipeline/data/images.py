"""A photo or drawing of a digit, prepared as MNIST prepared its digits.

MNIST's digits are light on dark, size-normalised into a 20x20 box keeping their aspect
ratio, and centred by their centre of mass in a 28x28 image (LeCun et al., "The MNIST
database"). `prepare` does the same to any PNG or JPEG: grayscale (16-bit and transparent
images included), inverted when the background is light, cropped to the digit, scaled into
the box, centred by mass, and scaled to [0, 1] as the pipeline's prepared data is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import DataError

SIZE, BOX = 28, 20
# Pixels darker than this share of the brightest are background when cropping.
_INK = 0.2


def _grayscale(path: Path) -> np.ndarray:
    """The image's luminance in [0, 1], float; a transparent background shows as the colour
    opposite the strokes' (ink drawn on nothing stays ink)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = np.asarray(image.convert("RGBA"), np.float32) / 255
                alpha = rgba[..., 3]
                gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
                if alpha.min() < 1:
                    # Strokes are the opaque pixels: put them on the opposite background.
                    drawn = alpha > 0.5
                    ink = gray[drawn].mean() if drawn.any() else 0.0
                    background = 1.0 if ink < 0.5 else 0.0
                    gray = gray * alpha + background * (1 - alpha)
                return gray
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                values = np.asarray(image, np.float64)
                top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
                return (values / top).astype(np.float32)
            return np.asarray(image.convert("L"), np.float32) / 255
    except (UnidentifiedImageError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable image ({reason})") from None


def prepare(path: Path) -> np.ndarray:
    """The image at `path` as a (28, 28) float32 MNIST digit in [0, 1], light on dark.

    Raises:
        DataError: the file is not an image, or shows nothing (one line naming it).
    """
    from PIL import Image

    gray = _grayscale(path)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise DataError(f"{path}: not a two-dimensional image")
    # MNIST's digits are light on dark: a light background (its border) is inverted.
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray, border = 1 - gray, 1 - border
    # The background's own level (paper is rarely white in a photo) is taken off.
    gray = np.clip(gray - np.median(border), 0, None)
    if gray.max() <= 0.05:
        raise DataError(f"{path}: no digit found (the image is blank)")
    gray /= gray.max()
    rows, cols = np.nonzero(gray > _INK)
    digit = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    # Into the 20x20 box, keeping the aspect ratio (antialiased).
    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray((digit * 255).astype(np.uint8)).resize(size, Image.LANCZOS)
    box = np.asarray(resized, np.float32) / 255
    # Centred by its centre of mass in 28x28.
    ys, xs = np.indices(box.shape)
    mass = box.sum()
    cy, cx = (ys * box).sum() / mass, (xs * box).sum() / mass
    top = int(round(SIZE / 2 - cy))
    left = int(round(SIZE / 2 - cx))
    top = min(max(top, 0), SIZE - box.shape[0])
    left = min(max(left, 0), SIZE - box.shape[1])
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top : top + box.shape[0], left : left + box.shape[1]] = box
    return out
