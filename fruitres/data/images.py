"""Turning any image file into the uint8 RGB array the models see: the one decoding rule of training,
evaluation, prediction and the exported model's documented preprocessing (`decoding_rule`)."""

from __future__ import annotations

import warnings
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


# Images above Pillow's decompression-bomb limit are refused by `check_pixel_count` with one line naming the
# file, before a pixel is decoded; Pillow's own warning about them would only repeat it in its words.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageTooLarge(ValueError):
    """An image with more pixels than Pillow's Image.MAX_IMAGE_PIXELS: decoding it could take gigabytes."""


def check_pixel_count(path: str | Path, image: Image.Image) -> None:
    """Raise ImageTooLarge for an image above Image.MAX_IMAGE_PIXELS (a 17 KB PNG can hold 144 M pixels)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and image.width * image.height > limit:
        raise ImageTooLarge(
            f"{path} is {image.width}×{image.height} = {image.width * image.height:,} pixels, more than the "
            f"{limit:,} decoded at most (PIL.Image.MAX_IMAGE_PIXELS); shrink it or remove it"
        )


def decoding_rule(interpolation: str) -> str:
    """`decode_image` in words, for tools outside this package (model.json's `preprocessing.decoding`)."""
    return (
        "Pillow: Image.open, ImageOps.exif_transpose, 16-bit greyscale scaled to 8 bits (value / 257, "
        "rounded), transparency composited over white, convert('RGB'), then Image.resize((image_size, "
        f"image_size), Image.Resampling.{INTERPOLATIONS[interpolation].name}, box=the centred square of side "
        "min(width, height)) unless the image already has that size: the shorter side scaled to image_size "
        "and the longer one centre-cropped, never stretched"
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
        check_pixel_count(path, image)
        rgb = to_rgb(image)
        if rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), INTERPOLATIONS[interpolation], box=centre_square(rgb))
        return np.asarray(rgb, dtype=np.uint8)


def centre_square(image: Image.Image) -> tuple[float, float, float, float]:
    """The centred square of side min(width, height): resized alone, it keeps the aspect ratio of any image
    (the shorter side to image_size, the longer one centre-cropped), as torchvision's Resize + CenterCrop."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)
