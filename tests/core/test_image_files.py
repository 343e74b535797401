"""core/image_files.py: the checks before decoding, colour detection, array conversion."""

from __future__ import annotations

import os

import numpy as np
import pytest
from image_writer import photo_patches, sklearn_digits
from PIL import Image

from core.errors import ConfigError, DataError
from core.image_files import (
    DEFAULT_MAX_PIXELS,
    IMG_EXTENSIONS,
    convert_array,
    decode_image,
    max_pixels,
    open_regular,
    read_header,
)


def test_extensions_match_torchvision():
    from torchvision.datasets.folder import IMG_EXTENSIONS as TORCHVISION

    assert tuple(TORCHVISION) == IMG_EXTENSIONS


def test_max_pixels_from_env(monkeypatch):
    monkeypatch.delenv("LOUPE_MAX_PIXELS", raising=False)
    assert max_pixels() == DEFAULT_MAX_PIXELS == 50_000_000
    monkeypatch.setenv("LOUPE_MAX_PIXELS", "1_000")
    assert max_pixels() == 1000
    monkeypatch.setenv("LOUPE_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="LOUPE_MAX_PIXELS='lots'"):
        max_pixels()


def test_open_regular_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)  # no writer: a plain open() would wait forever
    with pytest.raises(DataError, match=r"x\.png is not a regular file"):
        open_regular(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        read_header(fifo)


def test_palette_colour_detection(tmp_path):
    images, _ = sklearn_digits()
    grey = Image.fromarray(images[0]).convert("P")  # a palette of greys only
    grey.save(tmp_path / "grey.png")
    patches, _, _ = photo_patches(per_photo=1)
    Image.fromarray(patches[1]).convert("P").save(tmp_path / "colour.png")
    assert not read_header(tmp_path / "grey.png").colour
    assert read_header(tmp_path / "colour.png").colour
    np.testing.assert_array_equal(decode_image(tmp_path / "grey.png", 1, 8, 8)[0], images[0])


def test_header_is_read_without_decoding(tmp_path, monkeypatch):
    # a 4000x3000 header over a low limit is refused before any pixel is decoded
    Image.new("L", (4000, 3000)).save(tmp_path / "big.png")
    monkeypatch.setenv("LOUPE_MAX_PIXELS", "11999999")
    with pytest.raises(DataError, match="4000x3000 = 12,000,000 pixels"):
        read_header(tmp_path / "big.png")


def test_convert_array_channels_and_size():
    patches, _, _ = photo_patches(per_photo=2)
    rgb = patches.transpose(0, 3, 1, 2)
    grey, what = convert_array(rgb, (1, None, None))
    assert what == "converted RGB to grey" and grey.shape == (6, 1, 32, 32)
    expected = np.stack([np.asarray(Image.fromarray(p).convert("L")) for p in patches])
    np.testing.assert_array_equal(grey[:, 0], expected)
    same, what = convert_array(rgb, (None, 32, 32))
    assert same is rgb and what == ""
    small, what = convert_array(rgb, (3, 16, 16))
    assert small.shape == (6, 3, 16, 16) and what == "resized 6 images from 32x32 to 16x16"
    # antialiased: a 2x downscale of a real photo stays close to 2x2 block means
    blocks = rgb.reshape(6, 3, 16, 2, 16, 2).mean(axis=(3, 5))
    assert np.abs(small - blocks).mean() < 6


def test_sixteen_bit_grey_keeps_its_high_byte(tmp_path):
    images, _ = sklearn_digits()
    # the real digits stretched to 16 bits (v * 257 maps 0..255 onto 0..65535)
    Image.fromarray(images[7].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    header = read_header(tmp_path / "deep.png")
    assert not header.colour and (header.width, header.height) == (8, 8)
    np.testing.assert_array_equal(decode_image(tmp_path / "deep.png", 1, 8, 8)[0], images[7])


def test_pillow_bomb_limit_names_the_file(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    PILImage.new("L", (300, 200)).save(tmp_path / "wide.png")
    monkeypatch.setenv("LOUPE_MAX_PIXELS", "10_000_000")
    # Pillow's own guard, lowered here instead of writing a 180-megapixel file
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 20_000)
    with pytest.raises(DataError, match=r"wide\.png is refused by Pillow"):
        read_header(tmp_path / "wide.png")


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_and_float_pixels_are_refused_not_clipped(tmp_path, mode):
    from PIL import Image

    from core.errors import DataError
    from core.image_files import read_image

    values = np.linspace(0, 65520 if mode == "I" else 1.0, 64).reshape(8, 8)
    path = tmp_path / "deep.tif"
    Image.fromarray(values.astype(np.int32 if mode == "I" else np.float32), mode).save(path)
    with pytest.raises(DataError, match="no fixed range"):
        read_image(path, (1, 8, 8))
