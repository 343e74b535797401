"""What an insight says and the evidence behind it (the records; :mod:`analysis.insights`
collects them, :mod:`analysis.explain` computes the evidence)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Evidence:
    """One piece of metadata that distinguishes an insight's samples.

    Attributes
    ----------
    column : str
        The table column (``stroke_thickness``, ``label``...).
    label : str
        Plain words for it ("stroke thickness").
    unit : str
        Its unit ("px"), empty when it has none.
    inside, outside : float or str
        Typical value inside the group vs outside (the mean for a number, the
        most over-represented value for a class column).
    score : float
        Mutual information (nats) between the binned column and membership;
        the evidence list is sorted by it, highest first.
    lift : float
        Share of the group among samples with the over-represented value (or
        bin) divided by the group's overall share; 1 = no association.
    condition : str
        The over-represented value or bin as a pandas query condition
        (``label == 7``, ``stroke_thickness < 1.9``); empty when unknown.
    given : str
        ``"label"`` when the column is compared *within the classes*: ``score``
        is the mutual information given the class, ``outside`` the typical value
        of the samples of the same classes outside, ``condition`` a class and a
        bin of that class (``label == 7 and stroke_thickness < 2.1``), ``lift``
        over the group's share of that class; empty when compared with all
        samples (see :func:`analysis.explain.explain`).
    """

    column: str
    label: str
    unit: str
    inside: float | str
    outside: float | str
    score: float
    lift: float = 1.0
    condition: str = ""
    given: str = ""


@dataclass(frozen=True)
class Insight:
    """A group of samples that deserves attention, with the numbers that say why.

    Attributes
    ----------
    kind : str
        ``slice``, ``cluster``, ``label_issues``, ``duplicates``, ``leakage``,
        ``outliers``, ``class_imbalance`` or ``ood``.
    title : str
        Plain words ("Thin 7s are read as 1s").
    severity : str
        One of :data:`analysis.insights.SEVERITIES`.
    sample_ids : tuple of str
        The samples of the group, worst first.
    n : int
    share : float
        ``n`` over the dataset's size.
    metrics : dict of str to (float, float)
        Metric name to (inside, outside): ``error_rate``, ``mean_loss``...
    stats : dict of str to float
        ``excess_errors`` (errors beyond the outside rate), ``p_value``,
        ``q_value`` (Benjamini-Hochberg over all groups tried)... as apply.
    explanation : tuple of Evidence
        Distinguishing metadata, most informative first.
    rule : str
        A pandas ``DataFrame.query`` expression over the sample table that
        reproduces the group when it is rule-defined (empty otherwise).
    suggestion : str
        What to do about it, in one sentence.
    """

    kind: str
    title: str
    severity: str
    sample_ids: tuple[str, ...]
    n: int
    share: float
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    explanation: tuple[Evidence, ...] = ()
    rule: str = ""
    suggestion: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        out = asdict(self)
        out["sample_ids"] = list(self.sample_ids)
        out["metrics"] = {k: list(v) for k, v in self.metrics.items()}
        return out
