"""Built-in shifted datasets (core/corruptions.py, the corrupt: hook of core/datasets.py).

Real MNIST digits: the first test digits of ``mnist`` under LOUPE_DATA, else the
embedded ``mnist-5k``. The colour image is generated in the test.
"""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage import feature

from core.corruptions import (
    CORRUPTIONS,
    MNIST_C,
    corrupt_dataset,
    corrupt_image,
    corrupt_images,
    corruption_of,
    parse_corrupt_name,
)
from core.datasets import load_dataset
from core.errors import ConfigError

N = 30


@pytest.fixture(scope="module")
def base(digits, data_root):
    return load_dataset(digits, "test", data_root=data_root, limit=N)


@pytest.fixture(scope="module")
def corrupted(base):
    """Every corruption of the N digits, computed once: name -> (N, 1, 28, 28) uint8."""
    return {name: corrupt_images(base.images, name) for name in CORRUPTIONS}


def mean_abs_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def test_names_are_the_paper_15_plus_inverse():
    assert len(MNIST_C) == 15 and set(CORRUPTIONS) == {*MNIST_C, "inverse"}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_keeps_shape_dtype_range_and_changes_every_image(name, base, corrupted):
    out = corrupted[name]
    assert out.shape == base.images.shape and out.dtype == np.uint8
    changed = [mean_abs_change(o, b) for o, b in zip(out, base.images, strict=True)]
    # Every image changes by at least 1 grey level per pixel on average (a digit covers
    # about a fifth of the image, so even a 3-px shift moves far more than that).
    assert min(changed) > 1.0, (name, min(changed))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_sample_is_the_same_image_in_any_batch_and_call(name, base, corrupted):
    again = corrupt_images(base.images, name)
    np.testing.assert_array_equal(again, corrupted[name])
    # A batch starting at 17 (another process's second batch) gives the same images.
    np.testing.assert_array_equal(corrupt_images(base.images[17:], name, start=17),
                                  corrupted[name][17:])
    assert np.array_equal(corrupt_image(base.images[5], name, 5), corrupted[name][5])


def test_random_corruptions_differ_between_samples_of_the_same_image(base):
    """The seed is the sample's index: one image at two indices gets two noise draws."""
    img = base.images[0]
    for name in ("shot_noise", "impulse_noise", "fog", "spatter", "zigzag", "dotted_line"):
        assert not np.array_equal(corrupt_image(img, name, 0), corrupt_image(img, name, 1)), name


def test_inverse_is_255_minus_x_exactly(base, corrupted):
    np.testing.assert_array_equal(corrupted["inverse"], 255 - base.images)


def test_stripe_inverts_the_outer_quarters_only(base, corrupted):
    out, x = corrupted["stripe"].astype(int), base.images.astype(int)
    np.testing.assert_array_equal(out[..., :7], 255 - x[..., :7])
    np.testing.assert_array_equal(out[..., 21:], 255 - x[..., 21:])
    np.testing.assert_array_equal(out[..., 7:21], x[..., 7:21])


def test_brightness_adds_half_the_range(base, corrupted):
    # The paper's HSV route on a grey image is x + 0.5, clipped.
    expected = np.clip(base.images.astype(int) + 128, 0, 255)
    assert np.abs(corrupted["brightness"].astype(int) - expected).max() <= 1
    assert corrupted["brightness"].mean() > base.images.mean() + 100


def test_rotate_keeps_the_centre_of_mass_but_moves_the_pixels(base, corrupted):
    for x, r in zip(base.images[:, 0], corrupted["rotate"][:, 0], strict=True):
        com_x, com_r = np.array(ndimage.center_of_mass(x)), np.array(ndimage.center_of_mass(r))
        # A rotation by 0.4 rad about the image centre moves a centre of mass at most
        # 0.4 * its distance from the centre (MNIST digits are centred by mass: < 2 px).
        assert np.linalg.norm(com_x - com_r) < 1.5
        assert mean_abs_change(x, r) > 10
        assert abs(int(x.sum()) - int(r.sum())) < 0.1 * x.sum()  # ink kept


def test_scale_shrinks_the_ink_to_about_half(base, corrupted):
    ratio = corrupted["scale"].sum(axis=(1, 2, 3)) / base.images.sum(axis=(1, 2, 3))
    assert np.all((ratio > 0.35) & (ratio < 0.65))  # area scales by 0.7 ** 2 = 0.49


def shifted(x: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """``x`` (H, W) moved down ``dr`` and right ``dc`` pixels, zeros shifted in."""
    out = np.zeros_like(x)
    h, w = x.shape
    out[max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)] = \
        x[max(-dr, 0):h - max(dr, 0), max(-dc, 0):w - max(dc, 0)]
    return out


def test_translate_moves_the_image_by_3_px_each_way(base, corrupted):
    for x, t in zip(base.images[:, 0], corrupted["translate"][:, 0], strict=True):
        matches = [(dr, dc) for dr in (-3, 3) for dc in (-3, 3)
                   if np.array_equal(t, shifted(x, dr, dc))]
        assert len(matches) == 1


def test_canny_gives_edges_only(base, corrupted):
    out = corrupted["canny_edges"]
    assert set(np.unique(out)) <= {0, 255}
    # Exactly scikit-image's canny of the grey image.
    expected = np.stack([feature.canny(x[0] / 255.0) for x in base.images])
    np.testing.assert_array_equal(out[:, 0] == 255, expected)
    # Edges, not strokes: the inside of a thick stroke is dark.
    strokes = base.images[:, 0] > 200
    inner = ndimage.binary_erosion(strokes, structure=np.ones((1, 3, 3)))
    assert (out[:, 0][inner] == 0).mean() > 0.8


def test_noise_corruptions_change_many_pixels(base, corrupted):
    x = base.images
    # Salt and pepper on 17% of the pixels: about 17% become 0 or 255 where they were not.
    changed = (corrupted["impulse_noise"] != x).mean()
    assert 0.08 < changed < 0.2
    # Shot noise with 3 photons leaves only the grey levels 0, 85, 170 and 255.
    assert set(np.unique(corrupted["shot_noise"])) <= {0, 85, 170, 255}


def test_blurs_smooth_the_image(base, corrupted):
    def roughness(a):
        return np.abs(np.diff(a.astype(float), axis=-1)).mean()

    for name in ("glass_blur", "motion_blur"):
        assert roughness(corrupted[name]) < 0.8 * roughness(base.images), name


def test_fog_brightens_the_background(base, corrupted):
    background = base.images == 0
    assert corrupted["fog"][background].mean() > 40


def test_lines_add_ink(base, corrupted):
    for name in ("dotted_line", "zigzag", "spatter"):
        assert (corrupted[name].astype(int) - base.images > 30).mean(axis=(1, 2, 3)).min() > 0.01


def test_mix_is_each_single_corruption_at_its_index(base, corrupted):
    mix = corrupt_images(base.images, "all")
    for i in range(N):
        np.testing.assert_array_equal(mix[i], corrupted[corruption_of("all", i)][i])


def test_mix_is_not_tied_to_the_class():
    # mnist-5k stores its classes in turn (label = i mod 10); i mod 15 would give each
    # class 3 of the 15 corruptions. The drawn mix gives every class (nearly) all of them.
    drawn = np.array([MNIST_C.index(corruption_of("all", i)) for i in range(1000)])
    labels = np.arange(1000) % 10
    assert min(len(set(drawn[labels == c])) for c in range(10)) >= 12
    assert np.bincount(drawn, minlength=15).min() > 30


def test_colour_and_any_size():
    # A 3-channel 40x52 image generated here: a red square on a blue background.
    img = np.zeros((3, 40, 52), np.uint8)
    img[2] = 160
    img[0, 12:28, 18:34], img[2, 12:28, 18:34] = 230, 0
    for name in CORRUPTIONS:
        out = corrupt_image(img, name, 3)
        assert out.shape == img.shape and out.dtype == np.uint8, name
        assert mean_abs_change(out, img) > 1.0, name
    edges = corrupt_image(img, "canny_edges", 0)
    assert np.array_equal(edges[0], edges[1]) and edges[0].any()
    # Geometric corruptions move every channel the same way: the square stays red.
    rot = corrupt_image(img, "rotate", 3).astype(int)
    red = rot[0] > 150
    assert red.sum() > 150 and (rot[2][red] < 60).all()
    np.testing.assert_array_equal(corrupt_image(img, "inverse", 0), 255 - img)


def test_dataset_hook_names_keys_and_fingerprints(base, digits, data_root):
    ds = load_dataset(f"corrupt:fog:{digits}", "test", data_root=data_root, limit=N)
    assert ds.name == f"corrupt-fog-{base.name}" and ds.split == "test"
    assert ds.sample_ids[4] == f"corrupt-fog-{base.name}:test:4"
    np.testing.assert_array_equal(ds.labels, base.labels)
    assert ds.fingerprint != base.fingerprint
    assert ds.fingerprint == corrupt_dataset(base, "fog").fingerprint  # content-addressed
    assert load_dataset("corrupt:inverse", "test", base=base).fingerprint != ds.fingerprint
    # --limit takes the first samples, each the same image as without it.
    short = load_dataset(f"corrupt:all:{digits}", "test", data_root=data_root, limit=7)
    np.testing.assert_array_equal(short.images, corrupt_images(base.images[:7], "all"))


def test_unknown_names_are_config_errors_listing_the_valid_ones(base):
    with pytest.raises(ConfigError, match="Valid names: shot_noise, impulse_noise.*inverse, all"):
        load_dataset("corrupt:blurry", "test", base=base)
    with pytest.raises(ConfigError, match="corrupt:fog:BASE"):
        load_dataset("corrupt:fog", "test")
    assert parse_corrupt_name("corrupt:fog:folder:/a:b") == ("fog", "folder:/a:b")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, digits, data_root):
    """mnist_cnn, 3 epochs on 4,000 real digits (about a minute of CPU).

    The shared one-epoch ``tiny_run`` is too unsure of itself (mean entropy 1.3
    nats on digits) for its scores to separate anything well; this one
    reaches about 96% on the test digits.
    """
    from models.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "cnn3"
    train(TrainConfig(arch="mnist_cnn", dataset=digits, epochs=3, limit=4000, batch_size=64),
          out, device="cpu", data_root=data_root, progress=False)
    return out


def test_cli_with_corrupt_inverse_separates_it(trained_run, digits, data_root, tmp_path, capsys):
    """``python -m analysis ood --extra-dataset corrupt:inverse --limit 200`` end to end."""
    out = tmp_path / "ood.csv"
    extra = ["--data-root", data_root] if data_root else []
    code = importlib.import_module("analysis.cli").main([
        "ood", "--checkpoint", str(trained_run), "--dataset", digits, "--limit", "200",
        "--extra-dataset", "corrupt:inverse", "--mc-samples", "5", "--projection",
        "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--out", str(out), *extra])
    assert code == 0, capsys.readouterr().err
    frame = pd.read_csv(out)
    assert f"corrupt-inverse-{digits}:test" in capsys.readouterr().out
    plain = frame[frame["score"] == "entropy"]
    assert len(plain) == 1 and float(plain["auroc"].iloc[0]) > 0.9, frame
    assert float(frame[frame["score"] == "mc_entropy"]["auroc"].iloc[0]) > 0.9


def test_unknown_corruption_on_the_command_line_exits_2(tiny_run, digits, tmp_path, capsys):
    code = importlib.import_module("analysis.cli").main([
        "run", "--checkpoint", str(tiny_run), "--dataset", digits, "--limit", "50",
        "--extra-dataset", "corrupt:snow", "--cache-dir", str(tmp_path / "c"),
        "--device", "cpu", "--projection", "--mc-samples", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "error: Unknown corruption 'snow'" in err and "zigzag" in err
