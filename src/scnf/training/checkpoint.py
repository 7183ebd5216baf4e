"""Checkpoint files: written atomically, read without running code.

Checkpoints hold only tensors, plain containers, numbers and strings, and are read with
``torch.load(weights_only=True)``, which refuses any other global a pickle names before
importing it; a crafted file cannot run code. Plain numpy arrays (the sampler permutation of
checkpoints written before it was a tensor) are allowed too. Every problem raises
:class:`~scnf.errors.CheckpointError` naming the file.
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..fileio import atomic_writer

__all__ = ["CheckpointError", "load_checkpoint", "load_model_state", "save_checkpoint"]


_NUMERIC_DTYPES = ("Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float16",
                   "Float32", "Float64", "Long", "ULong", "LongLong", "ULongLong")


def _legacy_numpy_globals() -> list:
    """The globals a pickled numeric numpy array names (numpy 1.x and 2.x spellings)."""
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    dtypes = getattr(np, "dtypes", None)
    numeric = [getattr(dtypes, f"{n}DType") for n in _NUMERIC_DTYPES if hasattr(dtypes, f"{n}DType")]
    return [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype, *numeric]


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write atomically (:func:`scnf.fileio.atomic_writer`): a crash or kill during the write
    leaves the previous file as it was."""
    with atomic_writer(path) as fh:
        torch.save(state, fh)


def _why(e: Exception) -> str:
    msg = str(e)
    m = re.search(r"GLOBAL\s+([\w.]+)", msg)
    if m:
        return f"it names the Python object {m.group(1)}, which a scnf checkpoint never holds; refused, nothing was run"
    if isinstance(e, pickle.UnpicklingError):
        detail = msg.split("Check the documentation")[0]
        for cut in ("trusted source.", "WeightsUnpickler error:"):
            detail = detail.split(cut, 1)[-1]
        detail = " ".join(detail.split())[:200]
        return ("it holds something other than tensors, numbers and strings"
                + (f" ({detail})" if detail else "") + "; refused, nothing was run")
    if isinstance(e, zipfile.BadZipFile) or "central directory" in msg or "zip archive" in msg:
        return "the file is truncated or not a PyTorch file"
    return f"the file is truncated or not a PyTorch file ({type(e).__name__}: {' '.join(msg.split())[:200]})"


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ("model", "step")) -> dict:
    """Read a checkpoint without running code; check it is a dict with the ``required`` keys,
    ``model`` a dict of tensors and ``step`` an integer."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    ctx = getattr(torch.serialization, "safe_globals", None)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            if ctx is not None:
                with ctx(_legacy_numpy_globals()):
                    state = torch.load(path, map_location="cpu", weights_only=True)
            else:  # pragma: no cover - torch < 2.5
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"cannot read checkpoint {path}: {_why(e)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a scnf checkpoint: it holds a {type(state).__name__}, not a dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a scnf checkpoint: it has no {', '.join(map(repr, missing))} "
                              f"(keys: {', '.join(map(str, list(state)[:8])) or 'none'})")
    if "model" in required:
        sd = state["model"]
        if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in sd.items()):
            raise CheckpointError(f"{path} is not a scnf checkpoint: 'model' is not a state dict of tensors")
    if "step" in required and (isinstance(state["step"], bool) or not isinstance(state["step"], int)):
        raise CheckpointError(f"{path} is not a scnf checkpoint: 'step' is not an integer")
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict, path: str | Path, what: str = "the run's config") -> None:
    """``model.load_state_dict(state_dict)`` after checking names and shapes; a mismatch
    raises :class:`CheckpointError` naming ``path`` and the first differences."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state_dict and state_dict[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})")
    if shapes:
        problems.append(f"{len(shapes)} of other shape (e.g. {shapes[0]}; checkpoint vs model)")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit the model of {what}: " + ", ".join(problems))
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model of {what}: "
                              f"{' '.join(str(e).split())[:300]}") from None
