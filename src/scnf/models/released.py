"""The authors' released checkpoint, loaded into scnf.

The authors' code (``train-flow-ssl.py`` of AndrewAtanov/semi-supervised-flow-pytorch) saves
``torch.save(model.state_dict())`` of a ``FlowPDF``: f under ``flow.module.modules_.<i>``
(``flow.modules_`` without ``DataParallel``), h under ``prior.flow.modules_.<i>``, one class
table ``prior.flow.embeddings.weight`` and the two Gaussian priors. scnf's default builders
have the same structure (:func:`scnf.mnist_scnf`; :func:`released_toy_scnf` for their 2-D
toy model), so the mapping is one to one, with three conversions:

* ActNorm: theirs is ``(x - bias) * exp(logs)``, ours ``(x + bias) * exp(log_scale)``: the
  bias changes sign; ``requires_init = 0`` (initialised) becomes ``initialized = True``.
* Squeeze: their channel ``(2i + j) * C + c`` is ``torch.pixel_unshuffle``'s ``4c + 2i + j``;
  the 1x1 conv that follows a squeeze of C > 1 channels gets its columns permuted.
* 1x1 nets (h, the toy's f): their ``Conv2d`` weight [out, in, 1, 1] is our ``Linear``
  weight [out, in].

Every key is checked: a missing, unexpected or mis-shaped one raises
:class:`ReleasedCheckpointError` (a ``ValueError``) naming it; so does a checkerboard mask
other than the one our layer computes and a prior mean other than 0 (their code never trains
it; ours has none).

``scnf import-released CHECKPOINT --out RUN_DIR`` (:func:`scnf.runs.imported.import_released`) writes a run
directory that ``scnf evaluate``, ``scnf analyse`` and :func:`scnf.runs.run.load_run` read.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .builders import conditional_glow, mnist_scnf, vector_unconditional
from ..bijectors.actnorm import ActNorm
from ..bijectors.base import Flatten, Sequential
from ..bijectors.conv1x1 import InvertibleConv2d
from ..bijectors.coupling import AffineCoupling, CouplingLayer, MaskedCouplingLayer, checkerboard_mask
from ..bijectors.logits import ToLogits
from ..bijectors.reshape import FactorOut, SpaceToDepth
from .flow import SemiConditionalFlow
from ..nn import MLP, ChannelAffine, ResidualConvNet, ResidualMLP

MODELS = ("mnist", "toy")

#: the released toy model's class table has this many rows (``ssl_nclasses``); moons uses 2
TOY_EMBED_ROWS = 10


class ReleasedCheckpointError(ValueError):
    """The file is not the authors' checkpoint of the chosen model; the message names the key."""


def released_toy_scnf(h_hidden: int = 256, num_classes: int = 2) -> SemiConditionalFlow:
    """The authors' 2-D toy model (``flows.toy2d_flow`` + ``create_cond_flow`` with their
    defaults and ``ssl_l = 1``): f = 2 x (invertible linear, two-pass coupling with
    1 -> 64 -> 64 -> 2 LeakyReLU nets, ActNorm); h = 3 x (ActNorm, invertible linear,
    conditional coupling with residual nets ``h_hidden`` wide, 4 blocks), one class table
    of 10 x 10."""
    f = vector_unconditional(2, blocks=2, hidden=64, layers=2)
    h = conditional_glow(2, num_classes, levels=1, steps=3, hidden=h_hidden, blocks=4, net="resmlp",
                         embed_dim=TOY_EMBED_ROWS)
    return SemiConditionalFlow(f, h, num_classes, 2, input_shape=(2,))


# ------------------------------------------------------------------ the mapping
class _Keys:
    """The checkpoint's tensors, handed out once each; what is left over is reported."""

    def __init__(self, sd: dict, source: str):
        self.sd, self.source, self.used = sd, source, set()

    def take(self, key: str, shape: tuple | None = None) -> torch.Tensor:
        if key not in self.sd:
            raise ReleasedCheckpointError(f"{self.source}: missing key {key!r}")
        v = self.sd[key]
        if not isinstance(v, torch.Tensor):
            raise ReleasedCheckpointError(f"{self.source}: {key!r} is not a tensor")
        if shape is not None and tuple(v.shape) != tuple(shape):
            raise ReleasedCheckpointError(f"{self.source}: key {key!r} has shape {tuple(v.shape)}, "
                                          f"expected {tuple(shape)}")
        self.used.add(key)
        return v.detach()

    def leftover(self) -> list[str]:
        return [k for k in self.sd if k not in self.used]


def _copy(param: torch.Tensor, value: torch.Tensor) -> None:
    param.data.copy_(value.to(param.dtype).reshape(param.shape))


def _actnorm(keys: _Keys, prefix: str, an: ChannelAffine) -> None:
    c = an.num_channels
    _copy(an.log_scale, keys.take(prefix + "logs", (c,)))
    _copy(an.bias, -keys.take(prefix + "bias", (c,)).to(torch.float64))
    an.initialized.fill_(bool(int(keys.take(prefix + "requires_init", (1,))) == 0))


def _conv(keys: _Keys, prefix: str, conv: nn.Module, shape: tuple) -> None:
    """A conv or linear layer; ``shape`` is the checkpoint's weight shape."""
    _copy(conv.weight, keys.take(prefix + "weight", shape))
    _copy(conv.bias, keys.take(prefix + "bias", (shape[0],)))


def _conv_net(keys: _Keys, prefix: str, net: ResidualConvNet) -> None:
    """Their ``get_net``: .0 pad, .1 3x3 conv, .2.. residual blocks (convs at .net.2, .net.5),
    then ActNorm, ReLU, pad, last conv."""
    layers = list(net.net)
    blocks = layers[1:-2]
    c0 = layers[0][1]
    _conv(keys, prefix + "1.", c0, tuple(c0.weight.shape))
    for k, blk in enumerate(blocks):
        for theirs, ours in (("net.2.", blk.body[1][1]), ("net.5.", blk.body[3][1])):
            _conv(keys, f"{prefix}{2 + k}.{theirs}", ours, tuple(ours.weight.shape))
    n = 2 + len(blocks)
    _actnorm(keys, f"{prefix}{n}.", layers[-2][0])
    last = layers[-1][1]
    _conv(keys, f"{prefix}{n + 3}.", last, tuple(last.weight.shape))


def _linear_shape(lin: nn.Linear) -> tuple:
    return (*lin.weight.shape, 1, 1)


def _vector_net(keys: _Keys, prefix: str, net: nn.Module) -> None:
    if isinstance(net, MLP):  # toy f: conv, LeakyReLU, conv, LeakyReLU, conv
        for i, lin in enumerate(net.net):
            if isinstance(lin, nn.Linear):
                _conv(keys, f"{prefix}{i}.", lin, _linear_shape(lin))
        return
    if not isinstance(net, ResidualMLP):  # pragma: no cover - our builders make one of the two
        raise TypeError(type(net).__name__)
    layers = list(net.net)  # Linear, blocks (ReLU, Linear, ReLU, Linear), [ActNorm, ReLU], Linear
    blocks = layers[1:-2]
    _conv(keys, prefix + "0.", layers[0], _linear_shape(layers[0]))
    for k, blk in enumerate(blocks):
        for theirs, ours in (("net.1.", blk.body[1]), ("net.3.", blk.body[3])):
            _conv(keys, f"{prefix}{1 + k}.{theirs}", ours, _linear_shape(ours))
    n = 1 + len(blocks)
    _actnorm(keys, f"{prefix}{n}.", layers[-2][0])
    _conv(keys, f"{prefix}{n + 2}.", layers[-1], _linear_shape(layers[-1]))


def _leaves(b):
    """Our layers in the order of their flat ``modules_`` list (a FactorOut before its inner
    layers; the final Flatten is ours only)."""
    if isinstance(b, Sequential):
        for layer in b.layers:
            yield from _leaves(layer)
    elif isinstance(b, FactorOut):
        yield b
        yield from _leaves(b.inner)
    elif not isinstance(b, Flatten):
        yield b


def _squeeze_permutation(c: int) -> torch.Tensor:
    """Our channel b = 4c + 2i + j after pixel_unshuffle holds their channel (2i + j) * C + c."""
    b = torch.arange(4 * c)
    return (b % 4) * c + b // 4


def _map_flow(keys: _Keys, prefix: str, flow: nn.Module) -> None:
    squeezed_from = None  # channels before the last squeeze, until the next 1x1 conv
    for i, layer in enumerate(_leaves(flow)):
        p = f"{prefix}{i}."
        if isinstance(layer, InvertibleConv2d):
            w = keys.take(p + "W", tuple(layer.weight.shape))
            if squeezed_from is not None and squeezed_from > 1:
                w = w[:, _squeeze_permutation(squeezed_from)]
            _copy(layer.weight, w)
            squeezed_from = None
        elif isinstance(layer, ActNorm):
            _actnorm(keys, p, layer)
        elif isinstance(layer, MaskedCouplingLayer):
            mask = keys.take(p + "mask")
            c = layer.num_channels
            if mask.dim() != 4 or mask.shape[:2] != (1, c):
                raise ReleasedCheckpointError(f"{keys.source}: key {p + 'mask'!r} has shape "
                                              f"{tuple(mask.shape)}, expected (1, {c}, H, W)")
            ours = checkerboard_mask(mask.shape[2], mask.shape[3], layer.parity).expand_as(mask)
            if not torch.equal(mask.float(), ours):
                raise ReleasedCheckpointError(
                    f"{keys.source}: {p + 'mask'!r} is not the checkerboard of parity {layer.parity} "
                    "that this layer of the released model has")
            _conv_net(keys, p + "net.", layer.net)
        elif isinstance(layer, CouplingLayer):
            _conv_net(keys, p + "net1.", layer.net1)
            _conv_net(keys, p + "net2.", layer.net2)
        elif isinstance(layer, AffineCoupling):  # the toy f's coupling and h's conditional ones
            if layer.net1 is not None:
                _vector_net(keys, p + "net1.", layer.net1)
            _vector_net(keys, p + "net2.", layer.net2)
        elif isinstance(layer, SpaceToDepth):
            squeezed_from = _channels_before(flow, layer)
        elif isinstance(layer, (ToLogits, FactorOut)):
            pass
        else:  # pragma: no cover - our builders make only the layers above
            raise TypeError(f"no mapping for {type(layer).__name__}")


def _channels_before(flow: nn.Module, squeeze: SpaceToDepth) -> int:
    """Channels entering ``squeeze``: the width of the last 1x1 conv before it."""
    last = None
    for layer in _leaves(flow):
        if layer is squeeze:
            break
        if isinstance(layer, InvertibleConv2d):
            last = layer
    return last.num_channels


def _gaussian(keys: _Keys, prefix: str, prior: nn.Module) -> None:
    mean = keys.take(prefix + "mean", tuple(prior.log_sigma.shape))
    if mean.numel() and bool((mean != 0).any()):
        raise ReleasedCheckpointError(f"{keys.source}: {prefix + 'mean'!r} is not 0; the released code "
                                      "never trains it and scnf's prior has no mean")
    _copy(prior.log_sigma, keys.take(prefix + "logsigma", tuple(prior.log_sigma.shape)))


def _f_prefix(sd: dict) -> str:
    return "flow.module.modules_." if any(k.startswith("flow.module.") for k in sd) else "flow.modules_."


def toy_hidden(sd: dict) -> int:
    """``ssl_hd`` of a released toy state dict (the width of h's first 1x1 conv)."""
    key = "prior.flow.modules_.2.net1.0.weight"
    if key not in sd or not isinstance(sd[key], torch.Tensor) or sd[key].dim() != 4:
        raise ReleasedCheckpointError(f"missing key {key!r}: not the released toy model")
    return int(sd[key].shape[0])


def guess_model(sd: dict) -> str | None:
    """Which released model a state dict looks like ("toy": f starts with a 2 x 2 invertible
    linear layer; "mnist": checkerboard-masked couplings), None when neither."""
    try:
        first = sd.get(_f_prefix(sd) + "0.W")
    except Exception:  # noqa: BLE001 - a hint only
        return None
    if isinstance(first, torch.Tensor) and tuple(first.shape) == (2, 2):
        return "toy"
    if any(isinstance(k, str) and k.endswith(".mask") for k in sd):
        return "mnist"
    return None


def _nonfinite(sd: dict, source: str) -> None:
    for key, v in sd.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            bad = int((~torch.isfinite(v)).sum())
            if bad:
                raise ReleasedCheckpointError(
                    f"{source}: key {key!r} holds {bad} NaN or infinite value(s) of {v.numel()}: a damaged file, or "
                    "weights saved after training diverged; expected finite weights, nothing was imported")


def load_released_state_dict(sd: dict, model: str = "mnist", source: str = "checkpoint") -> SemiConditionalFlow:
    """A :class:`SemiConditionalFlow` (float32, eval mode) computing the function of the
    authors' model with the state dict ``sd`` (``model``: ``"mnist"`` or ``"toy"``). A state
    dict that does not fit ``model`` but looks like the other one says so (pass ``--model``);
    NaN or infinite weights are refused, naming the key."""
    try:
        net = _load_released_state_dict(sd, model, source)
    except ReleasedCheckpointError as e:
        guess = guess_model(sd) if isinstance(sd, dict) else None
        if guess is not None and guess != model and model in MODELS:
            raise ReleasedCheckpointError(f"{e}; the file looks like the released {guess} model, not {model}: "
                                          f"pass --model {guess} (model={guess!r})") from None
        raise
    _nonfinite(sd, source)
    return net


def _load_released_state_dict(sd: dict, model: str, source: str) -> SemiConditionalFlow:
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise ReleasedCheckpointError(f"{source} is not a state dict (a dict of named tensors)")
    net = mnist_scnf() if model == "mnist" else released_toy_scnf(toy_hidden(sd))
    keys = _Keys(sd, source)
    with torch.no_grad():
        _map_flow(keys, _f_prefix(sd), net.unconditional)
        _map_flow(keys, "prior.flow.modules_.", net.conditional)
        emb = net.conditional.embedding
        table = keys.take("prior.flow.embeddings.weight")
        if table.dim() != 2 or table.shape[1] != emb.embedding_dim or table.shape[0] < net.num_classes:
            raise ReleasedCheckpointError(
                f"{source}: key 'prior.flow.embeddings.weight' has shape {tuple(table.shape)}, expected "
                f"({emb.num_embeddings} or more, {emb.embedding_dim})")
        _copy(emb.weight, table[: emb.num_embeddings])  # rows past the classes are never read
        _gaussian(keys, "prior.shallow_prior.", net.aux_prior)
        _gaussian(keys, "prior.deep_prior.", net.latent_prior)
    extra = keys.leftover()
    if extra:
        raise ReleasedCheckpointError(f"{source}: unexpected key {extra[0]!r}"
                                      + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                                      + f": not the released {model} model")
    return net.eval()


#: the first bytes of a file ``torch.save`` wrote in its legacy (non-zip) format: the pickled magic number
_LEGACY_TORCH = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
EXPECTED = "expected the authors' state dict, saved with torch.save(model.state_dict()) (their pretrained/model.torch)"


def _unreadable(path: Path, head: bytes, size: int, e: Exception) -> str:
    """What the file ``path`` (whose first bytes are ``head``) is, when torch cannot read it."""
    import re
    import zipfile

    msg = " ".join(str(e).split())
    if size == 0:
        return f"{path} is empty"
    if head[:4] == b"PK\x03\x04":
        named = re.search(r"GLOBAL\s+([\w.]+)", msg)
        if named:
            return (f"{path} holds the Python object {named.group(1)}, not only tensors; refused, "
                    "nothing in it was run")
        if not zipfile.is_zipfile(path) or isinstance(e, zipfile.BadZipFile) or "zip archive" in msg:
            return f"{path} is truncated or damaged: a PyTorch zip file that cannot be opened ({size:,} bytes)"
        return f"{path} is a PyTorch file whose content cannot be read as tensors ({type(e).__name__})"
    if head.startswith(_LEGACY_TORCH):
        return f"{path} is truncated or damaged: a PyTorch file (legacy format) that cannot be read ({size:,} bytes)"
    if head[:1] == b"\x80":
        return f"{path} is a plain Python pickle, not a file torch.save wrote; it was not unpickled (that runs code)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"{path} is a text file, not a PyTorch checkpoint"
    return f"{path} is not a PyTorch checkpoint (it starts with the bytes {head[:8]!r})"


def read_released(path: str | Path) -> dict:
    """Read the authors' checkpoint (tensors only, on the CPU; nothing in it is run). A file
    that is not one raises :class:`ReleasedCheckpointError`: one line saying what the file is
    and what was expected."""
    import warnings

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(256)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ReleasedCheckpointError(f"{_unreadable(path, head, path.stat().st_size, e)}; {EXPECTED}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ReleasedCheckpointError(f"{path} holds a {type(sd).__name__}, not a state dict; {EXPECTED}")
    return sd
