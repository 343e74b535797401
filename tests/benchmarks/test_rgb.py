"""``bench --suite rgb`` end to end at a tiny size: photo patches, a user CNN, fresh processes."""

from __future__ import annotations

import numpy as np

from benchmarks.rgb import PHOTOS, format_rgb, parse_run_output, photo_patches, rgb_bench


def test_train_and_test_patches_come_from_opposite_halves():
    train, y_train = photo_patches("left", 4, seed=0)
    test, y_test = photo_patches("right", 4, seed=1)
    assert train.shape == test.shape == (4 * len(PHOTOS), 32, 32, 3)
    assert train.dtype == np.uint8
    np.testing.assert_array_equal(y_train, np.repeat(np.arange(len(PHOTOS)), 4))
    # Blank background (the retina's black border) is alike in both halves; real content is not.
    train_set = {p.tobytes() for p in train}
    assert not any(p.tobytes() in train_set for p in test if np.ptp(p) > 16)


def test_parse_run_output_reads_the_summary():
    out = parse_run_output("x on y (300 samples, cpu):\n  accuracy 0.8125   mean loss 0.5\n"
                           "  MC dropout (T=5) accuracy 0.8000\n  steps:\n"
                           "    inference        computed     0.66 s\n"
                           "    tsne             cached       0.01 s\n  total 3.20 s\n")
    assert out == {"accuracy": 0.8125, "mc_accuracy": 0.8, "total_s": 3.2,
                   "steps": {"inference": {"status": "computed", "seconds": 0.66},
                             "tsne": {"status": "cached", "seconds": 0.01}}}


def test_rgb_bench_runs_end_to_end_at_a_tiny_size(tmp_path):
    r = rgb_bench(tmp_path, n_test=240, n_train=240, epochs=1, projections=("tsne",),
                  mc_samples=5, first_ever=False)
    assert (r["n_test"], r["n_train"]) == (240, 240)
    assert len(list((tmp_path / "rgb-photos" / "test").rglob("*.png"))) == 240
    empty, cached = r["end_to_end"]["empty_cache"], r["end_to_end"]["cached"]
    # Loupe reads the PNGs as they were written and normalises as the flags say
    assert abs(empty["accuracy"] - r["hand_accuracy"]) < 1e-4
    assert "mc_dropout" in empty["steps"] and "tsne" in empty["steps"]
    assert all(s["status"] == "computed" for s in empty["steps"].values())
    assert all(s["status"] != "computed" for s in cached["steps"].values())
    assert "RGB 32x32 (240 skimage photo patches, small CNN)" in format_rgb(r)
