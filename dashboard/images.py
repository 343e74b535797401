"""Images as small PNG data URIs (thumbnails, the sample image)."""

from __future__ import annotations

import base64
import io

import numpy as np


def to_display(image: np.ndarray) -> np.ndarray:
    """A ``(C, H, W)`` uint8 image as ``(H, W)`` (grey) or ``(H, W, 3)`` (colour)."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)
    return np.ascontiguousarray(img.astype(np.uint8))


def image_data_uri(image: np.ndarray, scale: int = 2) -> str:
    """``data:image/png;base64,...`` of a ``(C, H, W)`` uint8 image, upscaled ``scale`` times.

    Nearest-neighbour upscaling keeps digits crisp; a 28x28 thumbnail at scale 2
    is ~1 kB.
    """
    from PIL import Image

    pil = Image.fromarray(to_display(image))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
