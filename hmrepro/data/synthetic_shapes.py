"""Drawing for the synthetic benchmark: class looks, shape polygons, textures, backgrounds and scenes.

A class is a :class:`Look` (shape, colour, texture), so a model can in principle tell classes apart. Every
object is a polygon in pixel coordinates (x, y), rounded to 0.01 px so that the polygon written to a COCO
JSON file is exactly the one drawn. Masks are rasterised with pycocotools, the rasteriser COCO users
apply to such polygons; images paint objects with an anti-aliased coverage of the same polygon.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

SHAPES = ("disc", "square", "triangle", "ring", "cross", "star", "hexagon", "diamond", "ellipse", "arrow")
COLOURS = {
    "red": (205, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 80, 215),
    "yellow": (230, 205, 40),
    "magenta": (200, 50, 190),
    "cyan": (40, 200, 210),
    "orange": (240, 125, 25),
    "white": (240, 240, 240),
}
TEXTURES = ("flat", "stripes", "checker", "speckle")
NUM_LOOKS = len(SHAPES) * len(COLOURS)  # 80: every class of the COCO-like benchmark has its own look

IMAGE_SIZES = ((64, 64), (64, 80), (80, 64), (72, 96), (96, 72), (80, 80), (96, 96))  # (height, width)
SMALL_AREA = (0.02, 0.06)  # fraction of the image a small object covers (HM's claimed strength)
LARGE_AREA = (0.12, 0.30)
SUPERSAMPLING = 4  # sub-pixels per pixel side for anti-aliased painting


@dataclass(frozen=True)
class Look:
    """What every object of one class looks like."""

    shape: str
    colour: str
    texture: str

    @property
    def name(self) -> str:
        return f"{self.colour}_{self.texture}_{self.shape}"


def class_look(index: int) -> Look:
    """The look of class ``index`` (0..79); no two indices share a (shape, colour) pair."""
    if not 0 <= index < NUM_LOOKS:
        raise ValueError(f"class index {index} outside 0..{NUM_LOOKS - 1}")
    row, col = divmod(index, len(SHAPES))
    colours = list(COLOURS)
    return Look(
        shape=SHAPES[col],
        colour=colours[(row + col) % len(colours)],
        texture=TEXTURES[(3 * row + col) % len(TEXTURES)],
    )


# -- polygons ------------------------------------------------------------------------------------


def _arc(radius_x: float, radius_y: float, start: float, stop: float, n: int) -> np.ndarray:
    angles = np.linspace(start, stop, n)
    return np.stack([radius_x * np.cos(angles), radius_y * np.sin(angles)], axis=1)


def _regular(n: int, offset: float = 0.0) -> np.ndarray:
    return _arc(1.0, 1.0, offset, offset + 2 * np.pi, n + 1)[:-1]


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = np.arange(2 * points) * np.pi / points - np.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _ring(inner: float = 0.55, gap: float = 0.35) -> np.ndarray:
    """An annulus with a thin cut, so that it is one simple polygon (outer arc, then inner arc back)."""
    outer = _arc(1.0, 1.0, gap / 2, 2 * np.pi - gap / 2, 40)
    return np.concatenate([outer, outer[::-1] * inner])


def _cross(arm: float = 0.33) -> np.ndarray:
    quarter = np.array([(arm, 1), (arm, arm), (1, arm)])  # one arm's edge and the corner beside it
    return np.concatenate([_rotate(quarter, -k * np.pi / 2) for k in range(4)])


def _arrow() -> np.ndarray:
    return np.array([(-1, -0.25), (0.1, -0.25), (0.1, -0.65), (1, 0), (0.1, 0.65), (0.1, 0.25), (-1, 0.25)])


_UNIT_SHAPES: dict[str, Callable[[], np.ndarray]] = {
    "disc": lambda: _regular(32),
    "square": lambda: _regular(4, np.pi / 4),
    "triangle": lambda: _regular(3, -np.pi / 2),
    "ring": _ring,
    "cross": _cross,
    "star": _star,
    "hexagon": lambda: _regular(6),
    "diamond": lambda: _regular(4) * [0.6, 1.0],
    "ellipse": lambda: _regular(32) * [1.0, 0.55],
    "arrow": _arrow,
}


def unit_polygon(shape: str) -> np.ndarray:
    """Vertices (N, 2) of ``shape`` centred on the origin with radius about 1."""
    return np.asarray(_UNIT_SHAPES[shape](), dtype=np.float64)


def polygon_area(polygon: np.ndarray) -> float:
    """Area enclosed by a simple polygon (shoelace formula)."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _rotate(polygon: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return polygon @ np.array([[c, s], [-s, c]])


def place_polygon(rng: np.random.Generator, shape: str, height: int, width: int, small: bool) -> np.ndarray:
    """``shape`` at a random pose, scaled to a small or large share of the image and fully inside it."""
    aspect = rng.uniform(0.85, 1.15)
    outline = _rotate(unit_polygon(shape) * [aspect, 1 / aspect], rng.uniform(0, 2 * np.pi))
    share = rng.uniform(*(SMALL_AREA if small else LARGE_AREA))
    outline = outline * np.sqrt(share * height * width / polygon_area(outline))
    extent = outline.max(axis=0) - outline.min(axis=0)
    outline = outline * min(1.0, (width - 3) / extent[0], (height - 3) / extent[1])
    low = 1 - outline.min(axis=0)  # keep a one-pixel margin, so that rounding never leaves the image
    high = np.maximum(np.array([width - 1, height - 1]) - outline.max(axis=0), low)
    return np.round(outline + rng.uniform(low, high), 2)


# -- rasterising ---------------------------------------------------------------------------------


def polygon_rle(polygon: np.ndarray, height: int, width: int) -> dict:
    """The COCO RLE of ``polygon`` exactly as pycocotools' ``annToRLE`` makes it from a JSON polygon."""
    return mask_utils.merge(mask_utils.frPyObjects([polygon.ravel().tolist()], height, width))


def _decode(rle: dict) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools < 2.0.9 trips a NumPy 2 DeprecationWarning on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean mask (H, W) of ``polygon`` as pycocotools' ``annToMask`` draws it."""
    return _decode(polygon_rle(polygon, height, width)).astype(bool)


def polygon_coverage(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fraction (H, W) of each pixel that ``polygon`` covers, from a supersampled rasterisation."""
    s = SUPERSAMPLING
    fine = _decode(polygon_rle(polygon * s, height * s, width * s)).astype(np.uint16)
    columns = sum(fine[:, i::s] for i in range(s))  # block sums by strided adds: exact, and fast on pycocotools'
    return sum(columns[i::s] for i in range(s)) / (s * s)  # Fortran-ordered output


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (as crowd annotations store it): run lengths in column-major order, zeros first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _shift_all(mask: np.ndarray, combine: Callable) -> np.ndarray:
    padded = np.pad(mask, 1, mode="edge")
    h, w = mask.shape
    out = mask.copy()
    for dy in range(3):
        for dx in range(3):
            out = combine(out, padded[dy : dy + h, dx : dx + w])
    return out


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation."""
    return _shift_all(mask, np.logical_or)


def erode(mask: np.ndarray) -> np.ndarray:
    """3x3 binary erosion."""
    return _shift_all(mask, np.logical_and)


# -- painting ------------------------------------------------------------------------------------


def _lerp_axis(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` (cells + 1 samples along ``axis``) onto ``size`` evenly spaced pixels."""
    cells = values.shape[axis] - 1
    position = np.linspace(0, cells, size)
    left = np.minimum(position.astype(int), cells - 1)
    shape = [1] * values.ndim
    shape[axis] = size
    weight = (position - left).reshape(shape)
    return np.take(values, left, axis=axis) * (1 - weight) + np.take(values, left + 1, axis=axis) * weight


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise (H, W, 3): a coarse Gaussian grid, bilinearly interpolated (elementwise, so exact)."""
    grid = rng.normal(size=(cells + 1, cells + 1, 3))
    return _lerp_axis(_lerp_axis(grid, height, axis=0), width, axis=1)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted, blotchy, grainy background (H, W, 3) in 0..255 floats, sometimes with faint stripes."""
    tint = rng.uniform(70, 170) + rng.uniform(-25, 25, size=3)
    image = tint + 35 * _smooth_noise(rng, height, width, cells=int(rng.integers(2, 6)))
    if rng.random() < 0.4:
        image = image + 12 * _pattern(rng, "stripes", height, width)[..., None]
    return image + rng.normal(0, 9, size=(height, width, 3))


def _pattern(rng: np.random.Generator, texture: str, height: int, width: int) -> np.ndarray:
    """A texture in 0..1 (H, W) with a random phase, period and orientation."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    if texture == "flat":
        return np.ones((height, width))
    if texture == "stripes":
        angle = rng.uniform(0, np.pi)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(4, 7) + rng.uniform(0, 1)
        return (np.sin(2 * np.pi * phase) > 0).astype(np.float64)
    if texture == "checker":
        cell = int(rng.integers(3, 6))
        oy, ox = rng.integers(0, cell, size=2)
        return (((yy + oy) // cell + (xx + ox) // cell) % 2).astype(np.float64)
    if texture == "speckle":
        return rng.uniform(0, 1, size=(height, width))
    raise ValueError(f"unknown texture {texture!r}")


def object_pixels(rng: np.random.Generator, look: Look, height: int, width: int) -> np.ndarray:
    """The textured colour (H, W, 3) of an object of ``look``, with a little per-instance colour jitter."""
    colour = np.array(COLOURS[look.colour], dtype=np.float64) + rng.uniform(-20, 20, size=3)
    shade = 0.55 + 0.45 * _pattern(rng, look.texture, height, width)
    return colour * shade[..., None]


def paint(image: np.ndarray, pixels: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """``pixels`` composited over ``image`` with per-pixel opacity ``coverage``."""
    alpha = coverage[..., None]
    return image * (1 - alpha) + pixels * alpha


def to_uint8(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Add sensor grain and quantise to an 8-bit RGB array."""
    return np.clip(np.rint(image + rng.normal(0, 4, size=image.shape)), 0, 255).astype(np.uint8)


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) of a new image: small, and not always square."""
    return IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]


# -- scenes --------------------------------------------------------------------------------------


@dataclass
class SceneObject:
    """One annotated object: its class (0-based), its polygon and its hard mask."""

    class_index: int
    look: Look
    polygon: np.ndarray
    mask: np.ndarray


def render(rng: np.random.Generator, height: int, width: int, layers: Sequence[tuple[Look, np.ndarray]]) -> np.ndarray:
    """An 8-bit RGB image: background, then each (look, polygon) painted anti-aliased in order."""
    image = background(rng, height, width)
    for look, polygon in layers:
        image = paint(image, object_pixels(rng, look, height, width), polygon_coverage(polygon, height, width))
    return to_uint8(rng, image)


def paint_labels(objects: Sequence[SceneObject], height: int, width: int) -> np.ndarray:
    """uint8 label map: 0 background, ``class_index + 1`` for each object, later objects on top."""
    labels = np.zeros((height, width), dtype=np.uint8)
    for obj in objects:
        labels[obj.mask] = obj.class_index + 1
    return labels


def sample_objects(
    rng: np.random.Generator,
    height: int,
    width: int,
    class_indices: Sequence[int],
    label_map: Callable[[Sequence[SceneObject], int, int], np.ndarray],
    min_visible: float = 0.4,
    max_tries: int = 200,
) -> tuple[list[SceneObject], np.ndarray]:
    """Objects of ``class_indices`` (first one large or small, others mostly small), re-placed until each keeps at
    least ``min_visible`` of its pixels in ``label_map(objects, h, w)``; returns the objects and that label map."""
    for _ in range(max_tries):
        objects = []
        for i, class_index in enumerate(class_indices):
            look = class_look(class_index)
            small = rng.random() < (0.35 if i == 0 else 0.6)
            polygon = place_polygon(rng, look.shape, height, width, small)
            objects.append(SceneObject(class_index, look, polygon, polygon_mask(polygon, height, width)))
        labels = label_map(objects, height, width)
        if all(_visible_share(labels, obj) >= min_visible for obj in objects):
            return objects, labels
    raise RuntimeError(f"could not place classes {list(class_indices)} visibly in a {height}x{width} image")


def _visible_share(labels: np.ndarray, obj: SceneObject) -> float:
    area = int(obj.mask.sum())
    return float((labels == obj.class_index + 1).sum()) / area if area else 0.0
