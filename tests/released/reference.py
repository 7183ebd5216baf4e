"""The reference data of the authors' released model (``shared/reference/released-model``):
where it lies, and the documented recipe that regenerates the full-size MNIST state dict."""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
#: the folder beside the repository (override with SCNF_RELEASED_REFERENCE)
REFERENCE = Path(os.environ.get("SCNF_RELEASED_REFERENCE", ROOT.parent / "shared" / "reference" / "released-model"))

#: module index -> checkerboard parity, as the README gives it
MNIST_MASK_PARITY = {2: 0, 5: 1, 8: 0, 19: 0, 22: 1, 25: 0, 36: 0, 39: 1, 42: 0}


def reference_file(name: str) -> Path:
    """The path of a reference file; skips the test, saying why, when it is not there."""
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference data of the released model not found: {path} "
                    "(set SCNF_RELEASED_REFERENCE to the folder holding it)")
    return path


def read_keys(path):
    with open(path) as fh:
        fh.readline()  # header
        return [(k, tuple(int(n) for n in s.split(",")), d)
                for k, s, d in (line.rstrip("\n").split("\t") for line in fh)]


def recipe(rows, seed_base, mask_parity=None):
    """The README's recipe, verbatim in effect: the authors'-format state dict."""
    keys = {k for k, _, _ in rows}
    out = {}
    for i, (key, shape, dtype) in enumerate(rows):
        prefix, leaf = key.rsplit(".", 1)

        def n():
            return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed_base + i))

        if leaf == "requires_init":
            v = torch.zeros(shape, dtype=torch.float64)
        elif leaf == "mask":
            p = mask_parity[int(prefix.rsplit(".", 1)[1])]
            _, c, h, w = shape
            hw = torch.arange(h)[:, None] + torch.arange(w)[None, :]
            v = ((hw + p) % 2).to(torch.float64).expand(1, c, h, w)
        elif key.startswith("prior.") and leaf == "mean":
            v = torch.zeros(shape, dtype=torch.float64)
        elif leaf == "W":
            v = torch.eye(shape[0], dtype=torch.float64) + (0.3 / math.sqrt(shape[0])) * n()
        elif key.endswith("embeddings.weight"):
            v = torch.eye(*shape, dtype=torch.float64) + 0.5 * n()
        elif leaf == "logs":
            v = 0.2 * n()
        elif leaf == "bias" and prefix + ".logs" in keys:
            v = 0.5 * n()
        elif leaf == "logsigma":
            v = 0.3 * n()
        elif leaf == "weight" and len(shape) == 4:
            v = (0.5 / math.sqrt(shape[1] * shape[2] * shape[3])) * n()
        elif leaf == "bias":
            v = 0.1 * n()
        else:
            raise KeyError(key)
        out[key] = v.to(getattr(torch, dtype)).contiguous()
    return out


def mnist_state_dict() -> dict:
    """The recipe-generated full-size MNIST state dict, checked against the published sha256s
    (a different torch build that drew other numbers fails here, not in a comparison)."""
    sd = recipe(read_keys(reference_file("mnist-keys.tsv")), 1000, MNIST_MASK_PARITY)
    with open(reference_file("mnist-recipe-checksums.tsv")) as fh:
        header = fh.readline().rstrip("\n").split("\t")
        rows = [dict(zip(header, line.rstrip("\n").split("\t"))) for line in fh]
    assert len(rows) == len(sd)
    bad = [r["key"] for r in rows
           if hashlib.sha256(sd[r["key"]].numpy().tobytes()).hexdigest() != r["sha256"]]
    assert not bad, f"the recipe drew other tensors than the reference ({len(bad)} keys, e.g. {bad[0]})"
    return sd
