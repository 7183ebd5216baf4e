"""The semi-conditional normalizing flow (paper Sec. 3.3, Eqs. 3-4).

A large unconditional flow f maps x to z = (z_aux, z_f); a small conditional flow
h(z_f; y) maps the deepest components z_f to z_h. Because only h sees y,

    log p(x, y) = log|df/dx| + log N(z_aux) + log|dh/dz_f| + log p(z_h | y) + log p(y)

and log p(x) = logsumexp_y log p(x, y) costs one pass of f and one batched pass of h over
all K labels.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..nn import ChannelAffine
from .loss import loss_terms as _loss_terms
from ..bijectors.actnorm import ConditionalActNorm
from ..bijectors.base import Bijector, Identity
from ..bijectors.ffjord import FFJORD
from .priors import ClassConditionalGaussian, DiagonalGaussian


class SemiConditionalFlow(nn.Module):
    """Exact-likelihood generative model of objects and labels.

    Args:
        unconditional: bijector f; ``f.forward(x)`` returns z as a flat (B, D) tensor whose
            last ``deep_dim`` columns are z_f (the rest are z_aux).
        conditional: conditional bijector h; ``h.forward(z_f, context=y)`` returns z_h.
            Use :class:`~scnf.bijectors.Identity` with a class-conditional
            ``latent_prior`` for SCNF-GMM.
        num_classes: K.
        deep_dim: the dimension of z_f.
        class_prior: p(y), K probabilities (fixed); uniform by default.
        input_shape: the shape of one object, e.g. (1, 28, 28) or (2,); taken from
            ``unconditional.input_shape`` when not given.
        latent_prior: the distribution of z_h; a zero-mean diagonal Gaussian with
            learnable scale by default. A prior with ``conditional = True`` takes y.
        aux_prior: the distribution of z_aux; a zero-mean learnable diagonal Gaussian.
    """

    def __init__(self, unconditional: Bijector, conditional: Bijector, num_classes: int,
                 deep_dim: int, class_prior: Sequence[float] | torch.Tensor | None = None, *,
                 input_shape: Sequence[int] | None = None, latent_prior: nn.Module | None = None,
                 aux_prior: nn.Module | None = None):
        super().__init__()
        input_shape = input_shape if input_shape is not None else getattr(unconditional, "input_shape", None)
        if input_shape is None:
            raise ValueError("SemiConditionalFlow: pass input_shape (the shape of one object)")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.total_dim = math.prod(self.input_shape)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not 0 < int(deep_dim) <= self.total_dim:
            raise ValueError(f"deep_dim must lie in [1, {self.total_dim}], got {deep_dim}")
        self.unconditional = unconditional
        self.conditional = conditional
        self.num_classes = int(num_classes)
        self.deep_dim = int(deep_dim)
        self.aux_dim = self.total_dim - self.deep_dim
        self.latent_prior = latent_prior if latent_prior is not None else DiagonalGaussian(self.deep_dim)
        self.aux_prior = aux_prior if aux_prior is not None else DiagonalGaussian(self.aux_dim)
        if class_prior is None:
            probs = torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=torch.float64)
        else:
            probs = torch.as_tensor(class_prior, dtype=torch.float64).flatten()
            if probs.numel() != self.num_classes or (probs <= 0).any() or not torch.isfinite(probs).all():
                raise ValueError(
                    f"class_prior must hold {self.num_classes} positive numbers, got {probs.tolist()}")
            probs = probs / probs.sum()
        # float64, so a float64 model gets log p(y) exactly; each use casts to the data's dtype
        self.register_buffer("log_class_prior", probs.log())

    # ------------------------------------------------------------------ checks
    def parameter_counts(self) -> dict:
        """Learnable parameters of f (with z_aux's prior) and of h (with z_h's prior), the
        split the paper's released model is counted by."""
        n = lambda *mods: sum(p.numel() for m in mods for p in m.parameters())
        return {"f": n(self.unconditional, self.aux_prior), "h": n(self.conditional, self.latent_prior)}

    def _check_x(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if tuple(x.shape[1:]) != self.input_shape or x.dim() != len(self.input_shape) + 1:
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        if not torch.compiler.is_compiling() and not torch.isfinite(x).all():  # compiled: the Trainer's data
            raise ValueError("x contains NaN or inf")
        dtype = next(self.parameters()).dtype
        if x.dtype != dtype:
            raise ValueError(f"x has dtype {x.dtype} but the model computes in {dtype}: pass x.to({dtype}) "
                             f"or convert the model with .to({x.dtype})")
        return x

    def _check_y(self, y, n: int) -> torch.Tensor:
        if isinstance(y, int):
            y = torch.full((n,), y, dtype=torch.long)
        y = torch.as_tensor(y)
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"labels must be integers, got dtype {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(y.shape)}")
        if n and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got values in [{int(y.min())}, {int(y.max())}]")
        return y.long().to(self.log_class_prior.device)

    # ------------------------------------------------------------------ pieces
    def _split(self, z):
        return z[:, : self.aux_dim], z[:, self.aux_dim:]

    def _f(self, x):
        """One pass of f: z_aux, z_f and log|df/dx| + log p(z_aux)."""
        z, ld = self.unconditional(self._check_x(x))
        z_aux, z_f = self._split(z)
        return z_aux, z_f, ld + self.aux_prior.log_prob(z_aux)

    def _log_h(self, z_f, y):
        z_h, ld = self.conditional(z_f, context=y)
        return ld + self.latent_prior.log_prob(z_h, y)

    def log_conditional_deep(self, z_f: torch.Tensor) -> torch.Tensor:
        """log p(z_f | y=k) for every k, shape (B, K): one batched pass of h over B*K rows."""
        b, k = z_f.shape[0], self.num_classes
        if isinstance(self.conditional, Identity) and hasattr(self.latent_prior, "log_prob_all"):
            return self.latent_prior.log_prob_all(z_f)
        z_rep = z_f.repeat_interleave(k, 0)
        y_rep = torch.arange(k, device=z_f.device).repeat(b)
        return self._log_h(z_rep, y_rep).view(b, k)

    # ------------------------------------------------------------------ densities
    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x, y=k) for every k, shape (B, K) (paper Eq. 3 before the sum)."""
        _, z_f, base = self._f(x)
        return base[:, None] + self.log_conditional_deep(z_f) + self.log_class_prior.to(base.dtype)

    def log_prob(self, x: torch.Tensor, y) -> torch.Tensor:
        """log p(x, y), shape (B,) (paper Eq. 4)."""
        y = self._check_y(y, x.shape[0] if isinstance(x, torch.Tensor) else 0)
        _, z_f, base = self._f(x)
        return base + self._log_h(z_f, y) + self.log_class_prior[y].to(base.dtype)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = logsumexp_y log p(x, y), shape (B,)."""
        return torch.logsumexp(self.log_joint(x), 1)

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        """The exact posterior p(y | x), shape (B, K)."""
        return torch.softmax(self.log_joint(x), 1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_joint(x).argmax(1)

    # ------------------------------------------------------------------ training (scnf.protocol.TrainableModel)
    classifies = True
    density_of = "dequantised"

    def log_density(self, x: torch.Tensor, log_joint: torch.Tensor) -> torch.Tensor:
        """The exact log p(x) from :meth:`log_joint` of the same ``x``."""
        return torch.logsumexp(log_joint, 1)

    def training_forward(self, x: torch.Tensor) -> torch.Tensor:
        """What a training step computes of a batch: :meth:`log_joint`."""
        return self.log_joint(x)

    def loss_terms(self, out: torch.Tensor, y: torch.Tensor, cfg, n_rows: int | None = None,
                   n_labelled: int | None = None, target: torch.Tensor | None = None, pseudo: bool = False):
        """Eq. (1) and the optional terms from ``out`` = :meth:`log_joint` (:func:`scnf.models.loss.loss_terms`)."""
        return _loss_terms(out, y, cfg, n_rows, n_labelled, target, pseudo)

    def needs_initialisation(self) -> bool:
        """Whether an ActNorm still waits for its data-dependent initialisation (it runs on the
        next forward pass in training mode)."""
        return any(isinstance(m, ChannelAffine) and not bool(m.initialized) for m in self.modules())

    def diagnostics(self, over_run: bool = False) -> dict:
        """FFJORD parts: the function evaluations of each part's last solve (``ffjord_last_nfe``),
        or with ``over_run`` the mean per solve since the model was built (``ffjord_mean_nfe``);
        empty for flows without ODE solves."""
        solvers = [m for m in self.modules() if isinstance(m, FFJORD)]
        if not solvers:
            return {}
        if over_run:
            return {"ffjord_mean_nfe": sum(m.total_nfe for m in solvers) / max(sum(m.num_solves for m in solvers), 1)}
        return {"ffjord_last_nfe": [m.last_nfe for m in solvers]}

    def class_scores(self, x: torch.Tensor, log_joint: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x, y=k): its argmax is the exact posterior's."""
        return self.log_joint(x) if log_joint is None else log_joint

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``h``: the conditional flow and z_h's prior; ``f``: everything else (f, z_aux's prior)."""
        h = list(self.conditional.parameters()) + list(self.latent_prior.parameters())
        ids = {id(p) for p in h}
        return {"f": [p for p in self.parameters() if id(p) not in ids], "h": h}

    # ------------------------------------------------------------------ latents
    def encode(self, x: torch.Tensor, y):
        """(z_aux, z_f, z_h) for objects x with labels y."""
        y = self._check_y(y, x.shape[0] if isinstance(x, torch.Tensor) else 0)
        z, _ = self.unconditional(self._check_x(x))
        z_aux, z_f = self._split(z)
        z_h, _ = self.conditional(z_f, context=y)
        return z_aux, z_f, z_h

    def decode(self, z_aux: torch.Tensor, z_h: torch.Tensor, y) -> torch.Tensor:
        """Invert: z_f = h^-1(z_h; y), x = f^-1([z_aux, z_f])."""
        if z_h.dim() != 2 or z_h.shape[1] != self.deep_dim:
            raise ValueError(f"z_h must have shape (B, {self.deep_dim}), got {tuple(z_h.shape)}")
        if z_aux.shape != (z_h.shape[0], self.aux_dim):
            raise ValueError(f"z_aux must have shape ({z_h.shape[0]}, {self.aux_dim}), got {tuple(z_aux.shape)}")
        y = self._check_y(y, z_h.shape[0])
        z_f, _ = self.conditional.inverse(z_h, context=y)
        x, _ = self.unconditional.inverse(torch.cat([z_aux, z_f], 1))
        return x

    @torch.no_grad()
    def sample(self, n: int, y=None, temperature: float = 1.0, generator: torch.Generator | None = None):
        """Draw n objects; returns (x, y). y is drawn from p(y) when not given.

        Image samples lie in the model's support (slightly wider than [0, 1], see
        :class:`~scnf.bijectors.ToLogits`), so :meth:`log_marginal` scores them; clamp them
        to [0, 1] only for display."""
        if int(n) < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        dev = self.log_class_prior.device
        if y is None:
            y = torch.multinomial(self.log_class_prior.exp(), int(n), replacement=True, generator=generator)
        y = self._check_y(y, int(n))
        if getattr(self.latent_prior, "conditional", False):
            z_h = self.latent_prior.sample(int(n), y, temperature=temperature, generator=generator)
        else:
            z_h = self.latent_prior.sample(int(n), temperature=temperature, generator=generator)
        z_aux = self.aux_prior.sample(int(n), temperature=temperature, generator=generator)
        return self.decode(z_aux.to(dev), z_h.to(dev), y), y


def class_prior_from_labels(y_semi: torch.Tensor, k: int) -> torch.Tensor:
    """p(y) as the labelled rows' class frequencies (``y_semi`` = -1 on unlabelled rows), as the
    authors' script sets it; a class without a labelled row is an error."""
    y_semi = torch.as_tensor(y_semi)
    counts = torch.bincount(y_semi[y_semi >= 0], minlength=k).float()
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        raise ValueError(f"class(es) {missing} have no labelled row")
    return counts / counts.sum()


@torch.no_grad()
def check_invertibility(model: SemiConditionalFlow, x: torch.Tensor, y=None) -> float:
    """Max abs error of ``decode(encode(x, y), y)`` against ``x`` (y: predicted labels by
    default), in eval mode under the model's current precision (reported after training)."""
    was_training = model.training
    model.eval()
    try:
        x = x.to(next(model.parameters()).device)
        if y is None:
            y = model.predict(x)
        z_aux, _, z_h = model.encode(x, y)
        x_rec = model.decode(z_aux, z_h, y)
        return float((x_rec.float() - x.float()).abs().max())
    finally:
        model.train(was_training)


@torch.no_grad()
def class_aware_init(model: SemiConditionalFlow, x: torch.Tensor, y: torch.Tensor) -> None:
    """Initialise the conditional part from the labelled rows' z_f (``init_from_labels``).

    Runs the data-dependent initialisation of f's ActNorms on the batch, then sets, from the
    labelled rows' z_f: for SCNF-GMM each class mean (the authors' code initialises its GMM
    with k-means); for a flow h that starts with a :class:`ConditionalActNorm`
    (``h_class_affine``), its per-class shift (class means) and pooled scale. Finally h's
    own ActNorms are (re-)initialised on the batch. The trainer calls it at the first step
    after ``warmup_f_steps`` (step 0 without a warm-up), so z_f has settled first.
    """
    lab = y >= 0
    model.train()
    model.unconditional(x)  # data-dependent initialisation of f
    if lab.any():
        z, _ = model.unconditional(x[lab])
        z_f, y_lab = z[:, model.aux_dim:], y[lab]
        if isinstance(model.latent_prior, ClassConditionalGaussian):
            for k in range(model.num_classes):
                sel = y_lab == k
                if sel.any():
                    model.latent_prior.loc.data[k] = z_f[sel].mean(0)
        first = next(iter(model.conditional.modules()), None)
        for mod in model.conditional.modules():
            if isinstance(mod, ConditionalActNorm):
                first = mod
                break
        if isinstance(first, ConditionalActNorm):
            first.initialize_from_labelled(z_f, y_lab)
    for mod in model.conditional.modules():  # (re-)initialise h's ActNorms (its nets' too) on the new z_f
        if isinstance(mod, ChannelAffine):
            mod.initialized.fill_(False)
    model.log_joint(x)
