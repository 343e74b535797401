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
    """A Captum method behind the common ``attribute`` signature."""

    label: str
    signed: bool  # True: positive and negative evidence; False: magnitudes only
    run: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def _ig(module, x, target, baseline, n_steps):
    from captum.attr import IntegratedGradients

    return IntegratedGradients(module).attribute(
        x, baselines=baseline, target=target, n_steps=n_steps,
        internal_batch_size=max(n_steps, 1) * min(len(x), 8))


def _saliency(module, x, target, baseline, n_steps):
    from captum.attr import Saliency

    return Saliency(module).attribute(x, target=target, abs=True)


def _gradcam(module, x, target, baseline, n_steps):
    from captum.attr import LayerAttribution, LayerGradCam

    layer_attr = LayerGradCam(module, last_conv(module)).attribute(
        x, target=target, relu_attributions=True)
    up = LayerAttribution.interpolate(layer_attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up.expand(-1, x.shape[1], -1, -1) / x.shape[1]


def _occlusion(module, x, target, baseline, n_steps):
    from captum.attr import Occlusion

    c = x.shape[1]
    return Occlusion(module).attribute(x, target=target, baselines=baseline,
                                       sliding_window_shapes=(c, 4, 4), strides=(c, 2, 2))


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


def attribute(model: LoadedModel, images: np.ndarray, target: int | Sequence[int] | np.ndarray,
              method: str = "integrated_gradients", *, device: torch.device | str = "cpu",
              n_steps: int = 50, batch_size: int = 32) -> np.ndarray:
    """Attribution heatmaps of ``images`` for the given target class(es).

    Parameters
    ----------
    model : LoadedModel
    images : (B, C, H, W) uint8
    target : int or (B,) ints
        The class whose logit is explained, per image.
    method : str
        A key of :data:`METHODS`.
    n_steps : int
        Integration steps for Integrated Gradients.

    Returns
    -------
    (B, H, W) float32
        Summed over channels; same size as the input. Sign: positive supports
        the target class (signed methods only).
    """
    spec = get_method(method)
    device = torch.device(device)
    module = model.module.to(device).eval()
    images = np.asarray(images)
    targets = np.broadcast_to(np.asarray(target, dtype=np.int64), (len(images),))
    num_classes = model.meta.get("class_names")
    if num_classes is not None and (targets.min() < 0 or targets.max() >= len(num_classes)):
        raise ConfigError(f"Target class {int(targets.max())} is outside "
                          f"0..{len(num_classes) - 1}.")
    out = []
    for start in range(0, len(images), batch_size):
        pix = torch.as_tensor(images[start:start + batch_size]).to(device)
        x = model.prepare(pix).requires_grad_(True)
        baseline = model.prepare(torch.zeros_like(pix))
        tgt = torch.as_tensor(targets[start:start + batch_size]).to(device)
        with torch.enable_grad():
            attr = spec.run(module, x, tgt, baseline, n_steps)
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
