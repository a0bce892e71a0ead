"""Turning any image file into the uint8 RGB array the models see."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

WHITE = (255, 255, 255)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB of any PIL mode; transparency is composited over white, the Fruits-360 background."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(path: str | Path, image_size: int) -> np.ndarray:
    """Decode one file to a (image_size, image_size, 3) uint8 array; PIL raises on unreadable files."""
    with Image.open(path) as image:
        image.draft("RGB", (image_size, image_size))  # JPEG: decode at reduced scale when shrinking
        rgb = to_rgb(image)
        if rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)
