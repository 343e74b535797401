"""analysis/registry.py: the step registry, typed configs and their errors."""

from __future__ import annotations

import dataclasses

import pytest

from analysis.registry import (
    STEPS,
    Column,
    Step,
    all_steps,
    column_info,
    get_step,
    make_config,
    register,
)
from core.errors import ConfigError

CORE = {"inference", "mc_dropout", "pixel_centroids", "centroids", "neighbors", "umap", "tsne",
        "attribution"}


def test_builtin_steps_are_registered_with_known_requirements():
    names = set(all_steps())
    assert CORE <= names
    for name in names:
        step = get_step(name)
        assert step.name == name and dataclasses.is_dataclass(step.Config)
        assert set(step.requires) <= names, name
    assert get_step("umap").requires == ("inference", "neighbors")


def test_unknown_step_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="Unknown analysis step 'pca'. Valid steps: .*centroids"):
        get_step("pca")


def test_make_config_overrides_and_unknown_fields():
    assert make_config("neighbors", {"k": 5}).k == 5
    assert make_config("neighbors").k == 10
    with pytest.raises(ConfigError, match="Step 'neighbors' has no option\\(s\\) kk; valid: k"):
        make_config("neighbors", {"kk": 5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_config("neighbors").k = 3  # configs are part of cache keys: immutable


def test_registering_a_name_twice_is_refused():
    cls = STEPS["inference"]
    with pytest.raises(ValueError, match="registered twice"):
        register(cls)


def test_column_info_finds_a_declared_column_and_its_head_variant():
    class Declaring(Step):
        name = "test_declaring_step"
        declares = (Column("test_thing", "numeric", unit="px", description="A thing.",
                           worse="higher", interpretable=True),)

    register(Declaring)
    try:
        col = column_info("test_thing")
        assert col is not None and col.unit == "px" and col.worse == "higher"
        assert column_info("test_thing@digit") is col  # per-head names fall back to the base
        assert column_info("no_such_column") is None
    finally:
        del STEPS["test_declaring_step"]
    assert column_info("test_thing") is None


def test_column_refuses_unknown_kinds_and_directions():
    with pytest.raises(ValueError, match="kind 'float'"):
        Column("x", "float")
    with pytest.raises(ValueError, match="worse must be"):
        Column("x", "numeric", worse="up")
