"""``image_metadata``: measurements of every image that a person can reason with.

For single-channel images (digits, letters, glyphs) the Morpho-MNIST measures
(Castro et al. 2019, "Morpho-MNIST: quantitative assessment and diagnostics
for representation learning", repository dccastro/Morpho-MNIST,
``morphomnist/measure.py`` and ``morpho.py``), following their definitions:

- the image is binarised at half-way between its own minimum and maximum;
- ``ink_area``: the number of ink pixels;
- ``stroke_length``: the length of the skeleton, each skeleton pixel linked to
  its right and lower neighbours by 1 and to its lower diagonal ones by sqrt(2)
  (their ``_SKEL_LEN_MASK``);
- ``stroke_thickness``: 2 x the mean Euclidean distance transform on the
  skeleton pixels (the stroke's mean width);
- ``slant``: ``atan(-u11 / u02)`` of the grey image's central moments, in
  degrees; **positive = the top leans right** (rows grow downwards);
- ``glyph_width`` / ``glyph_height``: the sides of their bounding
  *parallelogram*, i.e. the box of the slant-corrected glyph (the width is
  measured along rows sheared by the slant), each side dropping 1% of the ink
  mass (their ``bound_frac=0.02``, two-sided).

Two differences, for speed (10,000 digits in about three seconds on one core): the step's
measures are taken at twice the native resolution (``scale=2``, 4x fewer pixels
than Morpho-MNIST's 4x upsampling with a cubic pyramid; here a cubic spline,
``scipy.ndimage.zoom`` written as two matrix products), and the skeleton is
skimage's ``skeletonize`` (Zhang's thinning) rather than ``medial_axis`` (10x
slower; the same distance map as ``scipy.ndimage.distance_transform_edt``, from
the ``edt`` package). At the
native resolution
(``scale=1``) a thickness is quantised to whole and diagonal pixel steps and
follows what a model sees less closely: on the planted-slice evaluation
(tests/analysis/test_insights_eval.py) the thinnest 7s by native thickness were
a noisier group, whose errors faintness described better than thickness.
Every batch of images is tiled into one mosaic separated by background, so
skimage and scipy run once per batch.

Also, for single-channel images: ``holes`` (background regions, 4-connected,
enclosed by ink), ``components`` (8-connected ink regions; components - holes
is skimage's Euler number), ``ink_offset_x``/``_y`` (the ink's centre of mass
minus the image centre, px; positive = right / down). When a dataset's
borders are bright (dark ink on paper) the ink is the dark part.

For every image: ``brightness`` (mean grey level, 0-1; grey is the Rec. 601
luma of a colour image), ``contrast`` (standard deviation of the grey levels),
``sharpness`` (variance of skimage's Laplacian of the grey image). For colour
(3-channel) images: ``mean_red``/``mean_green``/``mean_blue`` and
``colourfulness`` (Hasler & Suesstrunk 2003, "Measuring colourfulness in natural
images", M = sigma_rgyb + 0.3 mu_rgyb on the 0-255 scale of the paper: 0 grey,
about 15 slightly, 33 moderately, 59 quite, 109 extremely colourful).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from analysis.executor import BatchJob
from analysis.registry import Column, Step, StepContext, register
from cache import Artifact
from core.errors import ConfigError

log = logging.getLogger(__name__)

# Morpho-MNIST's skeleton length mask: right and lower neighbours 1, lower diagonals sqrt(2).
SKEL_LEN_MASK = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [np.sqrt(2.0), 1.0, np.sqrt(2.0)]])
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601
# skimage.filters.laplace's kernel
LAPLACE = np.array([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
MOSAIC_PIXELS = 4_000_000  # pixels per mosaic: bounds memory on large images

GLYPH_COLUMNS = ("ink_area", "stroke_length", "stroke_thickness", "slant", "glyph_width",
                 "glyph_height", "holes", "components", "ink_offset_x", "ink_offset_y")
COLOUR_COLUMNS = ("mean_red", "mean_green", "mean_blue", "colourfulness")


def _col(name: str, unit: str, description: str, when: str = "") -> Column:
    return Column(name, "numeric", unit=unit, description=description, interpretable=True,
                  when=when)


DECLARED = (
    _col("ink_area", "px", "Number of ink pixels (the image binarised half-way between its "
         "darkest and brightest pixel)."),
    _col("stroke_length", "px", "Length of the ink's skeleton: how much pen travel the glyph "
         "takes."),
    _col("stroke_thickness", "px", "Mean width of the strokes: twice the mean distance from the "
         "skeleton to the ink's edge."),
    _col("slant", "degrees", "Lean of the glyph from its image moments' shear; positive leans "
         "right (top to the right), negative left."),
    _col("glyph_width", "px", "Width of the slant-corrected glyph (its bounding parallelogram, "
         "1% of the ink dropped on each side)."),
    _col("glyph_height", "px", "Height of the glyph's bounding box (1% of the ink dropped at "
         "the top and at the bottom)."),
    _col("holes", "count", "Background regions enclosed by ink (0 has one, 8 has two)."),
    _col("components", "count", "Separate pieces of ink (a broken stroke or a speck adds one)."),
    _col("ink_offset_x", "px", "Horizontal offset of the ink's centre of mass from the image "
         "centre; positive = right."),
    _col("ink_offset_y", "px", "Vertical offset of the ink's centre of mass from the image "
         "centre; positive = down."),
    _col("brightness", "0-1", "Mean grey level of the image (0 black, 1 white)."),
    _col("contrast", "0-1", "Standard deviation of the grey levels (RMS contrast)."),
    _col("sharpness", "grey levels²", "Variance of the Laplacian of the grey image: low = blurry "
         "or flat."),
    _col("mean_red", "0-1", "Mean of the red channel.", when="colour images"),
    _col("mean_green", "0-1", "Mean of the green channel.", when="colour images"),
    _col("mean_blue", "0-1", "Mean of the blue channel.", when="colour images"),
    _col("colourfulness", "Hasler-Süsstrunk M, 0-255 scale", "How colourful the image is: 0 "
         "grey, about 15 slightly, 33 moderately, 59 quite, 109 extremely colourful.",
         when="colour images"),
)
DECLARED = tuple(replace(c, when="one-channel (grey) images") if c.name in GLYPH_COLUMNS else c
                 for c in DECLARED)


# -- whole-image measures --------------------------------------------------------------------
def grey_levels(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` float32 grey levels in [0, 1] of ``(N, C, H, W)`` uint8 or [0, 1] images.

    One channel as is, three by their Rec. 601 luma, any other number by their mean.
    """
    x = _unit(images)
    if x.shape[1] == 1:
        return x[:, 0]
    if x.shape[1] == 3:
        return np.einsum("nchw,c->nhw", x, LUMA)
    return x.mean(1)


def _unit(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32, copy=False)


def laplacian_variance(grey: np.ndarray) -> np.ndarray:
    """``(N,)`` variance of each ``(N, H, W)`` image's Laplacian, as ``skimage.filters.laplace``
    computes it (3x3 kernel, reflected edges)."""
    lap = ndimage.convolve(grey.astype(np.float64), LAPLACE[None], mode="reflect")
    return lap.reshape(len(grey), -1).var(1).astype(np.float32)


def colourfulness(images: np.ndarray) -> np.ndarray:
    """``(N,)`` Hasler & Suesstrunk colourfulness of ``(N, 3, H, W)`` images, 0-255 scale."""
    x = _unit(images).astype(np.float64) * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg = (r - g).reshape(len(x), -1)
    yb = (0.5 * (r + g) - b).reshape(len(x), -1)
    sigma = np.sqrt(rg.var(1) + yb.var(1))
    mu = np.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return (sigma + 0.3 * mu).astype(np.float32)


def photo_measures(images: np.ndarray) -> dict[str, np.ndarray]:
    """Brightness, contrast, sharpness and, for 3 channels, colour means and colourfulness."""
    grey = grey_levels(images)
    flat = grey.reshape(len(grey), -1)
    out = {"brightness": flat.mean(1), "contrast": flat.std(1),
           "sharpness": laplacian_variance(grey)}
    if images.shape[1] == 3:
        means = _unit(images).reshape(len(images), 3, -1).mean(2)
        out.update(mean_red=means[:, 0], mean_green=means[:, 1], mean_blue=means[:, 2],
                   colourfulness=colourfulness(images))
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


# -- glyph measures ---------------------------------------------------------------------------
def mosaic(images: np.ndarray) -> np.ndarray:
    """Tile ``(N, H, W)`` images into one 2-D array, each preceded by one background row and
    column and the whole closed by one more, so no image touches another."""
    n, h, w = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    full = np.zeros((rows * cols, h, w), images.dtype)
    full[:n] = images
    tiles = np.zeros((rows, h + 1, cols, w + 1), images.dtype)
    tiles[:, 1:, :, 1:] = full.reshape(rows, cols, h, w).transpose(0, 2, 1, 3)
    return np.pad(tiles.reshape(rows * (h + 1), cols * (w + 1)), ((0, 1), (0, 1)))


def unmosaic(m: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    """The ``(N, H + 1, W + 1)`` tiles of a :func:`mosaic` (leading background row and column
    kept)."""
    rows = (m.shape[0] - 1) // (h + 1)
    cols = (m.shape[1] - 1) // (w + 1)
    tiles = m[:-1, :-1].reshape(rows, h + 1, cols, w + 1).transpose(0, 2, 1, 3)
    return tiles.reshape(rows * cols, h + 1, w + 1)[:n]


def _regions_per_tile(labels: np.ndarray, n: int, h: int, w: int,
                      skip: int = 0) -> np.ndarray:
    """``(N,)`` number of labelled regions of a :func:`mosaic` of ``(h, w)`` tiles lying in each
    tile (label ``skip`` not counted). A region's bounding box starts inside its tile."""
    cols = (labels.shape[1] - 1) // (w + 1)
    starts = np.array([(s[0].start, s[1].start) if s is not None else (-1, -1)
                       for s in ndimage.find_objects(labels)], dtype=np.int64).reshape(-1, 2)
    keep = starts[:, 0] >= 0
    if skip:
        keep[skip - 1] = False
    tile = (starts[keep, 0] // (h + 1)) * cols + starts[keep, 1] // (w + 1)
    return np.bincount(tile, minlength=n)[:n].astype(np.int64)


def moments(ink: np.ndarray) -> dict[str, np.ndarray]:
    """Mass, centroid and second central moments of ``(N, H, W)`` grey images (rows = y)."""
    n, h, w = ink.shape
    x = np.arange(w, dtype=np.float64)
    y = np.arange(h, dtype=np.float64)
    img = ink.astype(np.float64)
    m00 = img.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        col = img.sum(1)  # (N, W) mass per column
        row = img.sum(2)  # (N, H)
        m10 = col @ x / m00
        m01 = row @ y / m00
        m20 = col @ (x * x) / m00
        m02 = row @ (y * y) / m00
        m11 = np.einsum("nhw,h,w->n", img, y, x) / m00
    return {"m00": m00, "x": m10, "y": m01, "u20": m20 - m10 ** 2, "u02": m02 - m01 ** 2,
            "u11": m11 - m10 * m01}


def _interp_rows(q: float, cdf: np.ndarray, loc: np.ndarray) -> np.ndarray:
    """``np.interp(q, cdf[i], loc)`` for every row of a non-decreasing ``(N, L)`` ``cdf``."""
    n, length = cdf.shape
    j = (cdf <= q).sum(1) - 1
    jj = np.clip(j, 0, length - 2)
    rows = np.arange(n)
    c0, c1 = cdf[rows, jj], cdf[rows, jj + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(c1 > c0, (q - c0) / (c1 - c0), 0.0)
    out = loc[jj] + t * (loc[jj + 1] - loc[jj])
    out = np.where(j < 0, loc[0], out)
    return np.where(j >= length - 1, loc[-1], out)


def bounding_parallelogram(ink: np.ndarray, shear: np.ndarray, middle: np.ndarray,
                           frac: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` width and height of Morpho-MNIST's bounding parallelogram of ``(N, H, W)``
    grey images with horizontal ``shear`` (``u11 / u02``) about row ``middle``.

    Their ``_horz_cdf``: the mass with ``x + 0.5 < t + shear (y - middle)`` for each
    integer ``t``; their ``_vert_cdf``: the mass in rows above ``t``; each side
    drops ``frac / 2`` of the mass.
    """
    n, h, w = ink.shape
    img = ink.astype(np.float64)
    total = img.sum((1, 2))
    y = np.arange(h, dtype=np.float64)
    x = np.arange(w, dtype=np.float64)
    # x + 0.5 - shear (y - middle) < t  <=>  t >= floor(that) + 1: the first t that counts it.
    sheared = x[None, None, :] + 0.5 - (shear[:, None, None] * (y[None, :, None]
                                                                 - middle[:, None, None]))
    first_t = np.clip(np.floor(sheared) + 1, 0, w).astype(np.int64)
    slots = (np.arange(n)[:, None, None] * (w + 1) + first_t).ravel()
    hist = np.bincount(slots, weights=img.ravel(), minlength=n * (w + 1)).reshape(n, w + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        hcdf = np.cumsum(hist, 1)[:, :w] / total[:, None]
        vcdf = np.concatenate([np.zeros((n, 1)), np.cumsum(img.sum(2), 1)[:, :h - 1]],
                              1) / total[:, None]
    half = frac / 2
    left, right = _interp_rows(half, hcdf, x), _interp_rows(1 - half, hcdf, x)
    top, bottom = _interp_rows(half, vcdf, y), _interp_rows(1 - half, vcdf, y)
    return right - left, bottom - top


def binarise(ink: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``(N, H, W)`` bool: pixels at least ``threshold`` of the way from each image's minimum to
    its maximum (Morpho-MNIST's rule); an image of one grey level has no ink."""
    flat = ink.reshape(len(ink), -1)
    lo, hi = flat.min(1), flat.max(1)
    cut = lo + (hi - lo) * threshold
    return (ink >= cut[:, None, None]) & (hi > lo)[:, None, None]


@functools.lru_cache(maxsize=8)
def zoom_matrix(n: int, scale: int) -> np.ndarray:
    """``(n * scale, n)`` float32: ``ndimage.zoom(v, scale, order=3, grid_mode=True,
    mode="grid-constant")`` of a length-``n`` vector ``v`` is ``matrix @ v`` (the zoom is
    linear; its columns are the zooms of the unit vectors)."""
    eye = np.eye(n)
    return np.stack([ndimage.zoom(eye[i], scale, order=3, grid_mode=True, mode="grid-constant")
                     for i in range(n)], 1).astype(np.float32)


def upsample(ink: np.ndarray, scale: int) -> np.ndarray:
    """``(N, H * scale, W * scale)`` cubic-spline upsampling of each image (scale 1: as is).

    The same numbers as ``ndimage.zoom(image, scale, order=3, grid_mode=True,
    mode="grid-constant")`` (separable: rows then columns, each a matrix product),
    50x faster than a zoom per image.
    """
    if scale == 1:
        return ink
    rows = zoom_matrix(ink.shape[1], scale)
    cols = zoom_matrix(ink.shape[2], scale)
    return np.matmul(np.matmul(rows, ink.astype(np.float32)), cols.T)


def distance_to_background(binary: np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 Euclidean distance of each True pixel of a 2-D ``binary`` to the
    nearest False one (0 on False pixels), as ``ndimage.distance_transform_edt`` gives it.

    The squared distances come from seung-lab's ``edt`` (6x faster than scipy's feature
    transform: 0.11 s against 0.66 s for a mosaic of 2,048 digits at scale 2); they are
    whole numbers, exact in float32, so the square roots equal scipy's bit for bit
    (tests/analysis/steps/test_image_metadata.py).
    """
    import edt

    return np.sqrt(edt.edtsq(np.ascontiguousarray(binary), black_border=False,
                             parallel=1).astype(np.float64))


def skeleton_length(skel: np.ndarray) -> np.ndarray:
    """``(N,)`` float64 length of ``(N, H, W)`` boolean skeletons: each pair of
    neighbouring skeleton pixels counted once, 1 apart along a row or column,
    sqrt(2) diagonally. The same as Morpho-MNIST's correlation with
    ``SKEL_LEN_MASK`` summed over the skeleton, by pairs of shifted views instead of a
    float64 convolution of the whole mosaic (about 5x faster).
    """
    def pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.logical_and(a, b).sum((1, 2), dtype=np.int64)

    straight = pairs(skel[:, :, :-1], skel[:, :, 1:]) + pairs(skel[:, :-1], skel[:, 1:])
    diagonal = pairs(skel[:, :-1, :-1], skel[:, 1:, 1:]) + pairs(skel[:, :-1, 1:], skel[:, 1:, :-1])
    return straight + np.sqrt(2.0) * diagonal


def glyph_measures(ink: np.ndarray, scale: int = 1, threshold: float = 0.5,
                   bound_frac: float = 0.02) -> dict[str, np.ndarray]:
    """Morpho-MNIST measures, holes, components and ink offset of ``(N, H, W)`` grey images
    whose ink is bright (see the module docstring). Lengths are in original pixels."""
    from skimage.morphology import skeletonize

    n, h, w = ink.shape
    m = moments(ink)
    with np.errstate(invalid="ignore", divide="ignore"):
        shear = m["u11"] / m["u02"]
    width, height = bounding_parallelogram(ink, np.nan_to_num(shear), np.nan_to_num(m["y"]),
                                           bound_frac)
    hires = upsample(ink, scale)
    hh, ww = hires.shape[1:]
    binary = binarise(hires, threshold)
    mos = mosaic(binary)
    skel = skeletonize(mos)
    dist = distance_to_background(mos)
    tiles = unmosaic(skel, n, hh, ww)
    tiles_skel = tiles.reshape(n, -1)
    tiles_dist = unmosaic(dist, n, hh, ww).reshape(n, -1)
    n_skel = tiles_skel.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        thickness = 2.0 * (tiles_dist * tiles_skel).sum(1) / n_skel / scale
    length = skeleton_length(tiles) / scale
    # Components: 8-connected ink; holes: 4-connected background not joined to the border.
    ink_lab, _ = ndimage.label(mos, structure=np.ones((3, 3), bool))
    bg_lab, _ = ndimage.label(~mos)
    components = _regions_per_tile(ink_lab, n, hh, ww)
    holes = _regions_per_tile(bg_lab, n, hh, ww, skip=int(bg_lab[0, 0]))
    has_ink = binary.reshape(n, -1).any(1)
    nan = np.float64("nan")
    return {k: np.asarray(v, np.float32 if k not in ("holes", "components") else np.int64)
            for k, v in {
                "ink_area": binary.reshape(n, -1).sum(1) / scale ** 2,
                "stroke_length": length,
                "stroke_thickness": np.where(n_skel > 0, thickness, nan),
                "slant": np.where(has_ink, np.degrees(np.arctan(-shear)), nan),
                "glyph_width": np.where(has_ink, width, nan),
                "glyph_height": np.where(has_ink, height, nan),
                "holes": holes,
                "components": components,
                "ink_offset_x": np.where(has_ink, m["x"] - (w - 1) / 2, nan),
                "ink_offset_y": np.where(has_ink, m["y"] - (h - 1) / 2, nan),
            }.items()}


def ink_is_dark(grey: np.ndarray) -> bool:
    """Whether ``(N, H, W)`` images are dark ink on a bright ground: the median image's
    one-pixel border is brighter than mid-grey."""
    border = np.concatenate([grey[:, 0, :], grey[:, -1, :], grey[:, :, 0], grey[:, :, -1]], 1)
    return bool(np.median(border.mean(1)) > 0.5)


def measure_images(images: np.ndarray, scale: int = 1, threshold: float = 0.5,
                   bound_frac: float = 0.02, dark_ink: bool | None = None
                   ) -> dict[str, np.ndarray]:
    """Every measurement of ``(N, C, H, W)`` images (uint8, or float in [0, 1]).

    Parameters
    ----------
    images : (N, C, H, W) array
    scale : int
        Upsampling before the glyph measures (Morpho-MNIST uses 4).
    threshold : float
        Binarisation point between each image's minimum and maximum.
    bound_frac : float
        Ink mass dropped (both sides together) by the bounding parallelogram.
    dark_ink : bool, optional
        Whether the ink is the dark part; default: guessed by :func:`ink_is_dark`.

    Returns
    -------
    dict of str to (N,) arrays
        The photo measures always; the glyph measures (``GLYPH_COLUMNS``) when ``C == 1``.
    """
    out = photo_measures(images)
    if images.shape[1] != 1:
        return out
    grey = grey_levels(images)
    if dark_ink is None:
        dark_ink = ink_is_dark(grey)
    if dark_ink:  # inverted before scaling, so a uint8 image and its negative measure alike
        ink = grey_levels(255 - images) if images.dtype == np.uint8 else 1.0 - grey
    else:
        ink = grey
    h, w = ink.shape[1:]
    batch = max(1, MOSAIC_PIXELS // ((h * scale + 1) * (w * scale + 1)))
    parts = [glyph_measures(ink[i:i + batch], scale, threshold, bound_frac)
             for i in range(0, len(ink), batch)]
    out.update({k: np.concatenate([p[k] for p in parts]) for k in GLYPH_COLUMNS})
    return out


METADATA_BATCH = 2048  # images per executor batch


def measure_batches(_model, arrays: dict[str, np.ndarray], _device, **options):
    """The per-batch work of :class:`ImageMetadata` (a :class:`~analysis.executor.BatchJob`'s
    ``build``): ``fn(start, stop)`` gives :func:`measure_images` of those images."""
    def fn(start: int, stop: int) -> dict[str, np.ndarray]:
        return measure_images(arrays["image"][start:stop], **options)

    return fn


@register
class ImageMetadata(Step):
    """Per-sample image measurements (see the module docstring); model-independent.

    Artifact arrays
    ---------------
    one ``(N,)`` array per column: ``GLYPH_COLUMNS`` for single-channel images,
    ``brightness``, ``contrast``, ``sharpness``, and ``COLOUR_COLUMNS`` for 3 channels.
    """

    name = "image_metadata"
    datasets = ("main",)
    order = 80
    version = 2
    uses_model = False
    declares = DECLARED

    @dataclass(frozen=True)
    class Config:
        scale: int = 2  # upsampling before the glyph measures (see the module docstring)
        threshold: float = 0.5
        bound_frac: float = 0.02

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        if config.scale < 1 or not 0 < config.threshold < 1 or not 0 <= config.bound_frac < 1:
            raise ConfigError(f"image_metadata: scale must be >= 1, threshold and bound_frac in "
                              f"(0, 1); got {config}.")
        images = ctx.dataset.images
        dark = ink_is_dark(grey_levels(images[:1000])) if images.shape[1] == 1 else False
        # Every measure is per image, so batches (of the executor's choosing) change nothing.
        job = BatchJob(measure_batches, {"image": images},
                       options={"scale": config.scale, "threshold": config.threshold,
                                "bound_frac": config.bound_frac, "dark_ink": dark},
                       threads=True)  # numpy, scipy, scikit-image and edt release the GIL
        cols = ctx.executor.map_batches(job, len(images), METADATA_BATCH, device=ctx.device,
                                        desc="image_metadata", progress=ctx.progress)
        return Artifact(cols, summary={"dark_ink": dark})

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        return {c.name: artifact[c.name] for c in DECLARED if c.name in artifact}
