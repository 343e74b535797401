"""One table of cases for every registered step (captum's habit): the steps' contract.

A full run (MC dropout T=3, both maps, an extra dataset, attribution and user
metadata) of the tiny trained CNN on 200 real test digits; then, for every
step the registry knows:

- each column it writes is declared, and each declared column is in the
  sample table with shape ``(N,)`` and the declared kind;
- changing any option of its config changes its cache key;
- a step that does not use the model gives the same result with other weights.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import registry
from analysis.registry import STEPS
from analysis.session import AnalysisSession
from cache import ArtifactStore
from core.datasets import load_dataset

# Made by the sample table from the inference targets (they need the dataset's classes).
TABLE_MADE = {"label", "label_name", "pred_name", "correct", "mc_correct"}

META_SOURCE = textwrap.dedent('''
    import numpy as np

    def ink(images, labels):
        """Share of pixels above half brightness."""
        return (images > 0.5).mean(axis=(1, 2, 3))

    functions = [ink]
''')


@pytest.fixture(scope="module")
def full_session(tiny_model, digits, data_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract-meta")
    (folder / "contract_meta.py").write_text(META_SOURCE)
    sys.path.insert(0, str(folder))
    ds = load_dataset(digits, "test", data_root=data_root, limit=200)
    fog = load_dataset("corrupt:fog", "test", base=ds, fallback=False,
                       image_shape=tiny_model.input_shape)
    store = ArtifactStore(tmp_path_factory.mktemp("contract-cache"))
    session = AnalysisSession(tiny_model, ds, store, "cpu", mc_samples=3,
                              projections=("umap", "tsne"), progress=False,
                              extra_datasets=[fog], attribution="saliency",
                              metadata="contract_meta:functions")
    session.run()
    yield session
    store.close()
    sys.path.remove(str(folder))


def builtin_steps() -> list[str]:
    return [n for n in registry.all_steps() if STEPS[n].__module__.startswith("analysis.steps.")]


def test_every_builtin_step_is_planned_by_the_full_run(full_session):
    planned = set(full_session.steps) | set(full_session.extra_steps)
    assert planned == set(builtin_steps())


def _engines_of(session, name):
    out = [session.engine] if name in session.steps else []
    return out + ([e for e in session.extras.values()] if name in session.extra_steps else [])


def _check_kind(col: registry.Column, values: pd.Series, n_classes: int) -> None:
    v = values.to_numpy()
    assert v.shape == (len(values),)
    if col.kind == "numeric":
        assert pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    elif col.kind == "class":
        assert pd.api.types.is_integer_dtype(values), values.dtype
        assert ((v >= -1) & (v < n_classes)).all()  # -1: none (e.g. no suggested label)
    elif col.kind == "bool":
        assert pd.api.types.is_bool_dtype(values) or set(np.unique(v[~pd.isna(v)])) <= {0, 1}
    elif col.kind in ("text", "id"):
        assert values.map(lambda x: isinstance(x, str)).all()


@pytest.mark.parametrize("name", builtin_steps())
def test_declared_columns_are_written_with_their_shape_and_kind(full_session, name):
    cls = STEPS[name]
    declared = {c.name: c for c in cls.declared()}
    for engine in _engines_of(full_session, name):
        written = engine.columns(name)
        n = len(engine.dataset)
        for col, values in written.items():
            if np.ndim(values) != 1:
                continue  # per-neighbour arrays (N, k) are not table columns
            base, _, head = col.partition("@")
            assert base in declared, f"{name} writes {col!r} without declaring it"
            assert bool(head) == declared[base].per_head, col
            assert np.shape(values) == (n,)
        table = full_session.table(None if engine is full_session.engine
                                   else engine.dataset.key)
        for col in declared.values():
            if col.name in TABLE_MADE or col.name == "total_loss":
                continue
            if col.when and col.name not in table:
                continue  # e.g. colour measures of grey images; declared with their condition
            assert col.name in table, f"{name} declares {col.name!r}; the table lacks it"
            _check_kind(col, table[col.name], full_session.task.heads[0].num_classes)


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.5
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return (*value, "x")
    raise TypeError(type(value))


@pytest.mark.parametrize("name", builtin_steps())
def test_a_changed_option_changes_the_key(full_session, name):
    from analysis.engine import Engine

    engine = _engines_of(full_session, name)[0]
    base = engine.key(name)
    fields = dataclasses.fields(STEPS[name].Config)
    if not fields:
        pytest.skip(f"{name} has no options")
    for f in fields:
        current = getattr(engine.config(name), f.name)
        options = {**engine.options, name: {**engine.options.get(name, {}),
                                            f.name: _changed(current)}}
        other = Engine(engine.model, engine.dataset, engine.store, engine.device, options,
                       reference=engine.reference, progress=False)
        assert other.key(name) != base, f"{name}.{f.name} does not change the key"


@pytest.fixture(scope="module")
def other_weights(tiny_run):
    """The same architecture with different (re-initialised) weights."""
    from models.checkpoint import load_model

    model = load_model(tiny_run)
    torch.manual_seed(123)
    with torch.no_grad():
        for p in model.module.parameters():
            p.add_(torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", [n for n in builtin_steps() if not STEPS[n].uses_model])
def test_a_step_that_does_not_use_the_model_ignores_the_weights(full_session, other_weights,
                                                                name):
    engine = _engines_of(full_session, name)[0]
    other_weights.bind_task(engine.dataset.class_names)
    step = STEPS[name]()
    inputs = {r: engine.get(r) for r in step.requires}
    reference = ({r: engine.reference.get(r) for r in step.uses_reference}
                 if engine.reference else {})
    ctx = registry.StepContext(other_weights, engine.dataset, engine.device, inputs, reference,
                               progress=False)
    again = step.run(ctx, engine.config(name))
    first = engine.get(name)
    assert set(again.keys()) == set(first.keys())
    for key in first.keys():
        np.testing.assert_array_equal(again[key], first[key], err_msg=f"{name}: {key}")
