"""Reading image files safely, at their native shape or converted to a requested one.

Every file is checked before it is decoded: it must be a regular file (a FIFO
or a device named ``x.png`` is never opened), and its pixel count, read from
the header, must not exceed :func:`max_pixels` (``$LOUPE_MAX_PIXELS``, default
50 megapixels). Images are decoded one at a time and converted straight to the
requested shape, so a folder of large photographs never sits in memory at full
size.

Resizing uses Pillow's antialiased bilinear filter (``Image.BILINEAR``, whose
support widens with the downscale factor): it is what torchvision's ``Resize``
does by default, so images match what a model was usually trained on, and
unlike Lanczos it never overshoots, so hard-edged strokes (digits, letters) get
no ringing clipped at 0 and 255.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: ``(C, H, W)`` where each entry may be ``None`` (keep the native value).
ShapeRequest = tuple[int | None, int | None, int | None]

#: torchvision's ``IMG_EXTENSIONS``, matched case-insensitively.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "LOUPE_MAX_PIXELS"
# Modes that hold one intensity channel (alpha is dropped on load).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# What a broken or hostile file makes Pillow's decoders raise.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                 Image.DecompressionBombError)
RESAMPLE = Image.Resampling.BILINEAR


def max_pixels() -> int:
    """The largest image (width x height) Loupe decodes: ``$LOUPE_MAX_PIXELS`` or 50 MP."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r} is not a positive number of pixels "
                          f"(e.g. {MAX_PIXELS_ENV}={DEFAULT_MAX_PIXELS}).")
    return value


def check_shape_request(image_shape: Sequence[int | None] | None) -> ShapeRequest:
    """Validate ``image_shape`` (``None`` or ``(C, H, W)`` with ``None`` entries allowed)."""
    if image_shape is None:
        return (None, None, None)
    shape = tuple(image_shape)
    if len(shape) != 3:
        raise ConfigError(f"Image shape {shape} must be (channels, height, width), "
                          "e.g. --input-size 1x28x28.")
    c, h, w = shape
    if c not in (None, 1, 3):
        raise ConfigError(f"Image shape {shape}: channels must be 1 (grey) or 3 (RGB), not {c}.")
    for side in (h, w):
        if side is not None and (int(side) != side or side <= 0):
            raise ConfigError(f"Image shape {shape}: height and width must be positive, "
                              f"not {side}.")
    return (c, None if h is None else int(h), None if w is None else int(w))


def is_colour(im: Image.Image) -> bool:
    """Whether a (lazily opened) image holds colour; a palette counts if any entry is not grey."""
    if im.mode in GREY_MODES:
        return False
    if im.mode in ("P", "PA"):
        palette = im.palette.palette if im.palette is not None else b""
        if im.palette is None or im.palette.mode != "RGB" or len(palette) % 3:
            return True
        rgb = np.frombuffer(palette, np.uint8).reshape(-1, 3)
        return bool((rgb != rgb[:, :1]).any())
    return True


def is_regular_file(path: str | os.PathLike) -> bool:
    """``os.stat`` (following links) says regular file; nothing is opened."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror or exc} (a broken link or a "
                        "missing file; remove it or fix the link).") from None


def open_regular(path: str | os.PathLike):
    """Open ``path`` for reading, refusing anything that is not a regular file.

    ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a
    writer, and ``fstat`` on the open descriptor closes the race between a
    check and the open.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise DataError(f"Cannot open image {path}: {exc.strerror or exc}.") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{path} is not a regular file (a FIFO, socket or device named like "
                        "an image); remove it from the dataset.")
    return os.fdopen(fd, "rb")


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding its pixels."""

    path: str
    width: int
    height: int
    colour: bool


def _open_checked(fh, path: str, limit: int) -> Image.Image:
    try:
        im = Image.open(fh)
    except Image.DecompressionBombError as exc:
        # Only reached when MAX_PIXELS_ENV is raised above Pillow's own hard limit.
        raise DataError(f"Image {path} is refused by Pillow: {exc} Shrink or remove it "
                        f"(Pillow refuses over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} "
                        "pixels whatever the limit set).") from None
    except DECODE_ERRORS as exc:
        raise DataError(f"Cannot read image {path}: {exc}. The file is corrupt or not an "
                        "image; replace or remove it.") from None
    width, height = im.size
    if width * height > limit:
        raise DataError(f"Image {path} is {width}x{height} = {width * height:,} pixels, over "
                        f"the limit of {limit:,}; shrink it, remove it, or raise "
                        f"{MAX_PIXELS_ENV}.")
    return im


def read_image(path: str | os.PathLike, shape: tuple[int, int, int] | None = None,
               limit: int | None = None) -> tuple[ImageHeader, np.ndarray | None]:
    """One image file's header and, when ``shape`` is given, its pixels at that shape.

    The file is opened once. Large JPEGs are decoded at a reduced scale first
    (``Image.draft``), so a photograph is never held at full size when a small
    one is wanted.

    Parameters
    ----------
    path : path
    shape : (C, H, W), optional
        Decode to this shape; ``None`` reads the header only.
    limit : int, optional
        Pixel limit (default :func:`max_pixels`).

    Returns
    -------
    header : ImageHeader
    pixels : np.ndarray or None
        ``(C, H, W)`` uint8, or ``None`` when ``shape`` is ``None``.

    Raises
    ------
    DataError
        Not a regular file, not an image, over the pixel limit, or corrupt;
        names the file.
    """
    limit = max_pixels() if limit is None else limit
    with open_regular(path) as fh:
        im = _open_checked(fh, str(path), limit)
        header = ImageHeader(str(path), im.size[0], im.size[1], is_colour(im))
        if shape is None:
            im.close()
            return header, None
        channels, height, width = shape
        try:
            if im.size != (width, height):
                im.draft(None, (width, height))
            if im.mode.startswith("I;16"):
                # Pillow's convert('L') clips 16-bit values at 255: keep the high byte instead.
                im = Image.fromarray((np.asarray(im) >> 8).astype(np.uint8))
            elif im.mode in ("I", "F"):
                # 32-bit integer or float pixels have no fixed range: converting would clip
                # (or zero) them silently.
                raise DataError(f"{path}: {im.mode!r} images (32-bit integer or float pixels) "
                                "have no fixed range; save it as 8- or 16-bit PNG or TIFF.")
            mode = "L" if channels == 1 or not header.colour else "RGB"
            if im.mode != mode:
                im = im.convert(mode)
            if im.size != (width, height):
                im = im.resize((width, height), RESAMPLE)
            arr = np.asarray(im, dtype=np.uint8)
        except DECODE_ERRORS as exc:
            raise DataError(f"Cannot decode image {path}: {exc}. The file is corrupt or "
                            "truncated; replace or remove it.") from None
        finally:
            im.close()
    if arr.ndim == 2:
        return header, np.broadcast_to(arr, (channels, height, width))
    return header, arr.transpose(2, 0, 1)


def read_header(path: str | os.PathLike, limit: int | None = None) -> ImageHeader:
    """Size and colour of one image file, from its header only (see :func:`read_image`)."""
    return read_image(path, None, limit)[0]


def decode_image(path: str | os.PathLike, channels: int, height: int, width: int,
                 limit: int | None = None) -> np.ndarray:
    """One image decoded to ``(channels, height, width)`` uint8 (see :func:`read_image`)."""
    return read_image(path, (channels, height, width), limit)[1]  # type: ignore[return-value]


def native_shape_of(headers: Sequence[ImageHeader]) -> tuple[int, tuple[int, int] | None]:
    """Native channels (3 if any image is colour) and the common ``(H, W)`` or ``None``."""
    channels = 3 if any(h.colour for h in headers) else 1
    sizes = {(h.height, h.width) for h in headers}
    return channels, (next(iter(sizes)) if len(sizes) == 1 else None)


def target_shape(headers: Sequence[ImageHeader], request: ShapeRequest
                 ) -> tuple[tuple[int, int, int], tuple[int, int, int] | None]:
    """The shape to load at and the native shape (``None`` when sizes differ).

    Raises
    ------
    DataError
        The images differ in size and no height and width were requested;
        names two files of different sizes and ``--input-size``.
    """
    channels, size = native_shape_of(headers)
    c, h, w = request
    if size is None and (h is None or w is None):
        first = headers[0]
        other = next(x for x in headers if (x.height, x.width) != (first.height, first.width))
        raise DataError(f"Images differ in size: {first.path} is {first.width}x{first.height} "
                        f"but {other.path} is {other.width}x{other.height}. Pass "
                        "--input-size CxHxW (e.g. --input-size 3x32x32) to resize them all.")
    native = None if size is None else (channels, *size)
    target = (c or channels, h or size[0], w or size[1])  # type: ignore[index]
    return target, native


def describe_conversion(headers: Sequence[ImageHeader], target: tuple[int, int, int]) -> str:
    """What loading ``headers`` at ``target`` changes, e.g. ``resized 1,797 images from 8x8
    to 28x28; converted 1,797 grey images to RGB``; empty when nothing changes."""
    c, h, w = target
    parts = []
    resized = [x for x in headers if (x.height, x.width) != (h, w)]
    if resized:
        sizes = {(x.width, x.height) for x in resized}
        src = "x".join(map(str, next(iter(sizes)))) if len(sizes) == 1 else "mixed sizes"
        parts.append(f"resized {len(resized):,} images from {src} to {w}x{h}")
    colour = sum(x.colour for x in headers)
    if c == 1 and colour:
        parts.append(f"converted {colour:,} colour images to grey")
    elif c == 3 and colour < len(headers):
        parts.append(f"converted {len(headers) - colour:,} grey images to RGB")
    return "; ".join(parts)


def load_images(paths: Sequence[str | os.PathLike], request: ShapeRequest,
                limit: int | None = None
                ) -> tuple[np.ndarray, tuple[int, int, int] | None, str]:
    """Read image files at their native shape or the requested one.

    With a full ``(C, H, W)`` request each file is opened once; otherwise every
    header is read first (to find the native shape) and the files are decoded
    in a second pass.

    Parameters
    ----------
    paths : sequence of path
        Image files, in sample order.
    request : (C, H, W)
        ``None`` entries keep the native value.
    limit : int, optional
        Decode only the first ``limit`` files; every header is still read, so
        the native shape (and the shape loaded) does not depend on ``limit``.

    Returns
    -------
    images : np.ndarray
        ``(N, C, H, W)`` uint8.
    native_shape : (C, H, W) or None
        ``None`` when the images differ in size.
    conversion : str
        What was changed, empty when nothing was.
    """
    pixel_limit = max_pixels()
    count = len(paths) if limit is None else min(limit, len(paths))
    if all(v is not None for v in request):
        target: tuple[int, int, int] = request  # type: ignore[assignment]
        images = np.empty((count, *target), dtype=np.uint8)
        headers = []
        for i, path in enumerate(paths):
            header, pixels = read_image(path, target if i < count else None, pixel_limit)
            headers.append(header)
            if pixels is not None:
                images[i] = pixels
        channels, size = native_shape_of(headers)
        native = None if size is None else (channels, *size)
    else:
        headers = [read_header(p, pixel_limit) for p in paths]
        target, native = target_shape(headers, request)
        images = np.empty((count, *target), dtype=np.uint8)
        for i, header in enumerate(headers[:count]):
            images[i] = read_image(header.path, target, pixel_limit)[1]
    return images, native, describe_conversion(headers[:count], target)


def convert_array(images: np.ndarray, request: ShapeRequest) -> tuple[np.ndarray, str]:
    """Convert ``(N, C, H, W)`` uint8 images (C = 1 or 3) to a requested shape.

    Channels are replicated (1 -> 3) or reduced to luminance (3 -> 1, ITU-R
    601-2 as Pillow's ``convert('L')``), and each image is resized with the
    same antialiased bilinear filter as image files, so an idx dataset and a
    folder of the same images convert identically.

    Returns
    -------
    images : np.ndarray
        ``(N, C', H', W')`` uint8; the input itself when nothing changes.
    conversion : str
        Empty when nothing changed.
    """
    n, c, h, w = images.shape
    tc, th, tw = request[0] or c, request[1] or h, request[2] or w
    if (tc, th, tw) == (c, h, w):
        return images, ""
    out = np.empty((n, tc, th, tw), dtype=np.uint8)
    for i in range(n):
        im = Image.fromarray(images[i, 0] if c == 1 else images[i].transpose(1, 2, 0))
        if tc == 1 and c == 3:
            im = im.convert("L")
        if (th, tw) != (h, w):
            im = im.resize((tw, th), RESAMPLE)
        arr = np.asarray(im)
        out[i] = arr if arr.ndim == 2 else arr.transpose(2, 0, 1)
    parts = []
    if (th, tw) != (h, w):
        parts.append(f"resized {n:,} images from {w}x{h} to {tw}x{th}")
    if tc != c:
        parts.append("converted grey to RGB" if tc == 3 else "converted RGB to grey")
    return out, "; ".join(parts)


def has_image_extension(name: str) -> bool:
    """torchvision's rule: the lower-cased name ends with one of :data:`IMG_EXTENSIONS`."""
    return name.lower().endswith(IMG_EXTENSIONS)


def resolve_image_path(base: Path, value: str) -> Path:
    """``value`` as given when absolute, else relative to ``base``."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
