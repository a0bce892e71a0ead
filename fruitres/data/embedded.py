"""A small Fruits-360-shaped image set, drawn procedurally so that the project runs with no download.

`write_embedded_dataset` writes ``Training/<Class>/*.jpg`` and ``Test/<Class>/*.jpg`` under a root folder:
RGB JPEGs of one fruit-like object on a white background, like Fruits-360 frames. Each class is a fixed
combination of body shape, colour and surface texture, and classes are laid out so that pairs share a
colour (differing in shape or texture) and neighbours have near hues: mean colour alone does not tell
them apart. Each image draws its own tilt, scale, position, aspect, lighting, colour jitter and noise
from a generator seeded by (seed, class, split, image), so a tree is reproducible byte for byte and the
test images are different draws from the same distribution as the training ones. Fruits stand roughly
upright and fill most of the frame, as in Fruits-360 photos, so that outlines (a pear's neck, a
strawberry's point, an apple's stem and leaf) are cues that a network trained from scratch learns quickly
on a CPU (docs/results.md).
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fruitres.data.folders import SPLITS

MARKER_NAME = ".embedded.json"
GENERATOR_VERSION = 2  # bump whenever the drawing changes, so that trees written before are regenerated
JPEG_QUALITY = 90
MIN_IMAGE_SIZE = 16
MAX_TILT = np.deg2rad(40)  # a fruit leans at most this far from upright
SCALE_RANGE = (0.60, 0.76)  # the body's height as a fraction of the frame's
ASPECT_RANGE = (0.92, 1.08)  # narrower than the gap between round (Apple) and oval (Plum) outlines

Array = np.ndarray

# (name, hue, saturation, value); neighbours in this list have neighbouring hues or equal hue.
_COLOURS = (
    ("Red", 0.99, 0.85, 0.80),
    ("Orange", 0.07, 0.90, 0.95),
    ("Yellow", 0.14, 0.85, 0.95),
    ("Green", 0.30, 0.70, 0.65),
    ("Purple", 0.78, 0.55, 0.55),
    ("Pink", 0.92, 0.45, 0.95),
    ("Brown", 0.07, 0.70, 0.50),
    ("Lime", 0.22, 0.75, 0.85),
)
_TEXTURES = ("Smooth", "Striped", "Speckled", "Blushed")
_STEM_RGB = (0.40, 0.26, 0.12)
_LEAF_RGB = (0.20, 0.55, 0.15)


def _apple_width(v: Array) -> Array:
    """Round, a little wider at the top."""
    return np.sqrt(1 - v**2) * (0.97 - 0.08 * v)


def _plum_width(v: Array) -> Array:
    """Oval."""
    return 0.78 * np.sqrt(1 - v**2)


def _pear_width(v: Array) -> Array:
    """Narrow neck on top of a wide bottom."""
    return np.sqrt(1 - v**2) * (0.36 + 0.5 / (1 + np.exp(-(v + 0.05) / 0.18)))


def _lemon_width(v: Array) -> Array:
    """Elongated with pointed ends."""
    return 0.58 * (1 - v**2) ** 0.75


def _strawberry_width(v: Array) -> Array:
    """Heart-like: round on top, pointed at the bottom."""
    return 0.73 * (1 - v) * np.sqrt(1 + v)


@dataclass(frozen=True)
class _Shape:
    """Outline of a body in its own units (v runs from -1 at the top to 1 at the bottom) and its topping."""

    half_width: Callable[[Array], Array]
    top_dip: float  # depth of the dimple at the top, where a stem sits
    topping: str  # "", "stem", "stem_leaf" or "crown"


_SHAPES = {
    "Apple": _Shape(_apple_width, 0.12, "stem_leaf"),
    "Plum": _Shape(_plum_width, 0.0, ""),
    "Pear": _Shape(_pear_width, 0.0, "stem"),
    "Lemon": _Shape(_lemon_width, 0.0, ""),
    "Strawberry": _Shape(_strawberry_width, 0.10, "crown"),
}
_SHAPE_NAMES = tuple(_SHAPES)
MAX_CLASSES = len(_COLOURS) * len(_SHAPES) * len(_TEXTURES)


@dataclass(frozen=True)
class _ClassSpec:
    """What every image of one class shares."""

    index: int
    shape: str
    texture: str
    colour: str

    @property
    def name(self) -> str:
        """Folder name, e.g. 'Pear Speckled Green'."""
        return f"{self.shape} {self.texture} {self.colour}"


@dataclass(frozen=True)
class _Pose:
    """Where one image puts the fruit: centre and scale in image units (the frame spans -1..1)."""

    cx: float
    cy: float
    angle: float
    scale: float
    aspect: float


def _class_spec(index: int) -> _ClassSpec:
    """Class `index`: pairs of consecutive classes share a colour and differ in shape or texture.

    The (colour, shape, texture) triple is unique for every index below MAX_CLASSES; a pair with an even
    colour index differs in shape, one with an odd colour index in texture.
    """
    colour, k = (index // 2) % len(_COLOURS), index % 2 + 2 * (index // (2 * len(_COLOURS)))
    n_shapes, n_textures = len(_SHAPES), len(_TEXTURES)
    shape_step, texture_step = (k % n_shapes, k // n_shapes) if colour % 2 == 0 else divmod(k, n_textures)
    return _ClassSpec(
        index=index,
        shape=_SHAPE_NAMES[(colour + shape_step) % n_shapes],
        texture=_TEXTURES[(colour + texture_step) % n_textures],
        colour=_COLOURS[colour][0],
    )


def _class_specs(num_classes: int) -> list[_ClassSpec]:
    """The first `num_classes` classes; class i is the same whatever `num_classes` is."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be between 1 and {MAX_CLASSES}, got {num_classes}")
    return [_class_spec(i) for i in range(num_classes)]


def embedded_class_names(num_classes: int) -> list[str]:
    """The class folder names for `num_classes` classes, sorted as ImageFolder-like loaders label them."""
    return sorted(spec.name for spec in _class_specs(num_classes))


def _hsv(hue: float, saturation: float, value: float) -> Array:
    """An HSV colour (hue wrapping around) as an RGB array in 0..1."""
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, min(saturation, 1.0), min(value, 1.0)))


def _texture_colours(spec: _ClassSpec) -> tuple[Array, Array]:
    """Base colour of the skin and the colour its texture mixes in."""
    _, hue, sat, val = next(c for c in _COLOURS if c[0] == spec.colour)
    second = {
        "Smooth": (hue, sat, val),
        "Striped": (hue + 0.03, sat, val * 0.45),
        "Speckled": (hue, sat * 0.35, val * 1.1 + 0.1),
        "Blushed": (hue - 0.15, sat, val),
    }[spec.texture]
    return _hsv(hue, sat, val), _hsv(*second)


def _draw_pose(rng: np.random.Generator) -> _Pose:
    """A random placement, roughly upright, that keeps the fruit and its stem inside the frame."""
    scale = rng.uniform(*SCALE_RANGE)
    reach = max(0.0, 0.97 - 1.3 * scale)
    return _Pose(
        cx=rng.uniform(-reach, reach),
        cy=rng.uniform(-reach, reach),
        angle=rng.uniform(-MAX_TILT, MAX_TILT),
        scale=scale,
        aspect=rng.uniform(*ASPECT_RANGE),
    )


def _local_coords(size: int, pose: _Pose) -> tuple[Array, Array]:
    """Pixel centres in the fruit's own frame: u across the body, v along it (-1 top, 1 bottom)."""
    t = (np.arange(size) + 0.5) / size * 2 - 1
    dx, dy = t[None, :] - pose.cx, t[:, None] - pose.cy
    cos, sin = np.cos(pose.angle), np.sin(pose.angle)
    return (dx * cos + dy * sin) / (pose.scale * pose.aspect), (dy * cos - dx * sin) / pose.scale


def _coverage(distance: Array, pose: _Pose, size: int) -> Array:
    """Antialiased alpha from a signed distance in fruit units (positive inside)."""
    return np.clip(0.5 + distance * pose.scale * size / 2, 0.0, 1.0)


def _ellipse_distance(
    u: Array, v: Array, centre: tuple[float, float], angle: float, axes: tuple[float, float]
) -> Array:
    """Approximate signed distance to a rotated ellipse with semi-axes `axes` (positive inside)."""
    du, dv = u - centre[0], v - centre[1]
    p = (du * np.cos(angle) + dv * np.sin(angle)) / axes[0]
    q = (dv * np.cos(angle) - du * np.sin(angle)) / axes[1]
    return (1 - np.sqrt(p**2 + q**2)) * min(axes)


def _stem_distance(u: Array, v: Array, base: float) -> Array:
    """Signed distance to a short slanted stem rising from v = base."""
    start, end, radius = np.array([0.0, base]), np.array([0.07, -1.3]), 0.045
    along = end - start
    t = np.clip(((u - start[0]) * along[0] + (v - start[1]) * along[1]) / along.dot(along), 0.0, 1.0)
    return radius - np.hypot(u - start[0] - t * along[0], v - start[1] - t * along[1])


def _leaf_distance(topping: str, u: Array, v: Array) -> Array | None:
    """Signed distance to the leaf or strawberry crown of a topping, or None without one."""
    if topping == "stem_leaf":
        return _ellipse_distance(u, v, (0.22, -1.1), -0.5, (0.2, 0.075))
    if topping == "crown":
        fan = [
            _ellipse_distance(u, v, (0.2 * np.sin(a), -0.92 - 0.2 * np.cos(a)), a + np.pi / 2, (0.24, 0.07))
            for a in (-1.1, -0.4, 0.4, 1.1)
        ]
        return np.maximum.reduce(fan)
    return None


def _texture_mix(texture: str, across: Array, v: Array, rng: np.random.Generator) -> Array:
    """How much texture colour each body pixel (flat arrays) shows, 0..1; `across` runs -1..1 edge to edge."""
    if texture == "Striped":
        longitude = np.arcsin(across)
        return 0.5 + 0.5 * np.tanh(3 * np.sin(6 * longitude + rng.uniform(0, 2 * np.pi)))
    if texture == "Speckled":
        count = rng.integers(50, 90)
        dots_across = np.sin(rng.uniform(-1.5, 1.5, count))[:, None]
        dots_v = rng.uniform(-0.95, 0.95, count)[:, None]
        radii = rng.uniform(0.04, 0.08, count)[:, None]
        inside = (radii - np.sqrt((across - dots_across) ** 2 + (v - dots_v) ** 2)).max(axis=0)
        return np.clip(inside / 0.03 + 0.5, 0.0, 1.0)
    if texture == "Blushed":
        tilt = rng.normal(0.0, 0.5)
        return np.clip(0.5 + rng.uniform(-0.3, 0.3) + 0.9 * (v * np.cos(tilt) + across * np.sin(tilt)), 0, 1)
    return np.zeros_like(v)


def _shading(across: Array, v: Array, pose: _Pose, rng: np.random.Generator) -> tuple[Array, Array]:
    """Diffuse shading factor and specular highlight of body pixels of a rounded body under a random light."""
    normal = np.stack([across, v, np.sqrt(np.clip(1 - across**2 - v**2, 0.0, 1.0))])
    normal /= np.linalg.norm(normal, axis=0) + 1e-6
    direction = rng.uniform(0, 2 * np.pi) - pose.angle  # light direction seen from the fruit's frame
    light = np.array([0.6 * np.cos(direction), 0.6 * np.sin(direction), 0.8])
    half = light + np.array([0.0, 0.0, 1.0])  # halfway between the light and the viewer
    half /= np.linalg.norm(half)
    diffuse = np.clip(np.tensordot(light, normal, axes=1), 0.0, 1.0)
    specular = 0.5 * np.clip(np.tensordot(half, normal, axes=1), 0.0, 1.0) ** 40
    return 0.35 + 0.75 * diffuse, specular


def _over(image: Array, rgb: Array, alpha: Array) -> Array:
    """Paint `rgb` (a colour or a per-pixel image) over `image` with coverage `alpha`."""
    return image * (1 - alpha[..., None]) + rgb * alpha[..., None]


def _skin(
    spec: _ClassSpec, across: Array, v: Array, pose: _Pose, rng: np.random.Generator, tint: Array
) -> Array:
    """Colours of body pixels (flat arrays): base and texture colour, shaded, lit and tinted."""
    base, second = _texture_colours(spec)
    mix = _texture_mix(spec.texture, across, v, rng)[:, None]
    diffuse, specular = _shading(across, v, pose, rng)
    return ((1 - mix) * base + mix * second) * tint * diffuse[:, None] + specular[:, None]


def _render(spec: _ClassSpec, size: int, rng: np.random.Generator) -> Array:
    """One image of a class as uint8 RGB, all its variation drawn from `rng`."""
    shape = _SHAPES[spec.shape]
    pose = _draw_pose(rng)
    tint = (1 + rng.normal(0.0, 0.05, 3)) * rng.uniform(0.7, 1.15)  # colour jitter and brightness
    u, v = _local_coords(size, pose)
    width = shape.half_width(np.clip(v, -1.0, 1.0))
    top = -1 + shape.top_dip * np.exp(-((u / 0.22) ** 2))
    body_alpha = _coverage(np.minimum(width - np.abs(u), np.minimum(v - top, 1 - v)), pose, size)

    body = body_alpha > 0
    across = np.clip(u[body] / np.maximum(width[body], 1e-3), -1.0, 1.0)
    image = np.ones((size, size, 3))
    skin = _skin(spec, across, np.clip(v[body], -1.0, 1.0), pose, rng, tint)
    image[body] = _over(image[body], skin, body_alpha[body])
    leaf = _leaf_distance(shape.topping, u, v)
    if leaf is not None:
        image = _over(image, np.array(_LEAF_RGB) * tint, _coverage(leaf, pose, size))
    if shape.topping.startswith("stem"):
        stem = _stem_distance(u, v, -1 + shape.top_dip + 0.05)
        image = _over(image, np.array(_STEM_RGB) * tint, _coverage(stem, pose, size))
    image += rng.normal(0.0, 0.012, image.shape)
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _parameters(
    num_classes: int, train_per_class: int, test_per_class: int, image_size: int, seed: int
) -> dict[str, int]:
    """The checked generation parameters, as recorded in the marker file."""
    _class_specs(num_classes)
    if min(train_per_class, test_per_class) < 1:
        raise ValueError(
            f"need at least one image per class and split, got {train_per_class}/{test_per_class}"
        )
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return {
        "generator_version": GENERATOR_VERSION,
        "num_classes": num_classes,
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "image_size": image_size,
        "seed": seed,
    }


def _split_counts(params: dict[str, int]) -> dict[str, int]:
    """Images per class for each split folder."""
    return dict(zip(SPLITS, (params["train_per_class"], params["test_per_class"]), strict=True))


def _is_complete(root: Path, params: dict[str, int]) -> bool:
    """Whether root holds a whole tree written with exactly these parameters."""
    try:
        if json.loads((root / MARKER_NAME).read_text()) != params:
            return False
        return all(
            sum(name.endswith(".jpg") for name in os.listdir(root / split / spec.name)) == count
            for split, count in _split_counts(params).items()
            for spec in _class_specs(params["num_classes"])
        )
    except (OSError, ValueError):
        return False


def _check_replaceable(root: Path) -> None:
    """Refuse to replace anything but a missing or empty folder or a tree this module wrote."""
    if not root.exists() or (root / MARKER_NAME).is_file() or (root.is_dir() and not any(root.iterdir())):
        return
    raise FileExistsError(
        f"{root} exists and was not written by write_embedded_dataset (it has no {MARKER_NAME}); "
        "point data.embedded_dir elsewhere or delete it"
    )


def _sibling(root: Path, purpose: str) -> Path:
    """A unique hidden path next to root, for a tree being written or discarded."""
    return root.parent / f".{root.name}.{purpose}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _write_tree(folder: Path, params: dict[str, int]) -> None:
    """Write every image, then the marker, into a fresh folder."""
    for split_index, (split, count) in enumerate(_split_counts(params).items()):
        for spec in _class_specs(params["num_classes"]):
            class_dir = folder / split / spec.name
            class_dir.mkdir(parents=True)
            for index in range(count):
                rng = np.random.default_rng([params["seed"], spec.index, split_index, index])
                pixels = _render(spec, params["image_size"], rng)
                Image.fromarray(pixels).save(class_dir / f"{index:04d}.jpg", quality=JPEG_QUALITY)
    (folder / MARKER_NAME).write_text(json.dumps(params, indent=2) + "\n")


def _move_into_place(staging: Path, root: Path, params: dict[str, int], attempts: int = 5) -> None:
    """Rename a finished tree to root, replacing a stale one; a rival's equal finished tree also does."""
    for _ in range(attempts):
        try:
            os.rename(staging, root)  # atomic; succeeds where root is missing or an empty folder
            return
        except OSError:
            if _is_complete(root, params):
                return  # another process (say another DDP rank) got there first
        _check_replaceable(root)
        discarded = _sibling(root, "old")
        try:
            os.rename(root, discarded)
        except FileNotFoundError:
            continue  # another process moved it away already
        shutil.rmtree(discarded, ignore_errors=True)
    raise OSError(f"could not move the embedded dataset {staging} to {root}")


def write_embedded_dataset(
    root: str | Path,
    num_classes: int = 10,
    train_per_class: int = 60,
    test_per_class: int = 20,
    image_size: int = 100,
    seed: int = 0,
) -> Path:
    """Write (once) a Fruits-360-shaped tree under root and return root.

    Idempotent: a complete tree written with the same parameters (recorded in ``root/.embedded.json``)
    is kept as it is; an incomplete or different one is regenerated. The tree is written into a hidden
    sibling folder and renamed into place, so a killed process never leaves a half tree that looks complete
    and processes racing to write it (e.g. DDP ranks) all end with a valid one. A folder that this function
    did not write is never replaced: that raises FileExistsError.
    """
    root = Path(root)
    params = _parameters(num_classes, train_per_class, test_per_class, image_size, seed)
    if _is_complete(root, params):
        return root
    _check_replaceable(root)
    staging = _sibling(root, "tmp")
    staging.mkdir(parents=True)
    try:
        _write_tree(staging, params)
        _move_into_place(staging, root, params)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
