"""Captum attributions, one verb for every method: :func:`attribute`.

Methods: ``integrated_gradients``, ``saliency``, ``gradcam`` (on a chosen
layer's feature map, upsampled to the input) and ``occlusion`` (window and
stride scaled to the image, see :func:`occlusion_geometry`). Every method
returns one ``(H, W)`` map per image, summed over the colour channels.
Rendering (clip by percentile, scale to [-1, 1]) is the separate pure
:func:`normalize_heatmap`.

GradCAM's layer
---------------
Any module called once per forward pass whose output is a ``(N, C, h, w)``
feature map with ``h, w > 1`` (:func:`conv_layer_choices`, found by one
forward pass with hooks on a blank input of the explained size). The default
(:func:`default_gradcam_layer`) is the one whose output is completed *last*:
a container finishes after its children, so this is the top-level-most module
producing the final feature map, i.e. the output of the last convolutional
block (``layer4`` of a torchvision resnet at 224 x 224, after the skip-add,
rather than ``layer4.1.conv2`` inside it; ``layer3`` at 32 x 32, where
``layer4`` is 1 x 1). A 1 x 1 map would give a constant heatmap; a module
called twice (a shared ``ReLU``) has no single output to explain.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from analysis.forward import example_inputs, model_lock
from core.errors import ConfigError
from models.checkpoint import LoadedModel

# Per module: the feature-map layers found for each (C, H, W) input (one probe pass each).
_FEATURE_MAPS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], list[str]]] = \
    weakref.WeakKeyDictionary()
_FEATURE_MAPS_GUARD = threading.Lock()
PERTURBED_ELEMENTS = 2 ** 21  # occlusion: input elements per batched forward pass (8 MiB)


def conv_layer_choices(model: LoadedModel, input_shape: Sequence[int] | None = None
                       ) -> list[str]:
    """Names of the modules GradCAM can explain, in the order their outputs complete.

    Parameters
    ----------
    model : LoadedModel
    input_shape : (C, H, W), optional
        The explained images' size (default: the model's ``input_shape``).

    Returns
    -------
    list of str
        Modules called once per forward pass whose output is a ``(N, C, h, w)``
        tensor with ``h, w > 1`` (the root module excluded); the last one is
        :func:`default_gradcam_layer`.
    """
    shape = tuple(int(v) for v in (input_shape or model.input_shape))
    with _FEATURE_MAPS_GUARD:
        known = _FEATURE_MAPS.setdefault(model.module, {}).get(shape)
    if known is not None:
        return list(known)
    completed: list[str] = []
    calls: dict[str, int] = {}
    maps: set[str] = set()

    def hook(name: str):
        def record(_m, _args, output) -> None:
            calls[name] = calls.get(name, 0) + 1
            if name in completed:
                completed.remove(name)
            completed.append(name)
            if (isinstance(output, torch.Tensor) and output.dim() == 4
                    and output.shape[2] > 1 and output.shape[3] > 1):
                maps.add(name)
        return record

    module = model.module
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    args = list(example_inputs(model))
    pos = next(i for i, inp in enumerate(model.task.inputs) if inp.kind == "image")
    args[pos] = torch.zeros(1, *shape)
    with model_lock(model):
        handles = [m.register_forward_hook(hook(name))
                   for name, m in module.named_modules() if name]
        try:
            with torch.no_grad():
                module(*(a.to(device) for a in args))
        finally:
            for handle in handles:
                handle.remove()
    choices = [name for name in completed if name in maps and calls[name] == 1]
    with _FEATURE_MAPS_GUARD:
        _FEATURE_MAPS.setdefault(model.module, {})[shape] = choices
    return list(choices)


def default_gradcam_layer(model: LoadedModel, input_shape: Sequence[int] | None = None) -> str:
    """The output of the last convolutional block (see the module docstring).

    Raises
    ------
    ConfigError
        The model produces no feature map larger than 1 x 1.
    """
    choices = conv_layer_choices(model, input_shape)
    if not choices:
        shape = "x".join(map(str, input_shape or model.input_shape))
        raise ConfigError(f"GradCAM needs a layer whose output is a (N, C, h, w) feature map "
                          f"larger than 1x1, and {model.arch} has none on {shape} inputs. Use "
                          "integrated_gradients, saliency or occlusion.")
    return choices[-1]


def resolve_gradcam_layer(model: LoadedModel, layer: str | None,
                          input_shape: Sequence[int] | None = None) -> str:
    """``layer`` checked against :func:`conv_layer_choices`, or the default when ``None``."""
    if not layer:
        return default_gradcam_layer(model, input_shape)
    choices = conv_layer_choices(model, input_shape)
    if layer not in choices:
        shape = "x".join(map(str, input_shape or model.input_shape))
        what = ("is not a module of" if layer not in dict(model.module.named_modules())
                else "is not a feature-map layer (output (N, C, h, w), h, w > 1, called once) of")
        raise ConfigError(f"--gradcam-layer {layer!r} {what} {model.arch} on {shape} inputs; "
                          f"valid: {', '.join(choices) or 'none (use another method)'}.")
    return layer


def occlusion_geometry(height: int, width: int) -> tuple[tuple[int, int], int]:
    """Occlusion's ``(window_h, window_w)`` and stride for an ``height x width`` image.

    The stride is ~1/12 of the short side and the window twice the stride (at
    least 3), so about 11-13 overlapping windows span the short side whatever
    the resolution: the heatmap has that many cells and costs ~100-200 forward
    passes. 28 x 28 keeps the former (4, 4) window and stride 2 (169 windows);
    32 x 32 gets (5, 5) and 3 (100 windows, not 225 with a fixed 4 x 4 and 2);
    224 x 224 gets (34, 34) and 19 (121, not 12,321). A window is shrunk (by
    less than the stride) where the windows would not end on the last pixel:
    Captum leaves such pixels unoccluded, with a 0/0 attribution.
    """
    stride = max(1, round(min(height, width) / 12))
    window = max(3, 2 * stride)
    sizes = []
    for side in (height, width):
        w = min(side, window)
        rest = (side - w) % stride
        sizes.append(w - (stride - rest) if rest else w)
    return (sizes[0], sizes[1]), stride


@dataclass(frozen=True)
class AttributionMethod:
    """A Captum method behind the common ``attribute`` signature.

    ``run(forward, module, x, target, baseline, n_steps, extra, layer)``:
    ``forward`` maps the image (and the ``extra`` side inputs, passed to Captum
    as ``additional_forward_args``) to the explained head's logits; ``layer`` is
    GradCAM's module (``None`` for the other methods). Returns ``(B, C, H, W)``.
    """

    label: str
    signed: bool  # True: positive and negative evidence; False: magnitudes only
    run: Callable[..., torch.Tensor]


def _ig(forward, module, x, target, baseline, n_steps, extra, layer):
    from captum.attr import IntegratedGradients

    return IntegratedGradients(forward).attribute(
        x, baselines=baseline, target=target, n_steps=n_steps, additional_forward_args=extra,
        internal_batch_size=max(n_steps, 1) * min(len(x), 8))


def _saliency(forward, module, x, target, baseline, n_steps, extra, layer):
    from captum.attr import Saliency

    return Saliency(forward).attribute(x, target=target, abs=True,
                                       additional_forward_args=extra)


def _gradcam(forward, module, x, target, baseline, n_steps, extra, layer):
    from captum.attr import LayerAttribution, LayerGradCam

    layer_attr = LayerGradCam(forward, layer).attribute(
        x, target=target, relu_attributions=True, additional_forward_args=extra)
    up = LayerAttribution.interpolate(layer_attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up.expand(-1, x.shape[1], -1, -1) / x.shape[1]


def _occlusion(forward, module, x, target, baseline, n_steps, extra, layer):
    from captum.attr import Occlusion

    b, c, h, w = x.shape
    (win_h, win_w), stride = occlusion_geometry(h, w)
    windows = ((h - win_h) // stride + 1) * ((w - win_w) // stride + 1)
    # Occluded copies go through the model together, PERTURBED_ELEMENTS at a time.
    per_eval = max(1, min(windows, PERTURBED_ELEMENTS // (b * c * h * w)))
    return Occlusion(forward).attribute(x, target=target, baselines=baseline,
                                        sliding_window_shapes=(c, win_h, win_w),
                                        strides=(c, stride, stride),
                                        additional_forward_args=extra,
                                        perturbations_per_eval=per_eval)


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
              metadata: dict[str, np.ndarray] | None = None,
              layer: str | None = None) -> np.ndarray:
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
    layer : str, optional
        GradCAM's layer, a name of :func:`conv_layer_choices` (default:
        :func:`default_gradcam_layer`); ignored by the other methods.

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
    layer_module = None
    if method == "gradcam":
        name = resolve_gradcam_layer(model, layer, images.shape[1:])
        layer_module = dict(module.named_modules())[name]
    out = []
    for start in range(0, len(images), batch_size):
        sl = slice(start, start + batch_size)
        pix = torch.from_numpy(np.array(images[sl])).to(device)  # a writable copy
        x = model.prepare(pix).requires_grad_(True)
        baseline = model.prepare(torch.zeros_like(pix))
        args = task.model_inputs(x, {k: torch.as_tensor(v[sl]).to(device)
                                     for k, v in meta.items()})
        extra = tuple(a.detach() for i, a in enumerate(args) if i != image_pos) or None
        tgt = torch.as_tensor(targets[sl]).to(device)
        with torch.enable_grad():
            attr = spec.run(forward, module, x, tgt, baseline, n_steps, extra, layer_module)
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
