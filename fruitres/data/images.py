"""Turning any image file into the uint8 RGB array the models see: the one decoding rule of training,
evaluation, prediction and the exported model's documented preprocessing (`decoding_rule`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

WHITE = (255, 255, 255)
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit greyscale (PNG, TIFF)
# data.interpolation: the names timm's and torchvision's data configs use, as Pillow's resampling filters
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def decoding_rule(interpolation: str) -> str:
    """`decode_image` in words, for tools outside this package (model.json's `preprocessing.decoding`)."""
    return (
        "Pillow: Image.open, ImageOps.exif_transpose, 16-bit greyscale scaled to 8 bits (value / 257, "
        "rounded), transparency composited over white, convert('RGB'), then Image.resize((image_size, "
        f"image_size), Image.Resampling.{INTERPOLATIONS[interpolation].name}) unless the image already has "
        "that size"
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB of any PIL mode; transparency is composited over white, the Fruits-360 background."""
    image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_BIT_DEPTH_MODES:
        image = _to_8_bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale to 8 bits by scaling; PIL's own convert clips every value above 255 to white."""
    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257), 0, 255).astype(np.uint8), mode="L")


def decode_image(path: str | Path, image_size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Decode one file to a (image_size, image_size, 3) uint8 array by `decoding_rule`; PIL raises on bad
    files. `interpolation` names the resizing filter (a key of INTERPOLATIONS)."""
    with Image.open(path) as image:
        rgb = to_rgb(image)
        if rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), INTERPOLATIONS[interpolation])
        return np.asarray(rgb, dtype=np.uint8)
