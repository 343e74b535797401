"""analysis/slicefinder.py: SliceLine evaluated in blocks of samples gives the package's
slices, on a real run."""

from __future__ import annotations

import numpy as np
import pytest
from sliceline import Slicefinder

from analysis.registry import StepContext
from analysis.slicefinder import BLOCK_CELLS, BlockSlicefinder
from analysis.steps.slices import Slices, rule_features, slice_table


@pytest.fixture(scope="module")
def real_table(tiny_session):
    """The tiny run's 300 real MNIST test digits: the model's errors and losses and the
    digits' measured metadata (the slices step's own table)."""
    s = tiny_session
    inputs = {r: s.engine.get(r) for r in Slices.requires}
    ctx = StepContext(s.model, s.dataset, s.device, inputs, {}, False, s.engine.executor)
    return slice_table(ctx, inputs)


@pytest.mark.parametrize("block_cells", [64, BLOCK_CELLS])
@pytest.mark.parametrize("error", ["error", "loss"])
def test_blocks_find_the_packages_slices_on_a_real_run(real_table, error, block_cells):
    table = real_table
    meta = [c for c in table.columns if c not in ("label", "pred", "correct", "loss")]
    X, _ = rule_features(table, ["label", *meta], 5)
    assert X.dtype == np.uint8 and X.shape[1] > 10
    wrong = ~table["correct"].to_numpy(dtype=bool)
    assert 5 <= wrong.sum() <= len(table) - 5  # a real mix of right and wrong
    errors = wrong.astype(np.float64) if error == "error" else table["loss"].to_numpy()
    options = {"alpha": 0.95, "k": 20, "max_l": 2, "min_sup": 10, "verbose": False}
    # The package on int64 codes, all samples at once; the blocks on uint8 codes, with
    # blocks of a few samples (64 cells over hundreds of candidates: one row at a time)
    # and in one block (the default size).
    whole = Slicefinder(**options).fit(X.astype(np.int64), errors)
    blocks = BlockSlicefinder(**options, block_cells=block_cells).fit(X, errors)
    assert len(whole.top_slices_) > 0
    assert whole.top_slices_.tolist() == blocks.top_slices_.tolist()
    a = [list(s.values()) for s in whole.top_slices_statistics_]
    b = [list(s.values()) for s in blocks.top_slices_statistics_]
    if error == "error":  # sums of 0/1 errors: exact in any order
        assert a == b
    else:  # sums of losses in another order: float64 rounding
        np.testing.assert_allclose(b, a, rtol=1e-12)
