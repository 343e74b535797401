"""``mc_dropout``: Monte-Carlo dropout uncertainty with a once-computed deterministic trunk.

The model is traced with ``torch.fx``; every node downstream of a dropout is
the *stochastic tail*, everything else the *trunk*. The trunk runs once per
batch and only the tail runs T times. With the same random stream this is
exactly T full passes (the trunk's output does not depend on the masks), at a
fraction of the cost when the dropout sits late (as in ``mnist_cnn``). Models
that ``torch.fx`` cannot trace fall back to T full passes. The split is
:class:`analysis.stochastic.StochasticSplit`. The ``inference`` step keeps each
sample's trunk output when the model has dropout and that output is small (see
:func:`analysis.steps.inference.keepable_trunk`), and this step then reads it
instead of running the trunk again: one trunk pass serves both steps.

Which dropout is switched on
----------------------------
Every dropout, whether a module (``nn.Dropout*``, ``nn.AlphaDropout``) or a
functional call (``F.dropout``, ``F.dropout1d/2d/3d``, ``F.alpha_dropout``,
``F.feature_alpha_dropout``, ``torch.dropout`` and its ``feature_``/``alpha_``
and in-place variants, see :data:`DROPOUT_FUNCTIONS`). Dropout modules are
put in train mode (batch-norm and the rest stay in eval). Functional calls
read ``self.training``, a Python bool, so they cannot be switched by a module
flag without also switching batch-norm; and ``torch.fx`` bakes the bool into
the traced graph (``training=False`` when traced in eval). Instead the passes
run under :class:`ForceDropout`, a ``TorchFunctionMode`` that rewrites the
``training``/``train`` argument of those calls to ``True``. Torch function
modes are thread-local, so this is exact (the very call the model makes, with
one argument changed: the same random draws as with the model in train mode)
and it touches neither the module nor any process-wide function: other threads
running other models (or this one, under :func:`analysis.forward.model_lock`)
are unaffected. Patching ``torch.nn.functional.dropout`` would be
process-wide; setting ``training`` on every non-batch-norm submodule would miss
any other train-dependent layer. The same mode serves both the traced tail
(its functional dropout nodes are marked stochastic) and the fallback passes.
Limits: a call made *inside* another overridable function (e.g. the attention
dropout of ``F.multi_head_attention_forward``) is not seen, and a hard-coded
``F.dropout(x, p, training=False)`` is switched on too (it reads the same as
``training=self.training`` once traced).

Random stream
-------------
Dropout draws from the process-wide torch generator (``F.dropout`` takes no
generator), so the seeded section holds one process-wide lock
(:func:`seeded_rng`): two MC jobs in two threads never interleave their draws,
and the caller's stream is restored afterwards.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from analysis.executor import BatchJob
from analysis.forward import (
    auto_batch_size,
    batch_args,
    capture_embedding,
    example_inputs,
    model_arrays,
    model_lock,
)
from analysis.registry import Column, Plan, Step, StepContext, register
from analysis.stochastic import (  # noqa: F401 (DROPOUT_TYPES: this module's public names)
    DROPOUT_FUNCTIONS,
    DROPOUT_TYPES,
    StochasticSplit,
    _trace,
    dropout_modules,
    embedding_in_tail,
    functional_dropout_nodes,
    make_split,
    trunk_from_arrays,
)
from cache import Artifact
from core.errors import ConfigError
from core.memory import release_mapped_pages
from core.tasks import Task, head_key
from models.checkpoint import LoadedModel

log = logging.getLogger(__name__)
_RNG_LOCK = threading.Lock()


class ForceDropout(TorchFunctionMode):
    """Within the block, this thread's functional dropout calls run as in training.

    ``calls`` counts the dropout calls seen; ``force=False`` only counts them.
    """

    def __init__(self, force: bool = True) -> None:
        super().__init__()
        self.force = force
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in DROPOUT_FUNCTIONS:
            self.calls += 1
            if self.force:
                if "training" in kwargs or "train" in kwargs:
                    kwargs = {**kwargs, ("training" if "training" in kwargs else "train"): True}
                elif len(args) > 2:
                    args = (*args[:2], True, *args[3:])
                # else: the F.* default, training=True
        return func(*args, **kwargs)


@contextmanager
def dropout_active(module: nn.Module) -> Iterator[None]:
    """Every dropout on: modules in train mode, functional calls forced (this thread only).

    Batch-norm and every other module stay in eval.
    """
    drops = [m for m in dropout_modules(module) if not m.training]
    for m in drops:
        m.train()
    try:
        with ForceDropout():
            yield
    finally:
        for m in drops:
            m.eval()


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """The process-wide torch stream seeded with ``seed``, held by this thread alone.

    One lock for the whole process: dropout cannot take a ``torch.Generator``,
    so two seeded sections in two threads would otherwise interleave their
    draws. The caller's random state (CPU, and every CUDA device when
    ``device`` is CUDA) is restored on exit.
    """
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with _RNG_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def has_dropout(model: LoadedModel | nn.Module,
                example_args: tuple[torch.Tensor, ...] | None = None) -> bool:
    """Whether MC dropout has anything to switch on in ``model``.

    True when it holds a dropout module, or when its ``torch.fx`` trace calls a
    functional dropout. A model fx cannot trace gets dry forward passes of one
    sample that count the dropout calls: on ``example_args``, or for a
    ``LoadedModel`` on a blank, an all-ones and a noise image (normalised
    space); a call in a branch none of them takes is missed.

    Raises
    ------
    ValueError
        A bare ``nn.Module`` that fx cannot trace, without ``example_args``.
    """
    module = model.module if isinstance(model, LoadedModel) else model
    return bool(dropout_modules(module)) or calls_functional_dropout(model, example_args)


def calls_functional_dropout(model: LoadedModel | nn.Module,
                             example_args: tuple[torch.Tensor, ...] | None = None) -> bool:
    """Whether ``model``'s forward calls a functional dropout (see :func:`has_dropout`)."""
    module = model.module if isinstance(model, LoadedModel) else model
    try:
        graph_module = _trace(module, ())
    except Exception as exc:  # fx raises many types on untraceable code
        log.debug("torch.fx cannot trace the model (%s); dry forward passes instead", exc)
    else:
        return bool(functional_dropout_nodes(graph_module))
    if example_args is not None:
        probes = [tuple(example_args)]
    elif isinstance(model, LoadedModel):
        probes = _probe_inputs(model)
    else:
        raise ValueError("has_dropout: torch.fx cannot trace this module; pass "
                         "example_args (its forward arguments) for a dry pass.")
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    counter = ForceDropout(force=False)
    lock = model_lock(model) if isinstance(model, LoadedModel) else threading.RLock()
    with lock, torch.inference_mode(), counter:
        for args in probes:
            module(*(a.to(device) for a in args))
    return counter.calls > 0


def _probe_inputs(model: LoadedModel) -> list[tuple[torch.Tensor, ...]]:
    """One-sample ``forward`` arguments whose image is blank, all ones, then noise."""
    blank = example_inputs(model)
    pos = next(i for i, inp in enumerate(model.task.inputs) if inp.kind == "image")
    noise = torch.randn(blank[pos].shape, generator=torch.Generator().manual_seed(0))
    probes = []
    for image in (blank[pos], torch.ones_like(blank[pos]), noise):
        args = list(blank)
        args[pos] = image
        probes.append(tuple(args))
    return probes


def mc_statistics(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Uncertainty statistics from ``(T, B, C)`` per-pass probabilities.

    Returns
    -------
    dict
        ``mean_probs`` (B, C); ``pred`` (B,); ``entropy`` (B,) of the mean
        (predictive entropy, in nats, higher = more uncertain);
        ``mutual_info`` (B,) = entropy - mean per-pass entropy (epistemic part);
        ``top_var`` (B,) variance over passes of the probability of the MC
        prediction; ``uncertainty`` (B,) = 1 - max mean probability.
    """
    mean = probs.mean(0)
    log_mean = torch.log(mean.clamp_min(1e-12))
    entropy = -(mean * log_mean).sum(1)
    per_pass = -(probs * torch.log(probs.clamp_min(1e-12))).sum(2).mean(0)
    conf, pred = mean.max(1)
    top = probs.gather(2, pred[None, :, None].expand(probs.shape[0], -1, 1)).squeeze(2)
    return {
        "mean_probs": mean,
        "pred": pred,
        "entropy": entropy,
        "mutual_info": (entropy - per_pass).clamp_min(0.0),
        "top_var": top.var(0, unbiased=False),
        "uncertainty": 1.0 - conf,
    }


def batch_seed(seed: int, start: int) -> int:
    """The torch seed of the batch whose first sample is ``start``: a function of the
    configured seed and the batch alone, so batches may run in any order, anywhere."""
    return int(np.random.SeedSequence([seed, start]).generate_state(1, np.uint64)[0] >> 1)


def mc_batches(model: LoadedModel, arrays: dict[str, np.ndarray], device: torch.device,
               samples: int, seed: int, kept_trunk: bool = False):
    """The per-batch work of :class:`MCDropout` (a :class:`~analysis.executor.BatchJob`'s
    ``build``): ``fn(start, stop)`` gives the statistics of :func:`mc_statistics` per head
    and ``mean_embedding``, each ``(B, ...)`` float32; the random stream of a batch is
    seeded by :func:`batch_seed`.

    ``arrays`` are the model's inputs (:func:`~analysis.forward.model_arrays`), or with
    ``kept_trunk`` the ``trunk:I`` arrays the inference step kept (and its
    ``embedding`` when that is made in the trunk): then only the tail runs.
    """
    module = model.module.to(device).eval()
    task = model.task
    split = make_split(model)
    if kept_trunk and split is None:
        raise RuntimeError("mc_dropout: the kept trunk needs the model's torch.fx split")

    def fn(start: int, stop: int) -> dict[str, np.ndarray]:
        if kept_trunk:
            args, env = (), trunk_from_arrays(split, arrays, start, stop, device)
        else:
            args, env = batch_args(model, arrays, start, stop, device), None
        with seeded_rng(batch_seed(seed, start), device), torch.inference_mode(), \
                dropout_active(module), capture_embedding(model) as captured:
            probs, emb = MCDropout._passes(module, task, split, args, samples, captured, env)
        if emb is None:  # the embedding is made in the trunk: the inference step's
            emb = torch.as_tensor(np.array(arrays["embedding"][start:stop]))
        stats = {}
        for head, head_probs in probs.items():
            for key, value in mc_statistics(head_probs).items():
                stats[head_key(key, head)] = value
        stats["mean_embedding"] = emb
        return {k: v.float().cpu().numpy() for k, v in stats.items()}

    return fn


@register
class MCDropout(Step):
    """T stochastic passes with only dropout active, every head at once.

    Artifact arrays (``h`` = each head of the model's task)
    ---------------------------------------------------------
    mean_probs@h : (N, C_h) float32
    pred@h : (N,) int64
    entropy@h, mutual_info@h, top_var@h, uncertainty@h : (N,) float32
        (higher = more uncertain)
    mean_embedding : (N, D) float32, the embedding averaged over the T passes
    """

    name = "mc_dropout"
    # 2: per-head arrays. Not bumped for functional dropout: models with dropout modules
    # only draw the very same masks as before (bit-identical results, same keys).
    # 3: the random stream is seeded per batch (batch_seed of the seed and the batch's
    # first sample) instead of once per run, so the masks no longer depend on the order
    # the batches run in: the Ray executor's workers give the in-process results.
    # Not bumped for the trunk kept by the inference step: the same trunk values and the
    # same random stream give the very same results (tests/analysis/steps/test_mc_dropout.py).
    version = 3
    requires = ("inference",)
    order = 20
    declares = (
        Column("mc_pred", "class", words="prediction", per_head=True, mc=True,
               description="The class of highest mean probability over the T passes."),
        Column("mc_correct", "bool", words="prediction right", per_head=True, mc=True,
               description="Whether the MC-dropout prediction equals the label."),
        Column("mc_confidence", "numeric", "probability", worse="lower", per_head=True,
               mc=True, words="mean confidence",
               description="The highest mean class probability over the T passes."),
        Column("mc_uncertainty", "numeric", "1 - max p", worse="higher", per_head=True,
               mc=True, score=True, words="least confident",
               description="One minus the highest mean class probability."),
        Column("mc_margin", "numeric", "top-2 probability gap", worse="lower", per_head=True,
               mc=True, words="margin over the runner-up",
               description="Highest minus second-highest mean class probability."),
        Column("mc_neg_margin", "numeric", "top-2 probability gap, negated", worse="higher",
               per_head=True, mc=True, score=True, words="- top-2 margin",
               description="Minus the MC margin, so that higher is less sure."),
        Column("mc_entropy", "numeric", "nats", worse="higher", per_head=True, mc=True,
               score=True, words="predictive entropy",
               description="Entropy of the mean class distribution (total uncertainty)."),
        Column("mc_mutual_info", "numeric", "nats", worse="higher", per_head=True, mc=True,
               score=True, words="mutual information",
               description="Entropy of the mean minus the mean entropy (model uncertainty)."),
        Column("mc_top_var", "numeric", "variance", worse="higher", per_head=True, mc=True,
               words="variance of the top class",
               description="Variance over the passes of the top class's probability."),
    )

    @classmethod
    def planned(cls, plan: Plan) -> bool:
        return plan.mc_samples > 0

    @classmethod
    def plan_options(cls, plan: Plan) -> dict:
        return {"samples": plan.mc_samples}

    @dataclass(frozen=True)
    class Config:
        samples: int = 20
        seed: int = 0
        batch_size: int = 0  # 0: chosen for the device (see forward.auto_batch_size)

    def key_extra(self, model: LoadedModel) -> str | None:
        # Functional dropout was ignored before it was switched on (a model mixing
        # nn.Dropout with F.dropout got too little noise): such models get new keys,
        # models with dropout modules only keep theirs.
        return "functional-dropout" if calls_functional_dropout(model) else None

    def run(self, ctx: StepContext, config: Config) -> Artifact:
        task = ctx.model.task
        if not has_dropout(ctx.model):
            raise ConfigError(f"MC dropout needs dropout, and {ctx.model.arch} has none (no "
                              "nn.Dropout modules and no functional dropout calls). Pass "
                              "--mc-samples 0 to skip MC dropout.")
        if config.samples < 1:
            raise ConfigError(f"--mc-samples must be at least 1, got {config.samples}.")
        split = make_split(ctx.model)  # here for the summary; each worker makes its own
        n = len(ctx.dataset)
        inference = ctx.inputs["inference"]
        shapes = inference.summary.get("trunk_shapes")
        # the kept boundary is this split's: the same nodes, in the same order
        kept = (split is not None and shapes is not None
                and inference.summary.get("trunk_nodes") == split.boundary_names)
        if kept:
            inputs = {f"trunk:{i}": inference[f"trunk:{i}"] for i in range(len(shapes))}
            if not embedding_in_tail(split, ctx.model):
                inputs["embedding"] = inference["embedding"]
        else:
            inputs = model_arrays(ctx.model, ctx.dataset)
        job = BatchJob(mc_batches, inputs, ctx.model,
                       {"samples": config.samples, "seed": config.seed, "kept_trunk": kept})
        bs = auto_batch_size(ctx.executor.compute_device(ctx.device), config.batch_size, cpu=256)
        arrays = ctx.executor.map_batches(job, n, bs, device=ctx.device,
                                          desc=f"mc_dropout T={config.samples}",
                                          progress=ctx.progress)
        if kept:  # read once: the mapped cache pages of the kept trunk need not stay resident
            for array in inputs.values():
                release_mapped_pages(array)
        summary: dict = {"heads": task.head_names, "samples": config.samples,
                         "trunk_once": split is not None, "trunk_kept": kept}
        targets = task.sample_targets(ctx.dataset)
        for head in task.head_names:
            arrays[head_key("pred", head)] = arrays[head_key("pred", head)].astype(np.int64)
            summary[head] = {"accuracy": float((arrays[head_key("pred", head)]
                                                == targets[head]).mean())}
        summary["accuracy"] = summary[task.head_names[0]]["accuracy"]
        return Artifact(arrays, summary=summary)

    @staticmethod
    def _passes(module: nn.Module, task: Task, split: StochasticSplit | None,
                args: tuple[torch.Tensor, ...], t: int, captured: list[torch.Tensor],
                env: dict | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Per head ``(T, B, C_h)`` probabilities, and the ``(B, D)`` mean embedding.

        ``env``: the trunk's boundary values when the trunk already ran (then the
        embedding is ``None`` if the trunk makes it).
        """
        captured.clear()
        outs = []
        if split is not None:
            if env is None:
                env = split.trunk_env(*args)
            trunk_emb = list(captured)  # embedding inside the trunk: deterministic
            for _ in range(t):
                outs.append(task.split_outputs(split.tail_pass(env)))
        else:
            trunk_emb = []
            for _ in range(t):
                outs.append(task.split_outputs(module(*args)))
        embs = trunk_emb if trunk_emb else captured
        emb = torch.stack([e.float() for e in embs]).mean(0) if embs else None
        captured.clear()
        probs = {h: torch.stack([o[h].float().softmax(1) for o in outs]) for h in task.head_names}
        return probs, emb

    def columns(self, artifact: Artifact, config: Config) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for head in artifact.summary["heads"]:
            def get(field_name: str, head: str = head) -> np.ndarray:
                return artifact[head_key(field_name, head)]
            top2 = np.sort(get("mean_probs"), axis=1)[:, -2:]
            cols = {
                "mc_margin": top2[:, 1] - top2[:, 0],
                "mc_pred": get("pred"),
                "mc_confidence": 1.0 - get("uncertainty"),
                "mc_uncertainty": get("uncertainty"),
                "mc_entropy": get("entropy"),
                "mc_mutual_info": get("mutual_info"),
                "mc_top_var": get("top_var"),
            }
            cols["mc_neg_margin"] = -cols["mc_margin"]
            out.update({head_key(c, head): v for c, v in cols.items()})
        return out
