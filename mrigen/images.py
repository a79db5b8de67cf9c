"""Writing images and image grids as 8-bit grayscale PNG files."""

import math
import os
from typing import Optional

import numpy as np
from PIL import Image

from mrigen.data import to_uint8
from mrigen.errors import writing


def grid(images: np.ndarray, columns: Optional[int] = None, padding: int = 2) -> np.ndarray:
    """Tiles [N, H, W, 1] (or [N, H, W]) float images in [-1, 1] into one uint8 image.

    `columns` defaults to a near-square layout; cells are separated by
    `padding` black pixels. Returns [rows * (H + p) - p, columns * (W + p) - p] uint8.
    """
    images = to_uint8(images)
    if images.ndim == 4:
        images = images[..., 0]
    n, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * (h + padding) - padding, columns * (w + padding) - padding), np.uint8)
    for i, image in enumerate(images):
        top, left = (i // columns) * (h + padding), (i % columns) * (w + padding)
        canvas[top:top + h, left:left + w] = image
    return canvas


def save_png(image_u8: np.ndarray, path: str) -> None:
    """Writes a 2-D uint8 array as a grayscale PNG (via a temporary file, then renamed).

    A failed write raises WriteError and leaves no temporary file.
    """
    temporary = f"{path}.{os.getpid()}.tmp"
    with writing(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            Image.fromarray(np.asarray(image_u8, np.uint8), mode="L").save(temporary, format="PNG")
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise


def save_grid(images: np.ndarray, path: str, columns: Optional[int] = None) -> None:
    """`grid` written to `path` as PNG."""
    save_png(grid(images, columns), path)


def representative(images: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` of `images` ([N, ...]) chosen at random with `seed`, kept in their order (all if N <= count).

    Grids of real data show such a choice, not the first files: those are often
    one end of the brain.
    """
    if len(images) <= count:
        return images
    chosen = np.random.default_rng(seed).choice(len(images), size=count, replace=False)
    return images[np.sort(chosen)]
