"""Weights files as people save them, read without running code.

Accepted: a plain ``state_dict``; one wrapped in a training checkpoint
(``{'state_dict': ...}`` as Lightning writes it, ``{'model_state_dict': ...}``
as the PyTorch tutorials do, ``{'model': ...}``, ``{'net': ...}``...), with
sibling entries (optimizer, epoch, hyperparameters) ignored; ``.safetensors``
files. Key prefixes added by wrappers (``model.`` from Lightning, ``module.``
from DataParallel/DDP, ``_orig_mod.`` from ``torch.compile``) are stripped only
when that makes the keys fit the module.

Files are read with ``torch.load(..., weights_only=True)`` only. A whole
pickled model or a TorchScript archive is recognised from the file's contents
(the zip's entries, the pickle's opcodes, never executed) and refused with the
one line that converts it.
"""

from __future__ import annotations

import logging
import pickletools
import re
import zipfile
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from core.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

# Where training checkpoints keep the model's weights, most specific first.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network",
                "weights", "module")
PREFIXES = ("model.", "module.", "_orig_mod.")
MAX_STRIP_DEPTH = 3
SHOWN_KEYS = 10


def _convert_hint(path: Path) -> str:
    return (f"Convert it once, in your own code: `torch.save(torch.load('{path}', "
            "weights_only=False).state_dict(), 'model_state.pt')` and pass --weights "
            "model_state.pt with --model pkg.module:factory.")


def _pickle_entry(archive: zipfile.ZipFile) -> str | None:
    return next((n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")),
                None)


def _is_torchscript(archive: zipfile.ZipFile) -> bool:
    """TorchScript archives carry their code (``<root>/code/``) and ``constants.pkl``."""
    for name in archive.namelist():
        parts = name.split("/")
        if len(parts) >= 2 and (parts[1] == "code" or parts[1] == "constants.pkl"):
            return True
    return False


def _top_level_class(pickled: bytes) -> str | None:
    """``module.Class`` the pickle's top-level object is built from, ``None`` for a dict.

    Only the first opcodes are read (:func:`pickletools.genops` decodes, it
    never imports or calls anything).
    """
    strings: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(pickled):
            if op.name in ("PROTO", "FRAME", "MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
                continue
            if op.name == "GLOBAL":
                return str(arg).replace(" ", ".")
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(str(arg))
                continue
            if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                return f"{strings[-2]}.{strings[-1]}"
            return None
    except Exception:  # a truncated or odd pickle: no verdict, the load error stands
        return None
    return None


def _refuse_torchscript(path: Path) -> None:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if not _is_torchscript(archive):
                return
        raise CheckpointError(
            f"{path} is a TorchScript file, which Loupe never loads (it holds code). Save its "
            f"weights once, in your own code: `torch.save(torch.jit.load('{path}').state_dict(), "
            "'model_state.pt')` and pass --weights model_state.pt with --model "
            "pkg.module:factory.")


def _pickled_class(path: Path) -> str | None:
    """The class of a zip checkpoint's top-level object (``None``: a dict or unknown)."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        entry = _pickle_entry(archive)
        top = _top_level_class(archive.read(entry)) if entry else None
    return None if top in ("collections.OrderedDict", "builtins.dict") else top


def _read_file(path: Path) -> object:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(f"{path} is a .safetensors file: pip install safetensors") from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError and OSError
            raise CheckpointError(f"Cannot load weights {path}: {str(exc).splitlines()[0]} "
                                  "(expected a safetensors file).") from None
    _refuse_torchscript(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        top = _pickled_class(path)
        if top is not None:
            raise CheckpointError(f"{path} is a whole pickled model ({top}), which Loupe never "
                                  f"unpickles (it can run code). {_convert_hint(path)}") from None
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            raise CheckpointError(
                f"{path} holds Python objects besides tensors ({found.group(1)}), which Loupe "
                "never unpickles (they can run code). Save the weights alone once, in your own "
                f"code: `torch.save(torch.load('{path}', weights_only=False)['state_dict'], "
                "'model_state.pt')` (the key holding the weights) and pass --weights "
                "model_state.pt.") from None
        first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
        raise CheckpointError(f"Cannot load weights {path}: {first} "
                              "(expected a state_dict saved with torch.save).") from None


def _is_state_dict(obj: object) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` held by a weights file, unwrapped from a training checkpoint.

    Raises
    ------
    CheckpointError
        The file is missing, unreadable, holds code or pickled objects, or no
        unambiguous ``state_dict`` is found in it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weights file {path} does not exist.")
    obj = _read_file(path)
    if _is_state_dict(obj):
        return dict(obj)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a state_dict (got {type(obj).__name__}).")
    for key in WRAPPER_KEYS:
        if _is_state_dict(obj.get(key)):
            return dict(obj[key])
    nested = [k for k, v in obj.items() if _is_state_dict(v)]
    if len(nested) == 1:
        return dict(obj[nested[0]])
    keys = ", ".join(repr(k) for k in list(obj)[:SHOWN_KEYS])
    why = (f"several entries hold tensors ({', '.join(map(repr, nested))}): save the one you "
           "mean alone" if nested else "none of its entries is a dict of tensors")
    raise CheckpointError(f"{path} does not hold a state_dict: it is a dict with keys {keys}, "
                          f"and {why} (expected a state_dict, or one under 'state_dict' or "
                          "'model_state_dict').")


def _candidates(state: dict[str, torch.Tensor]):
    """``state`` as is, then with wrapper prefixes stripped (breadth first, up to three)."""
    level, seen = [((), state)], set()
    for _depth in range(MAX_STRIP_DEPTH + 1):
        following = []
        for stripped, cand in level:
            if stripped in seen:
                continue
            seen.add(stripped)
            yield stripped, cand
            for prefix in PREFIXES:
                sub = {k[len(prefix):]: v for k, v in cand.items() if k.startswith(prefix)}
                if sub:
                    following.append(((*stripped, prefix), sub))
        level = following


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (", ..." if len(keys) > SHOWN_KEYS else "")


def fit_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path,
                   arch: str) -> None:
    """Load ``state`` into ``module``, stripping wrapper prefixes when that makes it fit.

    The raw keys are tried first, then each strip of ``model.``, ``module.``
    and ``_orig_mod.`` (combined up to three deep); the first candidate whose
    key set equals the module's is loaded (strictly).

    Raises
    ------
    CheckpointError
        No candidate fits: lists the missing and unexpected keys (the first ten
        of each and their counts) and the shape mismatches of the closest one.
    """
    expected = module.state_dict()
    want = set(expected)
    best: tuple[int, tuple[str, ...], dict] | None = None
    for stripped, cand in _candidates(state):
        if set(cand) == want:
            mismatched = [k for k in want if tuple(cand[k].shape) != tuple(expected[k].shape)]
            if not mismatched:
                if stripped:
                    log.info("weights %s: stripped key prefix %s", source, "".join(stripped))
                module.load_state_dict(cand, strict=True)
                return
        overlap = len(want & set(cand))
        if best is None or overlap > best[0]:
            best = (overlap, stripped, cand)
    assert best is not None  # the raw keys are always a candidate
    _overlap, stripped, cand = best
    missing = sorted(want - set(cand))
    unexpected = sorted(set(cand) - want)
    shapes = [f"{k} {tuple(cand[k].shape)} vs {tuple(expected[k].shape)}"
              for k in sorted(want & set(cand))
              if tuple(cand[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_listed(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches, checkpoint vs model ({_listed(shapes)})")
    after = f" after stripping {''.join(stripped)!r}" if stripped else ""
    prefixes = Counter(k.split(".", 1)[0] for k in state)
    raise CheckpointError(
        f"Weights {source} do not fit architecture {arch!r}{after}: {'; '.join(parts)}. "
        f"(The checkpoint's top-level names: {_listed([p for p, _ in prefixes.most_common()])}.) "
        "Check that --model builds the network these weights were trained with.")
