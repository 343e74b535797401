"""ONNX models (``--model onnx:path/to/model.onnx``), converted to PyTorch.

An ONNX file is data, not code: :func:`onnx2torch.convert` builds a
``torch.fx.GraphModule`` out of its graph (``Gemm`` becomes ``nn.Linear``,
``Conv`` ``nn.Conv2d``...), so every Loupe step, heatmaps included, runs on it
like on any module. Submodules are named after the ONNX nodes (``fc/Gemm``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from core.errors import CheckpointError, ConfigError
from models.run_meta import ONNX_PREFIX

log = logging.getLogger(__name__)


def onnx_path(spec: str, run_folder: Path | None = None) -> Path:
    """The file of an ``onnx:PATH`` spec.

    From the command line ``PATH`` is taken as given. From a run folder's
    ``run.json`` it is relative to that folder and must stay inside it, so a
    run folder cannot point Loupe at files elsewhere.

    Raises
    ------
    CheckpointError
        The path leaves the run folder, or the file does not exist.
    """
    raw = spec[len(ONNX_PREFIX):]
    if run_folder is None:
        path = Path(raw).expanduser()
    else:
        root = run_folder.resolve()
        path = (root / raw).resolve()
        if Path(raw).is_absolute() or not path.is_relative_to(root):
            raise CheckpointError(f"{run_folder / 'run.json'}: model_spec {spec!r} points outside "
                                  "the run folder; an ONNX file named by a run must lie inside "
                                  "it (e.g. onnx:model.onnx).")
    if not path.is_file():
        raise CheckpointError(f"ONNX file {path} does not exist (from --model {spec}).")
    return path


def _input_shape(graph) -> list[int] | None:
    """``[C, H, W]`` of the graph's first real input (not an initializer), when fixed."""
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if not inputs:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [int(d.dim_value) for d in dims[1:]]  # the first dim is the batch
    if len(shape) == 3 and all(d > 0 for d in shape):
        return shape
    log.warning("ONNX input %r has shape %s: no fixed (C, H, W) to read", inputs[0].name,
                [d.dim_value or d.dim_param for d in dims])
    return None


def load_onnx(path: Path) -> tuple[nn.Module, list[int] | None]:
    """Convert an ONNX file to a ``GraphModule`` (in eval mode).

    Returns
    -------
    module : nn.Module
        The converted model.
    input_shape : list of int or None
        ``[C, H, W]`` of the graph's input, when its dimensions are fixed.

    Raises
    ------
    ConfigError
        ``onnx`` or ``onnx2torch`` is not installed.
    CheckpointError
        The file is not a valid ONNX model or holds an operator onnx2torch
        cannot convert.
    """
    try:
        import onnx
        from onnx2torch import convert
    except ImportError:
        raise ConfigError(f"--model onnx:{path} needs the ONNX converter: "
                          "pip install onnx onnx2torch") from None
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValueError... for a bad file
        raise CheckpointError(f"Cannot read ONNX file {path}: {str(exc).splitlines()[0]}") \
            from None
    try:
        module = convert(proto)
    except NotImplementedError as exc:
        raise CheckpointError(f"ONNX file {path} cannot be converted to PyTorch: {exc}. Export "
                              "it with an older opset, e.g. torch.onnx.export(model, x, path, "
                              "dynamo=False, opset_version=17).") from None
    except Exception as exc:  # a malformed graph fails anywhere inside the converter
        first = next(iter(str(exc).splitlines()), "")
        raise CheckpointError(f"ONNX file {path} cannot be converted to PyTorch: "
                              f"{type(exc).__name__}: {first}") from None
    return module.eval(), _input_shape(proto.graph)
