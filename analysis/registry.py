"""The registry of analysis steps.

A step is a small class with a ``name``, a typed ``Config`` dataclass, the
names of the steps it ``requires``, a code ``version`` (bump it when the
step's output changes) and ``run(ctx, config) -> Artifact``. ``columns``
turns its artifact into per-sample columns for the sample table.

Steps that do not read the model (``uses_model = False``) are keyed without
the model's fingerprint, so a new checkpoint reuses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from analysis.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from analysis.datasets import ImageDataset
    from cache import Artifact
    from models.checkpoint import LoadedModel


@dataclass
class StepContext:
    """What a step's ``run`` may use.

    Attributes
    ----------
    model : LoadedModel
    dataset : ImageDataset
    device : torch.device
    inputs : dict of str to Artifact
        The artifacts of the steps named in ``requires``.
    reference : dict of str to Artifact
        Artifacts of the in-distribution dataset when this dataset is an
        *extra* (out-of-distribution) one; empty otherwise.
    progress : bool
        Show tqdm bars.
    """

    model: LoadedModel
    dataset: ImageDataset
    device: torch.device
    inputs: dict[str, Artifact] = field(default_factory=dict)
    reference: dict[str, Artifact] = field(default_factory=dict)
    progress: bool = True


class Step:
    """Base class of analysis steps (see the module docstring)."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    requires: ClassVar[tuple[str, ...]] = ()
    uses_model: ClassVar[bool] = True
    # Steps whose key includes the in-distribution (reference) artifacts.
    uses_reference: ClassVar[tuple[str, ...]] = ()

    @dataclass(frozen=True)
    class Config:
        pass

    def run(self, ctx: StepContext, config: Any) -> Artifact:  # pragma: no cover - abstract
        raise NotImplementedError

    def key_extra(self, model: LoadedModel) -> Any:
        """Anything more about ``model`` that the step's result depends on (``None``:
        nothing; then the key is as it was before this hook existed)."""
        return None

    def columns(self, artifact: Artifact, config: Any) -> dict[str, np.ndarray]:
        """Per-sample columns (each ``(N,)``) for the sample table; none by default."""
        return {}


STEPS: dict[str, type[Step]] = {}


def register(cls: type[Step]) -> type[Step]:
    """Class decorator adding a step to :data:`STEPS`."""
    if cls.name in STEPS:
        raise ValueError(f"step {cls.name!r} registered twice")
    STEPS[cls.name] = cls
    return cls


def get_step(name: str) -> Step:
    """An instance of the step called ``name``."""
    _load_builtin_steps()
    try:
        return STEPS[name]()
    except KeyError:
        raise ConfigError(f"Unknown analysis step {name!r}. Valid steps: "
                          f"{', '.join(sorted(STEPS))}.") from None


def make_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The step's ``Config`` with ``overrides`` applied; unknown fields are an error."""
    step = get_step(name)
    fields = step.Config.__dataclass_fields__
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ConfigError(f"Step {name!r} has no option(s) {', '.join(sorted(unknown))}; "
                          f"valid: {', '.join(fields) or 'none'}.")
    return step.Config(**overrides)


def all_steps() -> list[str]:
    _load_builtin_steps()
    return list(STEPS)


def _load_builtin_steps() -> None:
    # Importing the modules registers their steps; done lazily so importing the
    # registry stays cheap.
    from analysis.steps import (  # noqa: F401  # noqa: F401
        attribution,
        centroids,
        inference,
        mc_dropout,
        neighbors,
        ood,
        preprocessing,
        projection,
    )
