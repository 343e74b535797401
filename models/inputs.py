"""The input contract: what a model reads (channels, size, normalisation).

A model's input is ``(N, C, H, W)`` float32, made from uint8 pixels as
``(pixels / 255 - mean[c]) / std[c]``. Each part is either *declared* (a flag
such as ``--input-size 3x32x32 --mean 0.49,0.48,0.45 --std 0.25,0.24,0.26``, or
the ``input`` entry of a run's ``run.json``) or *assumed*: channels from the
first convolution's ``in_channels``, size from the dataset, normalisation a
default for the channel count. Every assumption is said in the run summary,
and the preprocessing check (``analysis.steps.preprocessing``) tests it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from core.errors import ConfigError

Shape = tuple[int | None, int | None, int | None]

# Named normalisations people use: (mean, std) per channel, or one value for all.
NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "raw [0, 1]": ((0.0,), (1.0,)),
    "MNIST mean/std": ((0.1307,), (0.3081,)),
    "ImageNet mean/std": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "[-1, 1]": ((0.5,), (0.5,)),
}
MNIST_MEAN, MNIST_STD = NORMALISATIONS["MNIST mean/std"]


@dataclass(frozen=True)
class InputSpec:
    """What is declared about a model's input; ``None`` means not declared.

    Attributes
    ----------
    shape : (C, H, W), each int or None
    mean, std : tuple of float, or None
        One value (every channel) or one per channel; ``std`` entries > 0.
    source : str
        Where the declaration came from (``flags``, ``run.json``...), for messages.
    """

    shape: Shape = (None, None, None)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            missing = "--std" if self.std is None else "--mean"
            raise ConfigError(f"Normalisation from {self.source or 'flags'}: give --mean and "
                              f"--std together ({missing} is missing); --mean 0 --std 1 means "
                              "raw [0, 1] pixels.")
        if self.std is not None and any(not s > 0 for s in self.std):
            raise ConfigError(f"--std must be positive for every channel, got "
                              f"{format_values(self.std)} ({self.source or 'flags'}).")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and not all(math.isfinite(v) for v in values):
                raise ConfigError(f"--{name} must be finite numbers, got {values}.")

    def over(self, other: InputSpec) -> InputSpec:
        """This declaration, with what it leaves undeclared taken from ``other``."""
        shape = tuple(a if a is not None else b for a, b in zip(self.shape, other.shape,
                                                                 strict=True))
        norm = (self.mean, self.std) if self.mean is not None else (other.mean, other.std)
        return InputSpec(shape, *norm, source=self.source or other.source)


def parse_input_size(text: str) -> tuple[int, int, int] | tuple[None, int, int]:
    """``"3x32x32"`` -> ``(3, 32, 32)``; ``"32x32"`` -> ``(None, 32, 32)``.

    Raises
    ------
    ConfigError
        Not two or three positive integers separated by ``x``.
    """
    parts = re.split(r"[x×,]", text.strip().lower())
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) not in (2, 3) or any(d <= 0 for d in dims):
        raise ConfigError(f"--input-size {text!r} must be CxHxW (e.g. 3x32x32) or HxW "
                          "(e.g. 224x224), with positive integers.")
    if len(dims) == 2:
        return (None, dims[0], dims[1])
    if dims[0] not in (1, 3):
        raise ConfigError(f"--input-size {text!r}: {dims[0]} channels; Loupe reads grayscale "
                          "(1) or RGB (3) images.")
    return (dims[0], dims[1], dims[2])


def parse_channel_values(text: str, flag: str) -> tuple[float, ...]:
    """``"0.4914,0.4822,0.4465"`` -> a tuple; one value means every channel."""
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(",") if v != "")
    except ValueError:
        values = ()
    if not values:
        raise ConfigError(f"{flag} {text!r} must be one number or one per channel separated "
                          "by commas (e.g. 0.485,0.456,0.406).")
    return values


def spec_from_flags(input_size: str | None = None, mean: str | None = None,
                    std: str | None = None) -> InputSpec:
    """The declaration made by ``--input-size``, ``--mean`` and ``--std``."""
    shape = parse_input_size(input_size) if input_size else (None, None, None)
    return InputSpec(shape,
                     parse_channel_values(mean, "--mean") if mean is not None else None,
                     parse_channel_values(std, "--std") if std is not None else None,
                     source="flags")


def spec_from_meta(entry: object, where: str = "run.json") -> InputSpec:
    """The ``input`` entry of a ``run.json``: ``{"shape": [C, H, W], "mean": m, "std": s}``.

    ``mean`` and ``std`` are a number or a list of numbers.
    """
    if not entry:
        return InputSpec(source=where)
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: 'input' must be an object with shape, mean and std.")
    shape: Shape = (None, None, None)
    if entry.get("shape") is not None:
        raw = entry["shape"]
        if (not isinstance(raw, list | tuple) or len(raw) != 3
                or not all(isinstance(d, int) and d > 0 for d in raw)):
            raise ConfigError(f"{where}: input.shape must be three positive integers [C, H, W], "
                              f"got {raw!r}.")
        shape = tuple(raw)

    def values(key: str) -> tuple[float, ...] | None:
        raw = entry.get(key)
        if raw is None:
            return None
        seq = raw if isinstance(raw, list | tuple) else [raw]
        if not seq or not all(isinstance(v, int | float) and not isinstance(v, bool)
                              for v in seq):
            raise ConfigError(f"{where}: input.{key} must be a number or a list of numbers, "
                              f"got {raw!r}.")
        return tuple(float(v) for v in seq)

    return InputSpec(shape, values("mean"), values("std"), source=where)


def first_conv_channels(module: nn.Module) -> int | None:
    """``in_channels`` of the first registered 2D convolution, or ``None``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return None


def default_normalisation(channels: int) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """The normalisation assumed when none is declared: MNIST's for grayscale (Loupe's
    zoo and the PyTorch MNIST example), ImageNet's for colour (torchvision's models)."""
    name = "MNIST mean/std" if channels == 1 else "ImageNet mean/std"
    mean, std = NORMALISATIONS[name]
    return name, mean, std


def per_channel(values: Sequence[float], channels: int, flag: str) -> tuple[float, ...]:
    """``values`` broadcast to ``channels`` entries (one value means all)."""
    if len(values) == 1:
        return tuple(values) * channels
    if len(values) != channels:
        raise ConfigError(f"{flag} has {len(values)} values ({format_values(values)}) but the "
                          f"model reads {channels} channel(s); give one value or {channels}.")
    return tuple(values)


def format_values(values: Sequence[float]) -> str:
    """``(0.5, 0.5, 0.5)`` -> ``"0.5"``; ``(0.4914, 0.4822)`` -> ``"0.4914,0.4822"``."""
    vals = list(values)
    if len(set(vals)) == 1:
        vals = vals[:1]
    return ",".join(f"{v:.4f}".rstrip("0").rstrip(".") if v != 0 else "0" for v in vals)


def normalisation_flags(mean: Sequence[float], std: Sequence[float]) -> str:
    """The flags that declare a normalisation: ``--mean 0 --std 1``."""
    return f"--mean {format_values(mean)} --std {format_values(std)}"


def format_shape(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def resolve_input(declared: InputSpec, module: nn.Module,
                  data_shape: Sequence[int] | None, data_name: str = "the dataset",
                  model_name: str = "the model"
                  ) -> tuple[tuple[int, int, int], tuple[float, ...], tuple[float, ...],
                             list[str]]:
    """The input a model is fed: ``(shape, mean, std, notes)``.

    Declared parts win; channels otherwise come from the first convolution, then
    from the data; the size from the data (28x28 before any data is loaded);
    the normalisation from :func:`default_normalisation`. ``notes`` says in
    words what was assumed.

    Parameters
    ----------
    declared : InputSpec
    module : nn.Module
    data_shape : (C, H, W) of the images as loaded, or None
    data_name, model_name : str
        For messages.

    Raises
    ------
    ConfigError
        Undeclared channels or size that the data does not match.
    """
    c_decl, h_decl, w_decl = declared.shape
    conv = first_conv_channels(module)
    notes: list[str] = []
    if data_shape is not None:
        c_data, h_data, w_data = (int(d) for d in data_shape)
        if c_decl is None and conv is not None and conv != c_data:
            raise ConfigError(
                f"{model_name}'s first convolution reads {conv} channel(s) but {data_name} "
                f"has {c_data}-channel images ({format_shape(data_shape)}). Pass --input-size "
                f"{conv}x{h_data}x{w_data} to convert the images to {conv} channel(s), or "
                f"analyse {conv}-channel images.")
        wanted = (c_decl or c_data, h_decl or h_data, w_decl or w_data)
        if wanted != (c_data, h_data, w_data):
            raise ConfigError(
                f"{data_name} was loaded as {format_shape(data_shape)} images but {model_name} "
                f"is declared to read {format_shape(wanted)} ({declared.source}); this dataset "
                "cannot be converted. Check --input-size.")
        if c_decl is None:
            notes.append(f"{c_data} channel(s), from the first convolution" if conv is not None
                         else f"{c_data} channel(s), from the images of {data_name}")
        if h_decl is None or w_decl is None:
            notes.append(f"size {h_data}x{w_data}, from the images of {data_name}")
        shape = (c_data, h_data, w_data)
    else:
        shape = (c_decl or conv or 1, h_decl or 28, w_decl or 28)
    if declared.mean is None:
        label, mean, std = default_normalisation(shape[0])
        notes.append(f"normalisation not declared: assumed {label} "
                     f"({normalisation_flags(mean, std)})")
    else:
        mean, std = declared.mean, declared.std
    mean = per_channel(mean, shape[0], "--mean")
    std = per_channel(std, shape[0], "--std")
    if len(set(mean)) == 1 and len(set(std)) == 1:
        mean, std = mean[:1], std[:1]
    return shape, mean, std, notes
