"""analysis/steps/image_metadata.py: known answers on real MNIST digits (LOUPE_DATA or the
embedded mnist-5k), and each vectorised measure against a per-image evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import filters, morphology, transform
from skimage import measure as skmeasure

from analysis.registry import column_info
from analysis.steps import image_metadata as im
from core.datasets import load_dataset


@pytest.fixture(scope="module")
def digits_ds(digits, data_root):
    return load_dataset(digits, "test", data_root=data_root)


@pytest.fixture(scope="module")
def sample(digits_ds):
    """The first 300 real test digits, as (N, H, W) float grey levels in [0, 1]."""
    return digits_ds.images[:300, 0].astype(np.float32) / 255.0, digits_ds.labels[:300]


def measure(grey: np.ndarray, **kw) -> dict[str, np.ndarray]:
    return im.glyph_measures(grey.astype(np.float32), **kw)


# -- against a per-image evaluation ----------------------------------------------------------
def test_mosaic_measures_equal_per_image_skimage(sample):
    grey = sample[0][:40]
    got = measure(grey)
    for i, img in enumerate(grey):
        binary = np.pad(img >= img.min() + 0.5 * (img.max() - img.min()), 1)
        skel = morphology.skeletonize(binary)
        dist = ndimage.distance_transform_edt(binary)
        assert got["ink_area"][i] == binary.sum()
        assert got["stroke_thickness"][i] == pytest.approx(2 * dist[skel].mean(), rel=1e-5)
        links = ndimage.correlate(skel.astype(float), im.SKEL_LEN_MASK, mode="constant")
        assert got["stroke_length"][i] == pytest.approx((links * skel).sum(), rel=1e-5)
        # components - holes is the Euler number (8-connected ink)
        euler = skmeasure.euler_number(binary, connectivity=2)
        assert got["components"][i] - got["holes"][i] == euler
        assert got["components"][i] == skmeasure.label(binary, connectivity=2).max()


def morpho_parallelogram(img: np.ndarray, frac: float = 0.02) -> tuple[float, float]:
    """Morpho-MNIST's bounding_parallelogram, their loops written out (morphomnist/morpho.py)."""
    h, w = img.shape
    x = np.arange(w)[None, :]
    y = np.arange(h)[:, None]
    m00 = img.sum()
    m10, m01 = (x * img).sum() / m00, (y * img).sum() / m00
    u11 = (x * y * img).sum() / m00 - m10 * m01
    u02 = (y ** 2 * img).sum() / m00 - m01 ** 2
    shear = u11 / u02
    hloc = np.arange(w)
    hcdf = np.array([((x + .5 < t + shear * (y - m01)) * img).sum() for t in hloc]) / m00
    vcdf = np.array([((y < t) * img).sum() for t in range(h)]) / m00
    left, right = np.interp([frac / 2, 1 - frac / 2], hcdf, hloc)
    top, bottom = np.interp([frac / 2, 1 - frac / 2], vcdf, np.arange(h))
    return right - left, bottom - top


def test_bounding_parallelogram_matches_morpho_mnist(sample):
    grey = sample[0][:30].astype(np.float64)
    got = measure(grey)
    for i, img in enumerate(grey):
        width, height = morpho_parallelogram(img)
        assert got["glyph_width"][i] == pytest.approx(width, abs=1e-4)
        assert got["glyph_height"][i] == pytest.approx(height, abs=1e-4)


def test_laplacian_variance_is_skimage_laplace(sample):
    grey = sample[0][:10]
    want = [filters.laplace(g.astype(np.float64)).var() for g in grey]
    np.testing.assert_allclose(im.laplacian_variance(grey), want, rtol=1e-5)


# -- known answers ---------------------------------------------------------------------------
def test_thickening_and_thinning_move_thickness_the_right_way(sample):
    grey = sample[0][:100]
    base = measure(grey)["stroke_thickness"]
    thick = measure(np.stack([morphology.dilation(g, morphology.disk(1)) for g in grey]))
    assert (thick["stroke_thickness"] > base).mean() >= 0.9
    assert (thick["ink_area"] > measure(grey)["ink_area"]).all()
    # Thin the thicker half (a thin stroke eroded vanishes): a plus-shaped erosion.
    fat = grey[base >= np.median(base)]
    thin = measure(np.stack([morphology.erosion(g, morphology.disk(1)) for g in fat]))
    assert (thin["stroke_thickness"] < measure(fat)["stroke_thickness"]).mean() >= 0.8


@pytest.mark.parametrize("degrees", [-20.0, 15.0, 30.0])
def test_slant_follows_a_known_shear(sample, degrees):
    grey = sample[0][:60]
    before = measure(grey)["slant"]
    a = np.radians(degrees)
    centre = (grey.shape[1] - 1) / 2
    # skimage's forward shear maps x to x - tan(a) y: the top moves right of the bottom by
    # tan(a) per row (leans right for a > 0); translated so the centre row stays put.
    tf = transform.AffineTransform(shear=a, translation=(np.tan(a) * centre, 0))
    sheared = np.stack([transform.warp(g, tf.inverse, order=1) for g in grey])
    after = measure(sheared)["slant"]
    # A shear adds its tangent to the moments' shear: tan(after) = tan(before) + tan(a).
    want = np.degrees(np.arctan(np.tan(np.radians(before)) + np.tan(a)))
    assert np.median(np.abs(after - want)) < 2.0
    assert np.mean(np.sign(after - before) == np.sign(degrees)) >= 0.95


def test_slant_sign_positive_leans_right():
    bar = np.zeros((28, 28), np.float32)
    for r in range(4, 24):  # a stroke whose top is to the right of its bottom
        c = 14 + (14 - r) // 3
        bar[r, c - 1:c + 2] = 1.0
    assert measure(bar[None])["slant"][0] > 10
    assert measure(bar[None, :, ::-1].copy())["slant"][0] < -10


@pytest.mark.parametrize("digit,holes", [(0, 1), (1, 0), (8, 2)])
def test_holes_of_real_zeros_ones_and_eights(digits_ds, digit, holes):
    images = digits_ds.images[digits_ds.labels == digit][:100, 0].astype(np.float32) / 255
    counts = measure(images)["holes"]
    assert np.bincount(counts).argmax() == holes
    assert (counts == holes).mean() >= 0.5


def test_components_count_a_separate_speck(sample):
    grey = sample[0][:50].copy()
    base = measure(grey)
    clean = base["components"] == 1
    speck = grey.copy()
    speck[:, 0:2, 0:2] = 1.0  # 2x2 ink in a corner no MNIST digit reaches
    got = measure(speck)
    assert clean.mean() > 0.8
    np.testing.assert_array_equal(got["components"][clean], 2)
    np.testing.assert_array_equal(got["holes"], base["holes"])


def test_ink_offset_of_a_shifted_digit(sample):
    canvas = np.pad(sample[0][:20], ((0, 0), (4, 4), (4, 4)))  # room to move without wrapping
    base = measure(canvas)
    moved = measure(np.roll(canvas, (2, -3), axis=(1, 2)))  # 2 down, 3 left
    np.testing.assert_allclose(moved["ink_offset_x"] - base["ink_offset_x"], -3, atol=1e-4)
    np.testing.assert_allclose(moved["ink_offset_y"] - base["ink_offset_y"], 2, atol=1e-4)


def test_inverted_digits_keep_their_glyph_measures_and_invert_brightness(digits_ds):
    images = digits_ds.images[:50]
    normal = im.measure_images(images)
    inverted = im.measure_images(255 - images)  # dark ink on white: detected from the border
    np.testing.assert_allclose(inverted["brightness"], 1 - normal["brightness"], atol=1e-5)
    np.testing.assert_allclose(inverted["contrast"], normal["contrast"], atol=1e-5)
    np.testing.assert_allclose(inverted["sharpness"], normal["sharpness"], rtol=1e-4)
    for col in ("ink_area", "stroke_thickness", "holes", "slant"):
        np.testing.assert_allclose(inverted[col], normal[col], rtol=1e-5, atol=1e-5)


def test_colourfulness_of_grey_and_saturated_images(digits_ds):
    # Generated in the test: a real digit as a grey RGB image, and a red/green split image.
    grey_rgb = np.repeat(digits_ds.images[:5], 3, axis=1)
    saturated = np.zeros((2, 3, 28, 28), np.uint8)
    saturated[:, 0, :, :14] = 255
    saturated[:, 1, :, 14:] = 255
    got = im.measure_images(np.concatenate([grey_rgb, saturated]))
    np.testing.assert_allclose(got["colourfulness"][:5], 0, atol=1e-4)
    assert (got["colourfulness"][5:] > 100).all()
    # rg = +-255 half each: sigma_rg = 255, yb = 127.5 everywhere: sigma 0, mu 127.5
    assert got["colourfulness"][5] == pytest.approx(np.hypot(255, 0) + 0.3 * 127.5, rel=1e-4)
    np.testing.assert_allclose(got["mean_red"][5:], 0.5)
    assert "holes" not in got  # glyph measures only for single-channel images


def test_blank_images_have_no_ink_and_no_crash():
    blank = np.zeros((3, 1, 28, 28), np.uint8)
    got = im.measure_images(blank)
    assert (got["ink_area"] == 0).all() and np.isnan(got["stroke_thickness"]).all()
    assert (got["components"] == 0).all() and (got["holes"] == 0).all()


def test_columns_are_declared_with_units():
    for name in ("stroke_thickness", "slant", "holes", "colourfulness"):
        col = column_info(name)
        assert col is not None and col.unit and col.interpretable
    assert column_info("slant").unit == "degrees"


def test_step_runs_through_the_engine(digits_ds):
    from types import SimpleNamespace

    from analysis.executor import InProcessExecutor

    step = im.ImageMetadata()
    ds = digits_ds.head(64)
    ctx = SimpleNamespace(dataset=ds, executor=InProcessExecutor(), device="cpu", progress=False)
    art = step.run(ctx, step.Config())
    cols = step.columns(art, step.Config())
    assert set(cols) == set(im.GLYPH_COLUMNS) | {"brightness", "contrast", "sharpness"}
    assert all(v.shape == (64,) for v in cols.values())


def test_step_on_two_threads_equals_one(digits_ds):
    # 5,000 real digits: three batches of METADATA_BATCH, two at a time on two threads
    from types import SimpleNamespace

    from analysis.executor import InProcessExecutor

    step, ds = im.ImageMetadata(), digits_ds.head(5000)
    outs = [step.run(SimpleNamespace(dataset=ds, executor=InProcessExecutor(workers=w),
                                     device="cpu", progress=False), step.Config())
            for w in (1, 2)]
    assert len(ds.images) > 2 * im.METADATA_BATCH
    assert outs[0].keys() == outs[1].keys()
    for name in outs[0]:
        np.testing.assert_array_equal(outs[0][name], outs[1][name])


def test_upsampled_measures_agree_with_native_ones(sample):
    grey = sample[0][:30]
    native, fine = measure(grey), measure(grey, scale=2)
    ratio = fine["ink_area"] / native["ink_area"]
    assert np.median(np.abs(ratio - 1)) < 0.15
    # sub-pixel thickness loses part of the native half-pixel quantisation bias
    assert np.median(fine["stroke_thickness"] / native["stroke_thickness"]) == pytest.approx(
        1, abs=0.3)


def test_upsample_is_scipys_cubic_zoom_of_each_image(sample):
    grey = sample[0][:20]
    for scale in (2, 3):
        want = np.stack([ndimage.zoom(g, scale, order=3, grid_mode=True, mode="grid-constant")
                         for g in grey])
        got = im.upsample(grey, scale)
        assert got.shape == (20, 28 * scale, 28 * scale)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_distance_to_background_is_scipys_edt_bit_for_bit(sample):
    """The stroke thickness's distance map (``edt`` package) equals scipy's exactly, on the
    mosaic of real digits the step measures and on a mask with ink touching its border."""
    mosaic = im.mosaic(im.binarise(im.upsample(sample[0][:200], 2)))
    np.testing.assert_array_equal(im.distance_to_background(mosaic),
                                  ndimage.distance_transform_edt(mosaic))
    edge = np.random.default_rng(0).random((37, 53)) > 0.3
    edge[:, 0] = True  # ink on the border: no background beyond the array, as in scipy
    got = im.distance_to_background(edge)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, ndimage.distance_transform_edt(edge))
