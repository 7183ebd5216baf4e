"""A restricted unpickler for untrusted pickles that hold only numpy arrays.

``pickle`` runs whatever callables a pickle names, so an untrusted pickle can
execute arbitrary code.  :class:`NumpyOnlyUnpickler` resolves only the few
globals that numpy arrays need and refuses every other one *before* it is
imported or called.

Pickles written by Python 2 (such as the MNIST pickle) and Python 3 pickles
of protocol 3 or higher load; Python 3 pickles of protocol 0-2 wrap bytes in
``_codecs.encode``, which is refused.
"""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

__all__ = ["RefusedGlobalError", "NumpyOnlyUnpickler", "safe_loads", "safe_load"]

#: The globals a pickle of plain numpy arrays refers to, mapped to the objects
#: they resolve to.  Both spellings of the core module are accepted (numpy 1.x
#: pickles say ``numpy.core``, numpy 2.x ones ``numpy._core``), without
#: importing the deprecated ``numpy.core`` under numpy 2.
_ALLOWED: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(_mod, "scalar")] = _multiarray.scalar
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype


class RefusedGlobalError(pickle.UnpicklingError, ValueError):
    """A pickle referred to a global outside the allowed numpy set.

    It is both a :class:`pickle.UnpicklingError` and a :class:`ValueError`.
    """


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals numpy arrays need.

    Any other global (``os.system``, ``builtins.eval``, ...) raises
    :class:`RefusedGlobalError` naming it, before it is looked up.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed numpy global; refuse any other before importing it."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobalError(
                f"refused to unpickle global {module}.{name}: only numpy arrays are allowed"
            ) from None


def safe_load(file: IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle from a binary file with :class:`NumpyOnlyUnpickler`.

    ``encoding="latin1"`` lets numpy arrays pickled by Python 2 load.
    """
    return NumpyOnlyUnpickler(file, encoding=encoding).load()


def safe_loads(data: bytes, *, encoding: str = "latin1") -> Any:
    """Unpickle bytes with :class:`NumpyOnlyUnpickler`."""
    return safe_load(io.BytesIO(data), encoding=encoding)
