"""Built-in shifted datasets: the MNIST-C corruptions (Mu & Gilmer, 2019) of any dataset.

``corrupt:NAME`` (or ``corrupt:NAME:BASE``) anywhere a dataset name is taken
gives the analysed dataset (or ``BASE``) with corruption ``NAME`` applied to
every image, e.g. ``--extra-dataset corrupt:fog``. ``corrupt:all`` mixes the
15 MNIST-C corruptions: sample ``i`` gets the corruption :func:`corruption_of`
draws from a hash of ``i`` (not ``i % 15``: datasets stored class by class in
turn, like the embedded mnist-5k, would then give each class only a few
corruptions), and is the very same image as sample ``i`` of that single
corruption. ``inverse`` (255 - x) is
the 16th name, not in the mix (MNIST-C's paper leaves it out of its 15).

Severities are the default severity of each function in the paper's code
(``corruptions.py`` of github.com/google-research/mnist-c), e.g. shot noise at
severity 5, rotate at 2 (0.4 rad), fog at 5. The operations use scikit-image
and scipy.ndimage; where the paper used ImageMagick, OpenCV or a hand-written
routine, this module says what stands in for it:

- ``motion_blur``: ImageMagick's one-sided motion blur (radius 10, sigma 3,
  random angle in [-45, 45] degrees) as a Gaussian-weighted sum of
  ``scipy.ndimage.shift`` copies along the angle.
- ``fog``: the paper's diamond-square plasma fractal as a sum of Gaussian-
  smoothed noise octaves (``skimage.filters.gaussian``), scaled to [0, 1]: the
  same kind of cloudy low-frequency field, added with the paper's constants.
- ``glass_blur``: the paper's sequential local pixel swaps, kept as written.

Images of any size and channel count are handled: the constants are for
28 x 28 and spatial ones (shifts, blur sigmas, line widths) scale with
``min(H, W) / 28``; a corruption is applied to each channel with the same
random draw (noise is drawn per pixel and channel); ``canny_edges`` runs on
the grey version and writes the edges to every channel; ``brightness`` raises
the HSV value of a 3-channel image (the paper's route for grey images, which
reduces to adding 0.5).

Every sample is seeded from the corruption name and its index (sha256), so
sample ``i`` is the same image in any process, batch or ``--limit``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from skimage import color, feature, filters, transform, util

from core.errors import ConfigError

if TYPE_CHECKING:
    from core.image_dataset import ImageDataset

PREFIX = "corrupt:"
MNIST_C = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale",
           "rotate", "brightness", "translate", "stripe", "fog", "spatter", "dotted_line",
           "zigzag", "canny_edges")
MIX = "all"

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""``(C, H, W)`` float64 image in [0, 1] and a generator -> ``(C, H, W)`` float in [0, 1]."""


# -- helpers --------------------------------------------------------------------------------
def _size_scale(x: np.ndarray) -> float:
    """Spatial constants are the paper's for 28 x 28; scale them with the image."""
    return min(x.shape[1:]) / 28.0


def _per_channel(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([fn(ch) for ch in x])


def _centred_warp(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Warp with the 2x2 ``matrix`` as inverse map, the image centre kept fixed (as MNIST-C)."""
    h, w = x.shape[1:]
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])  # skimage's (col, row) order
    full = np.eye(3)
    full[:2, :2] = matrix
    full[:2, 2] = centre - matrix @ centre
    aff = transform.AffineTransform(matrix=full)
    return _per_channel(x, lambda ch: transform.warp(ch, inverse_map=aff, order=1))


def _segment_mask(shape: tuple[int, int], p0: tuple[float, float],
                  p1: tuple[float, float]) -> np.ndarray:
    """``(H, W)`` soft line from ``p0`` to ``p1`` ((col, row)), MNIST-C's decay log(1 - d/2.3) + 1.

    ``d`` is the distance to the segment (the paper measured it vertically,
    which thins steep segments), in 28-pixel units.
    """
    h, w = shape
    s = min(h, w) / 28.0
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float64)
    (c0, r0), (c1, r1) = p0, p1
    dc, dr = c1 - c0, r1 - r0
    length2 = dc * dc + dr * dr
    t = 0.0 if length2 == 0 else np.clip(((cc - c0) * dc + (rr - r0) * dr) / length2, 0, 1)
    dist = np.hypot(cc - (c0 + t * dc), rr - (r0 + t * dr)) / s
    dist = np.clip(dist, 0, 2.3 - 1e-10)
    return np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)


def _smooth_noise_field(shape: tuple[int, int], rng: np.random.Generator,
                        decay: float) -> np.ndarray:
    """``(H, W)`` cloudy field in [0, 1]: Gaussian-smoothed noise octaves, each ``decay`` weaker.

    Stands in for the paper's plasma fractal (a 256 x 256 map cropped to
    28 x 28, so mostly coarse structure at that size).
    """
    h, w = shape
    s = min(h, w) / 28.0
    field = np.zeros(shape)
    for octave, sigma in enumerate((16.0, 8.0, 4.0, 2.0, 1.0)):
        layer = filters.gaussian(rng.standard_normal(shape), sigma=sigma * s, mode="reflect")
        layer /= layer.std() or 1.0
        field += layer / decay ** octave
    field -= field.min()
    return field / (field.max() or 1.0)


# -- the corruptions ------------------------------------------------------------------------
def shot_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise, MNIST-C severity 5 (c = 3 photons at full intensity)."""
    c = 3.0
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper on 17% of the pixels (severity 4)."""
    return util.random_noise(x, mode="s&p", amount=0.17, rng=rng)


def glass_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, swap pixels with random neighbours, blur again (severity 1: sigma 0.7, 1 px, 2x)."""
    s = _size_scale(x)
    sigma, delta, passes = 0.7 * s, max(1, round(1 * s)), 2
    h, w = x.shape[1:]
    img = np.round(_per_channel(x, lambda ch: filters.gaussian(ch, sigma=sigma)) * 255)
    # Pixels as a list of (C,) rows: the paper's sequential swaps are then list swaps.
    pixels = list(np.moveaxis(img, 0, -1).reshape(h * w, -1))
    rr, cc = np.meshgrid(np.arange(h - delta, delta, -1), np.arange(w - delta, delta, -1),
                         indexing="ij")  # the paper's loop order and bounds
    here = (rr * w + cc).ravel()
    for _ in range(passes):
        swap = rng.random(here.size) < 0.5
        moves = rng.integers(-delta, delta, size=(here.size, 2))  # (dx, dy), as in the paper
        there = here + moves[:, 1] * w + moves[:, 0]
        for i, j in zip(here[swap].tolist(), there[swap].tolist(), strict=True):
            pixels[i], pixels[j] = pixels[j], pixels[i]
    img = np.moveaxis(np.stack(pixels).reshape(h, w, -1), -1, 0)
    img = img / 255.0
    return np.clip(_per_channel(img, lambda ch: filters.gaussian(ch, sigma=sigma)), 0, 1)


def motion_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One-sided blur along a random angle in [-45, 45] degrees (severity 1: radius 10, sigma 3)."""
    s = _size_scale(x)
    radius, sigma = 10 * s, 3 * s
    angle = np.deg2rad(rng.uniform(-45, 45))
    steps = np.arange(0, int(np.ceil(radius)) + 1, dtype=np.float64)
    weights = np.exp(-steps ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    # Image rows grow downwards: a positive angle smears up and to the right.
    direction = np.array([-np.sin(angle), np.cos(angle)])
    out = np.zeros_like(x)
    for d, wgt in zip(steps, weights, strict=True):
        out += wgt * ndimage.shift(x, (0, *(d * direction)), order=1, mode="nearest")
    return np.clip(out, 0, 1)


def shear(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shear by +-0.4 (severity 2), about the centre."""
    c = 0.4 * rng.choice([-1, 1])
    return _centred_warp(x, transform.AffineTransform(shear=c).params[:2, :2])


def scale(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shrink to 70% about the centre (severity 3: inverse map scale 1/0.7)."""
    return _centred_warp(x, np.eye(2) / 0.7)


def rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate by +-0.4 rad, about 23 degrees (severity 2), about the centre."""
    c = 0.4 * rng.choice([-1, 1])
    return _centred_warp(x, transform.AffineTransform(rotation=c).params[:2, :2])


def brightness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add 0.5 to the HSV value (severity 5); for non-RGB images, to every channel."""
    if x.shape[0] == 3:
        hsv = color.rgb2hsv(np.moveaxis(x, 0, -1))
        hsv[..., 2] = np.clip(hsv[..., 2] + 0.5, 0, 1)
        return np.clip(np.moveaxis(color.hsv2rgb(hsv), -1, 0), 0, 1)
    return np.clip(x + 0.5, 0, 1)


def translate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift by 3 px (severity 3) along each axis, each direction random."""
    shift = 3 * _size_scale(x) * rng.choice([-1, 1], 2)
    aff = transform.AffineTransform(translation=shift)
    return _per_channel(x, lambda ch: transform.warp(ch, inverse_map=aff, order=1))


def stripe(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Invert the left and the right quarter of the columns (7 of 28 each side)."""
    out = x.copy()
    q = round(x.shape[2] / 4)
    out[:, :, :q] = 1 - out[:, :, :q]
    out[:, :, x.shape[2] - q:] = 1 - out[:, :, x.shape[2] - q:]
    return out


def fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add a cloudy field (severity 5: strength 3, decay 1.4), then rescale to the old maximum."""
    strength, decay = 3.0, 1.4
    max_val = x.max()
    out = x + strength * _smooth_noise_field(x.shape[1:], rng, decay)
    return np.clip(out * max_val / (max_val + strength), 0, 1)


def spatter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mud blots (severity 4): thresholded smoothed noise, painted in grey 63/255."""
    s = _size_scale(x)
    loc, scale_, sigma, threshold, mask_sigma = 0.65, 0.3, 1.0 * s, 0.65, 1.5 * s
    liquid = filters.gaussian(rng.normal(loc, scale_, size=x.shape[1:]), sigma=sigma)
    liquid[liquid < threshold] = 0
    mask = filters.gaussian((liquid > threshold).astype(np.float64), sigma=mask_sigma)
    mask[mask < 0.8] = 0
    return np.clip(x * (1 - mask) + 63 / 255 * mask, 0, 1)


def dotted_line(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A line from the left to the right edge, every other 2-px run of columns left out."""
    h, w = x.shape[1:]
    s = _size_scale(x)
    r0, r1 = rng.integers(0, h - 1, size=2)
    line = _segment_mask((h, w), (0, r0), (w - 1, r1))
    run = max(1, round(2 * s))
    line[:, (np.arange(w) // run) % 2 == 0] = 0
    return np.clip(x + line, 0, 1)


def zigzag(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A zigzag line across the image (teeth 2 px long, 2 px high at 28 x 28)."""
    h, w = x.shape[1:]
    s = _size_scale(x)
    a = b = 2.0 * s
    c0, c1 = 2 * s, w - 1 - 2 * s
    r0 = float(rng.integers(0, h - 1))
    r1 = r0 + float(rng.integers(-5, 5)) * s
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    along = [0.0] + [(2 * i + 1) * a for i in range(int((d - a) // (2 * a)) + 1)] + [d]
    across = [0.0] + [(-1) ** i * b for i in range(len(along) - 2)] + [0.0]
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cs, rs = rot @ np.array([along, across])
    cs, rs = cs + c0, rs + r0
    marks = np.zeros((h, w))
    for i in range(1, len(cs)):
        marks = np.maximum(marks, _segment_mask((h, w), (cs[i - 1], rs[i - 1]), (cs[i], rs[i])))
    return np.clip(x + marks, 0, 1)


def canny_edges(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Canny edges (sigma 1) of the grey image, white on black, in every channel."""
    grey = color.rgb2gray(np.moveaxis(x, 0, -1)) if x.shape[0] == 3 else x.mean(axis=0)
    edges = feature.canny(grey).astype(np.float64)
    return np.repeat(edges[None], x.shape[0], axis=0)


def inverse(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """255 - x."""
    return 1 - x


CORRUPTIONS: dict[str, Corruption] = {name: globals()[name] for name in MNIST_C}
CORRUPTIONS["inverse"] = inverse
VALID_NAMES = (*CORRUPTIONS, MIX)


# -- datasets -------------------------------------------------------------------------------
def check_corruption(name: str) -> str:
    """``name`` when it is a corruption or ``all``; a :class:`ConfigError` listing them else."""
    if name not in VALID_NAMES:
        raise ConfigError(f"Unknown corruption {name!r} in {PREFIX}{name}. Valid names: "
                          f"{', '.join(VALID_NAMES)} (all = the 15 MNIST-C corruptions mixed, "
                          "one drawn per sample).")
    return name


def parse_corrupt_name(name: str) -> tuple[str, str | None]:
    """``corrupt:NAME[:BASE]`` -> ``(NAME, BASE or None)``; ``BASE`` may hold colons."""
    if not name.startswith(PREFIX):
        raise ConfigError(f"{name!r} is not a corrupt:NAME[:BASE] dataset name.")
    corruption, _, base = name[len(PREFIX):].partition(":")
    return check_corruption(corruption), base or None


def sample_seed(corruption: str, index: int) -> int:
    """The seed of sample ``index`` under ``corruption``: same in every process and batch."""
    digest = hashlib.sha256(f"loupe-corrupt:{corruption}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def corruption_of(name: str, index: int) -> str:
    """The corruption sample ``index`` gets under ``name``.

    ``all``: one of the 15 drawn from a hash of ``index`` (uniform, and
    independent of the class even when a dataset interleaves its classes).
    """
    if name != MIX:
        return name
    return MNIST_C[sample_seed(MIX, index) % len(MNIST_C)]


def corrupt_image(image: np.ndarray, name: str, index: int) -> np.ndarray:
    """Sample ``index`` of corruption ``name``.

    Parameters
    ----------
    image : (C, H, W) uint8
    name : a corruption name or ``all``
    index : the sample's index in its dataset (seeds the random draws)

    Returns
    -------
    (C, H, W) uint8
    """
    actual = corruption_of(check_corruption(name), index)
    rng = np.random.default_rng(sample_seed(actual, index))
    out = CORRUPTIONS[actual](image.astype(np.float64) / 255.0, rng)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def corrupt_images(images: np.ndarray, name: str, start: int = 0) -> np.ndarray:
    """``(N, C, H, W)`` uint8 -> the same shape, sample ``k`` corrupted as index ``start + k``."""
    return np.stack([corrupt_image(img, name, start + k) for k, img in enumerate(images)]) \
        if len(images) else images.copy()


def corrupt_dataset(base: ImageDataset, name: str) -> ImageDataset:
    """``base`` with every image corrupted; named ``corrupt-<name>-<base name>``.

    Labels and class names are the base's (a corrupted 7 is still a 7). The
    fingerprint is computed from the new pixels like any dataset's, so the
    cache keys follow the content.
    """
    check_corruption(name)
    return replace(base, name=f"corrupt-{name}-{base.name}",
                   images=corrupt_images(base.images, name),
                   source=f"{PREFIX}{name} of {base.key} ({base.source})",
                   conversion=base.conversion)
