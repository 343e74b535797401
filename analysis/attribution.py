"""Captum attributions, one verb for every method: :func:`attribute`.

Methods: ``integrated_gradients``, ``saliency``, ``gradcam`` (on the last
``nn.Conv2d``, upsampled to the input) and ``occlusion``. Rendering (clip by
percentile, scale to [-1, 1]) is the separate pure :func:`normalize_heatmap`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from analysis.errors import ConfigError
from models.checkpoint import LoadedModel


def last_conv(module: nn.Module) -> nn.Module:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("GradCAM needs an nn.Conv2d layer; this model has none. "
                          "Use integrated_gradients, saliency or occlusion.")
    return convs[-1]


@dataclass(frozen=True)
class AttributionMethod:
    """A Captum method behind the common ``attribute`` signature.

    ``run(forward, module, x, target, baseline, n_steps, extra)``: ``forward``
    maps the image (and the ``extra`` side inputs, passed to Captum as
    ``additional_forward_args``) to the explained head's logits.
    """

    label: str
    signed: bool  # True: positive and negative evidence; False: magnitudes only
    run: Callable[..., torch.Tensor]


def _ig(forward, module, x, target, baseline, n_steps, extra):
    from captum.attr import IntegratedGradients

    return IntegratedGradients(forward).attribute(
        x, baselines=baseline, target=target, n_steps=n_steps, additional_forward_args=extra,
        internal_batch_size=max(n_steps, 1) * min(len(x), 8))


def _saliency(forward, module, x, target, baseline, n_steps, extra):
    from captum.attr import Saliency

    return Saliency(forward).attribute(x, target=target, abs=True,
                                       additional_forward_args=extra)


def _gradcam(forward, module, x, target, baseline, n_steps, extra):
    from captum.attr import LayerAttribution, LayerGradCam

    layer_attr = LayerGradCam(forward, last_conv(module)).attribute(
        x, target=target, relu_attributions=True, additional_forward_args=extra)
    up = LayerAttribution.interpolate(layer_attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up.expand(-1, x.shape[1], -1, -1) / x.shape[1]


def _occlusion(forward, module, x, target, baseline, n_steps, extra):
    from captum.attr import Occlusion

    c = x.shape[1]
    return Occlusion(forward).attribute(x, target=target, baselines=baseline,
                                        sliding_window_shapes=(c, 4, 4), strides=(c, 2, 2),
                                        additional_forward_args=extra)


METHODS: dict[str, AttributionMethod] = {
    "integrated_gradients": AttributionMethod("Integrated Gradients", True, _ig),
    "saliency": AttributionMethod("Saliency", False, _saliency),
    "gradcam": AttributionMethod("GradCAM", False, _gradcam),
    "occlusion": AttributionMethod("Occlusion", True, _occlusion),
}


def get_method(name: str) -> AttributionMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"Unknown attribution method {name!r}; valid: "
                          f"{', '.join(METHODS)}.") from None


def head_forward(model: LoadedModel, head: str) -> tuple[Callable[..., torch.Tensor], int]:
    """A forward function ``(image, *side_inputs) -> (B, C_head) logits`` for Captum,
    and the image's position among the model's arguments."""
    task = model.task
    module = model.module
    image_pos = next(i for i, inp in enumerate(task.inputs) if inp.kind == "image")

    def forward(image: torch.Tensor, *side: torch.Tensor) -> torch.Tensor:
        args = list(side)
        args.insert(image_pos, image)
        return task.split_outputs(module(*args))[head]

    return forward, image_pos


def attribute(model: LoadedModel, images: np.ndarray, target: int | Sequence[int] | np.ndarray,
              method: str = "integrated_gradients", *, device: torch.device | str = "cpu",
              n_steps: int = 50, batch_size: int = 32, head: str | None = None,
              metadata: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Attribution heatmaps of ``images`` for the given target class(es) of one head.

    Parameters
    ----------
    model : LoadedModel
    images : (B, C, H, W) uint8
    target : int or (B,) ints
        The class of ``head`` whose logit is explained, per image.
    method : str
        A key of :data:`METHODS`.
    n_steps : int
        Integration steps for Integrated Gradients.
    head : str, optional
        The explained head (default: the task's first).
    metadata : dict of str to (B,) ints, optional
        The images' side inputs (e.g. ``number`` for ``mnist-sum``); they are
        held fixed: the attribution is with respect to the image only.

    Returns
    -------
    (B, H, W) float32
        Summed over channels; same size as the input. Sign: positive supports
        the target class (signed methods only).
    """
    spec = get_method(method)
    device = torch.device(device)
    task = model.task
    h = task.head(head)
    module = model.module.to(device).eval()
    images = np.asarray(images)
    targets = np.array(np.broadcast_to(np.asarray(target, dtype=np.int64), (len(images),)))
    if targets.min() < 0 or targets.max() >= h.num_classes:
        bad = int(targets.max() if targets.max() >= h.num_classes else targets.min())
        raise ConfigError(f"Target class {bad} is outside 0..{h.num_classes - 1} "
                          f"(head {h.name!r}).")
    meta = {k: np.asarray(v) for k, v in (metadata or {}).items()}
    missing = [i.name for i in task.inputs if i.kind != "image" and i.name not in meta]
    if missing:
        raise ConfigError(f"Attribution for task {task.name!r} needs the side input(s) "
                          f"{', '.join(missing)} of each image.")
    forward, image_pos = head_forward(model, h.name)
    out = []
    for start in range(0, len(images), batch_size):
        sl = slice(start, start + batch_size)
        pix = torch.as_tensor(images[sl]).to(device)
        x = model.prepare(pix).requires_grad_(True)
        baseline = model.prepare(torch.zeros_like(pix))
        args = task.model_inputs(x, {k: torch.as_tensor(v[sl]).to(device)
                                     for k, v in meta.items()})
        extra = tuple(a.detach() for i, a in enumerate(args) if i != image_pos) or None
        tgt = torch.as_tensor(targets[sl]).to(device)
        with torch.enable_grad():
            attr = spec.run(forward, module, x, tgt, baseline, n_steps, extra)
        out.append(attr.detach().sum(1).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def normalize_heatmap(heatmap: np.ndarray, signed: bool = True,
                      percentile: float = 99.0) -> np.ndarray:
    """Scale a ``(H, W)`` heatmap to [-1, 1] (signed) or [0, 1], clipping outliers.

    The scale is the ``percentile`` of absolute values, so a few extreme pixels
    do not wash out the rest. An all-zero map stays zero.
    """
    h = np.asarray(heatmap, dtype=np.float32)
    if not signed:
        h = np.abs(h)
    scale = float(np.percentile(np.abs(h), percentile)) if h.size else 0.0
    if scale <= 0 or not np.isfinite(scale):
        return np.zeros_like(h)
    lo = -1.0 if signed else 0.0
    return np.clip(h / scale, lo, 1.0)
