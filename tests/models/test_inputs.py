"""The input contract: parsing the flags, the run.json entry, and what is assumed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from core.errors import ConfigError
from models.inputs import (
    InputSpec,
    normalisation_flags,
    parse_channel_values,
    parse_input_size,
    resolve_input,
    spec_from_flags,
    spec_from_meta,
)


def test_input_size_forms():
    assert parse_input_size("3x32x32") == (3, 32, 32)
    assert parse_input_size("224x224") == (None, 224, 224)
    for bad in ("32", "0x28x28", "ax28x28", "2x28x28", "", "1x2x3x4"):
        with pytest.raises(ConfigError, match="--input-size"):
            parse_input_size(bad)


@given(st.lists(st.floats(0.01, 10, allow_nan=False), min_size=1, max_size=3))
def test_flags_round_trip(values):
    mean = tuple(round(v, 4) for v in values)
    text = ",".join(str(v) for v in mean)
    assert parse_channel_values(text, "--mean") == mean
    flags = normalisation_flags(mean, mean).split()
    again = spec_from_flags(None, flags[1], flags[3])
    assert again.mean == (mean if len(set(mean)) > 1 else mean[:1])


def test_mean_without_std_is_refused():
    with pytest.raises(ConfigError, match="--std is missing"):
        spec_from_flags(None, "0.5", None)
    with pytest.raises(ConfigError, match="positive"):
        spec_from_flags(None, "0", "0")


def test_run_json_entry_scalar_and_per_channel():
    assert spec_from_meta({"shape": [1, 28, 28], "mean": 0.1307, "std": 0.3081}) == InputSpec(
        (1, 28, 28), (0.1307,), (0.3081,))
    spec = spec_from_meta({"shape": [3, 32, 32], "mean": [0.49, 0.48, 0.45],
                           "std": [0.25, 0.24, 0.26]})
    assert spec.mean == (0.49, 0.48, 0.45)
    for bad in ({"shape": [3, 32]}, {"shape": "3x32x32"}, {"mean": "x", "std": 1},
                {"mean": [0.5, "a"], "std": 1}):
        with pytest.raises(ConfigError, match="run.json"):
            spec_from_meta(bad)


def rgb_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))


def test_channels_come_from_the_first_conv_and_size_from_the_data():
    shape, mean, std, notes = resolve_input(InputSpec(), rgb_net(), (3, 32, 40), "folder-x")
    assert shape == (3, 32, 40)
    assert (mean, std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert any("first convolution" in n for n in notes)
    assert any("32x40" in n for n in notes)
    assert any("ImageNet" in n for n in notes)


def test_a_channel_mismatch_names_both_shapes_and_the_flag():
    with pytest.raises(ConfigError) as err:
        resolve_input(InputSpec(), rgb_net(), (1, 28, 28), "mnist:test", "net")
    msg = str(err.value)
    assert "reads 3 channel(s)" in msg and "1x28x28" in msg and "--input-size 3x28x28" in msg


def test_a_declared_per_channel_normalisation_must_fit_the_channels():
    spec = spec_from_flags(None, "0.5,0.5", "0.2,0.2")
    with pytest.raises(ConfigError, match="--mean has 2 values"):
        resolve_input(spec, rgb_net(), (3, 8, 8))


def test_prepare_normalises_each_channel():
    from models.checkpoint import LoadedModel

    m = LoadedModel(rgb_net(), "x", declared=spec_from_flags("3x2x2", "0.5,0,0.25", "0.5,1,2"))
    m.settle_input((3, 2, 2))
    pixels = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = m.prepare(pixels)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 1.0, 0.375]))
