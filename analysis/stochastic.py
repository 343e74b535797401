"""A model split into its deterministic trunk and its stochastic tail (for MC dropout).

The model is traced with ``torch.fx``; every node downstream of a dropout
(a module or a functional call, see :data:`DROPOUT_FUNCTIONS`) is the
*stochastic tail*, everything else the *trunk*. The trunk's values the tail
reads are the *boundary*. Both halves are generated code (``GraphModule``)
sharing the model's submodules, so hooks and train/eval flags apply to them.

MC dropout runs the trunk once and the tail T times. The ``inference`` step
can keep the boundary of each sample (:func:`trunk_shapes` decides whether it
is small enough), and MC dropout then runs only the tail: with dropout off the
tail gives exactly the model's output, so one trunk pass serves both steps.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

from analysis.forward import embedding_target, example_inputs
from models.checkpoint import LoadedModel

log = logging.getLogger(__name__)
# The most values per sample the inference step keeps of the trunk's boundary: the
# dropout usually sits in the MLP head (mnist_cnn: 128 values, 512 MB of cache for
# 1,000,000 samples); at most 4 GB per 1,000,000 samples in float32 (8 in float64).
KEEP_MAX = 1024
# Boundary dtypes that the columnar cache stores exactly.
_KEEPABLE = (torch.float16, torch.float32, torch.float64)

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)
# Functional dropouts; each takes ``training`` (F.*) or ``train`` (torch.*) third.
DROPOUT_FUNCTIONS = frozenset({
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    torch.dropout, torch.dropout_, torch.feature_dropout, torch.feature_dropout_,
    torch.alpha_dropout, torch.alpha_dropout_, torch.feature_alpha_dropout,
    torch.feature_alpha_dropout_,
})


def dropout_modules(module: nn.Module) -> list[nn.Module]:
    """The dropout modules of ``module`` (functional calls are not modules: see
    :func:`analysis.steps.mc_dropout.has_dropout`)."""
    return [m for m in module.modules() if isinstance(m, DROPOUT_TYPES)]


def functional_dropout_nodes(graph_module: GraphModule) -> list[Node]:
    """The ``call_function`` nodes of a traced graph that are functional dropouts."""
    return [n for n in graph_module.graph.nodes
            if n.op == "call_function" and n.target in DROPOUT_FUNCTIONS]


class StochasticSplit:
    """A traced model split into the deterministic trunk and the stochastic tail.

    Parameters
    ----------
    module : nn.Module
        Must be traceable by ``torch.fx`` and contain dropout (modules or calls).
    leaves : tuple of nn.Module
        Submodules kept as single nodes (see :func:`_trace`).
    """

    def __init__(self, module: nn.Module, leaves: tuple[nn.Module, ...] = ()) -> None:
        self.graph_module: GraphModule = _trace(module, leaves)
        modules = dict(self.graph_module.named_modules())
        nodes = list(self.graph_module.graph.nodes)
        stochastic: set[Node] = set()
        for node in nodes:
            # A kept-whole leaf (e.g. the embedding layer) is stochastic if it holds a dropout.
            is_drop = (node.op == "call_module" and _holds_dropout(modules[node.target])) or (
                node.op == "call_function" and node.target in DROPOUT_FUNCTIONS)
            if is_drop or any(a in stochastic for a in node.all_input_nodes):
                stochastic.add(node)
        self.tail = [n for n in nodes if n in stochastic or n.op == "output"]
        self.trunk = [n for n in nodes if n not in stochastic and n.op != "output"]
        # The trunk's values the tail reads, in graph order (the trunk's outputs, the
        # tail's inputs).
        reads = {a for n in self.tail for a in n.all_input_nodes if a not in stochastic}
        self.boundary = [n for n in nodes if n in reads]
        # Share of module calls that run T times (the rest run once).
        self.tail_fraction = len([n for n in self.tail if n.op == "call_module"]) / max(
            1, len([n for n in nodes if n.op == "call_module"]))
        self.trunk_module, self.tail_module = self._compile()

    def _compile(self) -> tuple[GraphModule, GraphModule]:
        """The trunk and the tail as two generated ``GraphModule`` s sharing the model's
        submodules (and so its hooks and train/eval flags).

        ``torch.fx.Interpreter`` ran the same nodes one by one at about 1.6x the
        time of the model's own forward pass (mnist_cnn, 2 CPU cores); generated
        code runs as fast as the traced model.
        """
        trunk = torch.fx.Graph()
        copied: dict[Node, Node] = {}
        for node in self.trunk:
            copied[node] = trunk.node_copy(node, lambda a: copied[a])
        trunk.output(tuple(copied[n] for n in self.boundary))
        tail = torch.fx.Graph()
        copied = {n: tail.placeholder(f"boundary_{i}") for i, n in enumerate(self.boundary)}
        for node in self.tail:
            copied[node] = tail.node_copy(node, lambda a: copied[a])
        return GraphModule(self.graph_module, trunk), GraphModule(self.graph_module, tail)

    def trunk_env(self, *args: torch.Tensor) -> dict[Node, object]:
        """Run the deterministic trunk once on the ``forward`` arguments; keep only
        the values the tail reads."""
        return dict(zip(self.boundary, self.trunk_module(*args), strict=True))

    def tail_pass(self, boundary_env: dict[Node, object]) -> object:
        """One stochastic pass of the tail from the trunk's values (the model's output).

        The tail gets copies of the boundary tensors: an in-place op in the tail
        (``nn.Dropout(inplace=True)``, as in torchvision's EfficientNet and
        MobileNetV3 heads, or an in-place activation after a dropout) would
        otherwise change them for the next pass.
        """
        return self.tail_module(*(_copy(boundary_env[n]) for n in self.boundary))

    @property
    def boundary_names(self) -> list[str]:
        """The boundary nodes' names, in order (the same model traces to the same names)."""
        return [n.name for n in self.boundary]


def _copy(value: object) -> object:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _trace(module: nn.Module, leaves: tuple[nn.Module, ...]) -> GraphModule:
    """``torch.fx`` trace keeping ``leaves`` as single ``call_module`` nodes.

    fx inlines container modules; the embedding layer must stay a node so its
    forward hook fires inside the trunk/tail split.
    """
    keep = {id(m) for m in leaves}
    owner = threading.get_ident()

    class Tracer(torch.fx.Tracer):
        # fx patches nn.Module.__call__ and __getattr__ for the whole process while it
        # traces: another thread's forward pass would be recorded into this graph (or
        # fail with "module is not installed as a submodule"). Calls from other threads
        # run untraced, and traces take turns (a second patch would hide the first).
        def call_module(self, m, forward, args, kwargs):
            if threading.get_ident() != owner:
                return forward(*args, **kwargs)
            return super().call_module(m, forward, args, kwargs)

        def getattr(self, attr, attr_val, parameter_proxy_cache):
            if threading.get_ident() != owner:
                return attr_val
            return super().getattr(attr, attr_val, parameter_proxy_cache)

        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return id(m) in keep or super().is_leaf_module(m, qualname)

    with _TRACE_LOCK:
        return GraphModule(module, Tracer().trace(module))


_TRACE_LOCK = threading.RLock()


def _holds_dropout(module: nn.Module) -> bool:
    """Whether a module run as one graph node draws dropout masks.

    torch.nn's own leaves hold no functional dropout; a kept-whole user module
    is traced on its own to find any (one fx cannot trace counts as holding one,
    which only costs speed: it then runs in the tail).
    """
    if dropout_modules(module):
        return True
    if torch.fx.Tracer().is_leaf_module(module, ""):  # torch.nn's own layers
        return False
    try:
        return bool(functional_dropout_nodes(_trace(module, ())))
    except Exception:  # fx raises many types on untraceable code
        return True


def _calls_module(split: StochasticSplit, target: nn.Module, nodes=None) -> bool:
    """Whether ``target`` runs as a ``call_module`` node of the traced graph (of
    ``nodes`` when given)."""
    gm = split.graph_module
    return any(n.op == "call_module" and gm.get_submodule(n.target) is target
               for n in (gm.graph.nodes if nodes is None else nodes))


def make_split(model: LoadedModel, quiet: bool = False) -> StochasticSplit | None:
    """The trunk/tail split of ``model``, or ``None`` when there is none to use: fx cannot
    trace the model, or its embedding layer is not a node of the trace (MC dropout then
    runs T full passes of the model). ``quiet``: say why only at debug level."""
    say = log.debug if quiet else log.info
    try:
        split = StochasticSplit(model.module, leaves=(embedding_target(model)[0],))
    except Exception as exc:  # fx raises many types on untraceable code
        say("torch.fx cannot trace %s (%s); MC dropout runs T full passes", model.arch, exc)
        return None
    if not _calls_module(split, embedding_target(model)[0]):
        # fx inlines container modules (an nn.Sequential ``features``), so a hook on
        # the embedding layer would never fire inside the split: run full passes.
        say("embedding layer of %s is not a leaf of the traced graph; MC dropout "
            "runs T full passes", model.arch)
        return None
    return split


def embedding_in_tail(split: StochasticSplit, model: LoadedModel) -> bool:
    """Whether the embedding layer runs in the tail (its output then varies with the masks)."""
    return _calls_module(split, embedding_target(model)[0], split.tail)


def trunk_shapes(split: StochasticSplit, model: LoadedModel, device: torch.device
                 ) -> list[list[int]] | None:
    """The per-sample shapes of the boundary values, when every one can be kept per sample.

    Two dry runs of the trunk on blank batches of 2 and 3 samples: every boundary
    value must be a floating tensor whose first dimension is the batch (not, say,
    a size read off the input), and all of them together at most
    :data:`KEEP_MAX` values per sample. ``None`` otherwise.
    """
    shapes = None
    with torch.inference_mode():
        for batch in (2, 3):
            args = tuple(a.to(device) for a in example_inputs(model, batch))
            values = split.trunk_module(*args)
            if not all(isinstance(v, torch.Tensor) and v.dtype in _KEEPABLE and v.ndim >= 1
                       and v.shape[0] == batch for v in values):
                return None
            got = [list(v.shape[1:]) for v in values]
            if shapes is not None and got != shapes:
                return None
            shapes = got
    if shapes is None or sum(int(np.prod(s, dtype=np.int64)) for s in shapes) > KEEP_MAX:
        return None
    return shapes


def kept_trunk(values: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    """Copies of the boundary values of a batch, as the ``trunk:I`` arrays the inference
    step keeps (taken before the tail runs: the tail may change them in place)."""
    return {f"trunk:{i}": v.detach().cpu().numpy().copy() for i, v in enumerate(values)}


def trunk_from_arrays(split: StochasticSplit, arrays, start: int, stop: int,
                      device: torch.device) -> dict[Node, torch.Tensor]:
    """The boundary of samples ``start:stop`` from kept ``trunk:I`` arrays (as
    :meth:`StochasticSplit.trunk_env` gives it)."""
    return {node: torch.as_tensor(np.array(arrays[f"trunk:{i}"][start:stop])).to(device)
            for i, node in enumerate(split.boundary)}
