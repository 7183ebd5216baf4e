"""FFJORD: a continuous normalising flow bijector on vectors.

A continuous normalising flow (Chen et al. 2018; FFJORD, Grathwohl et al.
2018) defines the map ``x -> z`` as the solution at time ``T`` of the ODE

    dz/dt = f(z(t), t)            z(0) = x,

and, in the conditional version of the SCNF paper (Appendix C), of
``dz/dt = f(z(t), t, y)`` where ``y`` is the class label, fed to the dynamics
network through a learnable class embedding.

The log-determinant follows from the instantaneous change of variables,
``d log|det dz(t)/dx| / dt = tr(df/dz)`` (equivalently the log-density obeys
``d log p(z(t)) / dt = -tr(df/dz)``), which is integrated jointly with ``z``.
The trace is computed exactly (``D`` vector-Jacobian products, fine for small
``D``) or with Hutchinson's estimator ``e^T (df/dz) e`` (one vector-Jacobian
product), the noise ``e`` being drawn once per solve and held fixed within it.

The ODE is solved by ``torchdiffeq`` (``odeint`` or, with ``adjoint=True``,
``odeint_adjoint``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from ..nn import class_embedding
from ..noise import rademacher_like, randn_like
from .base import Bijector

__all__ = ["FFJORD", "ODEFunc", "ConcatSquashLinear", "ODESolverError", "EXACT_TRACE_MAX_DIM"]

#: ``trace="auto"`` uses the exact trace up to this dimension, Hutchinson above.
EXACT_TRACE_MAX_DIM: int = 4

#: torchdiffeq solvers with adaptive step size (these accept ``max_num_steps``).
_ADAPTIVE_SOLVERS = frozenset(
    {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5"}
)

_ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus}


class ODESolverError(RuntimeError):
    """The ODE solver failed (step size underflow, too many steps, non-finite state)."""


class ConcatSquashLinear(nn.Module):
    """Linear layer modulated by time (and an optional context vector).

    ``out = W x * sigmoid(G [t, c] + g) + B [t, c]`` (FFJORD's "concatsquash"),
    where ``c`` is the class embedding for conditional dynamics.
    """

    def __init__(self, dim_in: int, dim_out: int, context_dim: int = 0):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.hyper_gate = nn.Linear(1 + context_dim, dim_out)
        self.hyper_bias = nn.Linear(1 + context_dim, dim_out, bias=False)

    def forward(self, t: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        tc = t.to(x.dtype).reshape(1, 1).expand(x.shape[0], 1)
        if c is not None:
            tc = torch.cat([tc, c], dim=1)
        return self.linear(x) * torch.sigmoid(self.hyper_gate(tc)) + self.hyper_bias(tc)


class ODEFunc(nn.Module):
    """Augmented dynamics ``(z, a) -> (f(z, t, y), tr(df/dz))`` of the flow.

    The network ``f`` is an MLP of :class:`ConcatSquashLinear` layers. The
    class labels and the Hutchinson noise of a solve are bound by
    :class:`_BoundDynamics`, the module actually handed to torchdiffeq (the
    embedding lives here, so its weights are among the adjoint parameters).

    The divergence is differentiable (``create_graph=True``) when gradients are
    enabled by the caller; under ``torch.no_grad()`` the outputs are detached.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        num_layers: int = 3,
        num_classes: int | None = None,
        embed_dim: int | None = None,
        activation: str = "tanh",
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.dim = dim
        self.num_classes = num_classes
        if num_classes is not None:
            self.embedding: nn.Embedding | None = class_embedding(num_classes, embed_dim)
            context_dim = self.embedding.embedding_dim
        else:
            self.embedding = None
            context_dim = 0
        dims = [dim] + [hidden] * num_layers + [dim]
        self.layers = nn.ModuleList(
            ConcatSquashLinear(a, b, context_dim) for a, b in zip(dims[:-1], dims[1:])
        )
        self.act = _ACTIVATIONS[activation]()
        #: cumulative number of evaluations of the augmented dynamics
        self.nfe: int = 0

    def velocity(self, t: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The vector field ``f(z, t, y)`` with ``y = labels`` (ignored if unconditional)."""
        c = None
        if self.embedding is not None:
            if labels is None:
                raise ValueError("conditional dynamics need class labels (context)")
            c = self.embedding(labels).to(z.dtype)
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(t, h, c)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h

    def forward(
        self,
        t: torch.Tensor,
        states: tuple[torch.Tensor, torch.Tensor],
        labels: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(dz/dt, da/dt)`` with ``da/dt = tr(df/dz)``.

        The trace is exact when ``noise`` is None, else Hutchinson's estimate with
        that noise.
        """
        self.nfe += 1
        z = states[0]
        outer_grad = torch.is_grad_enabled()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.velocity(t, z, labels)
            div = divergence(f, z, noise, create_graph=outer_grad)
        if not outer_grad:
            f, div = f.detach(), div.detach()
        return f, div


class _BoundDynamics(nn.Module):
    """``ODEFunc`` with the labels and Hutchinson noise of one solve bound to it.

    A fresh instance per solve keeps a solve's context and noise alive for the
    adjoint backward pass, even if other solves run before ``backward()``.
    """

    def __init__(self, net: ODEFunc, labels: torch.Tensor | None, noise: torch.Tensor | None):
        super().__init__()
        self.net = net
        self.labels = labels
        self.noise = noise

    def forward(self, t: torch.Tensor, states: tuple[torch.Tensor, torch.Tensor]):
        return self.net(t, states, self.labels, self.noise)


def divergence(
    f: torch.Tensor, z: torch.Tensor, noise: torch.Tensor | None = None, create_graph: bool = True
) -> torch.Tensor:
    """Per-sample trace of ``df/dz`` for ``f, z`` of shape (B, D).

    With ``noise=None`` the trace is exact (one vector-Jacobian product per
    dimension). Otherwise Hutchinson's estimate ``e^T (df/dz) e`` with ``e = noise``
    (shape (B, D)), unbiased when ``E[e e^T] = I``.
    """
    if noise is None:
        div = f.new_zeros(f.shape[0])
        for i in range(f.shape[1]):
            g = torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=True)[0]
            div = div + g[:, i]
        return div
    vjp = torch.autograd.grad(f, z, noise, create_graph=create_graph, retain_graph=True)[0]
    return (vjp * noise).sum(dim=1)


class FFJORD(Bijector):
    """Continuous normalising flow bijector on (B, dim) vectors.

    ``forward`` integrates the ODE from ``t=0`` to ``t=T`` (data -> latent),
    ``inverse`` from ``T`` back to ``0``. Each returns the log|det| of its own
    direction, so the two sum to zero up to the solver tolerance (exactly the
    same trajectory is not re-traced) and, with Hutchinson's estimator, up to
    the noise (pass the same ``noise`` to both to make them cancel).

    Args:
        dim: data dimension ``D``.
        hidden: width of the hidden layers of the dynamics network.
        num_layers: number of hidden layers of the dynamics network.
        num_classes: if given, the layer is conditional on a class label
            (``context``) through a learnable embedding.
        embed_dim: embedding size; defaults to ``num_classes``; initialised one-hot
            (:func:`scnf.nn.class_embedding`).
        T: integration time.
        trace: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact when
            ``dim <= exact_trace_max_dim``).
        solver: torchdiffeq method (``"dopri5"`` by default).
        rtol, atol: solver tolerances (forward and, with ``adjoint``, backward).
        train_tol: if given, rtol = atol = ``train_tol`` while the module is in training
            mode (a looser tolerance makes training solves cheaper); evaluation
            (``.eval()``) always uses ``rtol``/``atol``.
        adjoint: use ``odeint_adjoint`` (memory O(1) in the number of steps).
        noise: Hutchinson noise, ``"rademacher"`` or ``"gaussian"``.
        activation: ``"tanh"`` or ``"softplus"``.
        max_num_steps: step limit of adaptive solvers; exceeding it raises
            :class:`ODESolverError` instead of running (nearly) forever.
        exact_trace_max_dim: threshold of ``trace="auto"``.
        options: extra torchdiffeq solver options (e.g. ``step_size`` for the
            fixed-grid solvers); override the defaults above.

    Attributes:
        last_nfe: number of dynamics evaluations of the last solve (forward or
            inverse call; the adjoint backward pass is not included).
        total_nfe: cumulative number of dynamics evaluations (adjoint backward
            passes included).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        num_layers: int = 3,
        num_classes: int | None = None,
        embed_dim: int | None = None,
        T: float = 1.0,
        trace: str = "auto",
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        train_tol: float | None = None,
        adjoint: bool = False,
        noise: str = "rademacher",
        activation: str = "tanh",
        max_num_steps: int = 2000,
        exact_trace_max_dim: int = EXACT_TRACE_MAX_DIM,
        options: dict[str, Any] | None = None,
    ):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if trace not in ("auto", "exact", "hutchinson"):
            raise ValueError(f"trace must be 'auto', 'exact' or 'hutchinson', got {trace!r}")
        if noise not in ("rademacher", "gaussian"):
            raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {noise!r}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if T <= 0:
            raise ValueError(f"T must be positive, got {T}")
        for name, tol in (("rtol", rtol), ("atol", atol), ("train_tol", train_tol)):
            if tol is not None and not tol > 0:
                raise ValueError(f"{name} must be positive, got {tol}")
        self.dim = dim
        self.num_classes = num_classes
        self.conditional = num_classes is not None
        self.T = float(T)
        self.trace = trace
        self.exact_trace = trace == "exact" or (trace == "auto" and dim <= exact_trace_max_dim)
        self.solver = solver
        self.rtol = rtol
        self.atol = atol
        self.train_tol = train_tol
        self.adjoint = adjoint
        self.noise_type = noise
        self.options: dict[str, Any] = {}
        if solver in _ADAPTIVE_SOLVERS:
            self.options["max_num_steps"] = max_num_steps
        self.options.update(options or {})
        self.func = ODEFunc(dim, hidden, num_layers, num_classes, embed_dim, activation)
        self.last_nfe: int = 0
        self.num_solves: int = 0

    @property
    def tolerances(self) -> tuple[float, float]:
        """(rtol, atol) of the next solve: ``train_tol`` in training mode when set."""
        if self.training and self.train_tol is not None:
            return self.train_tol, self.train_tol
        return self.rtol, self.atol

    @property
    def total_nfe(self) -> int:
        """Cumulative number of dynamics evaluations (adjoint backward included)."""
        return self.func.nfe

    # ------------------------------------------------------------------ helpers
    def _check(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor | None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"FFJORD expects input of shape (B, {self.dim}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"FFJORD expects a floating point input, got {x.dtype}")
        if not self.conditional:
            return None
        if context is None:
            raise ValueError("this FFJORD layer is conditional: context (class labels) is required")
        context = torch.as_tensor(context, device=x.device)
        if context.dtype.is_floating_point or context.dtype == torch.bool or context.is_complex():
            raise ValueError(f"context must hold integer class labels, got dtype {context.dtype}")
        if context.shape != (x.shape[0],):
            raise ValueError(f"context must have shape ({x.shape[0]},), got {tuple(context.shape)}")
        if context.numel() and (context.min() < 0 or context.max() >= self.num_classes):
            raise ValueError(
                f"context labels must lie in [0, {self.num_classes}), "
                f"got range [{int(context.min())}, {int(context.max())}]"
            )
        return context.long()

    def sample_noise(self, x: torch.Tensor) -> torch.Tensor:
        """Draw Hutchinson noise shaped like ``x`` (Rademacher or Gaussian), from the generator
        :func:`scnf.noise.noise_from` installed (the trainer's, in training)."""
        if self.noise_type == "gaussian":
            return randn_like(x)
        return rademacher_like(x)

    def _solve(
        self, x: torch.Tensor, context: torch.Tensor | None, t0: float, t1: float, noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        labels = self._check(x, context)
        if self.exact_trace:
            noise = None
        elif noise is None:
            noise = self.sample_noise(x)
        elif noise.shape != x.shape:
            raise ValueError(f"noise must have shape {tuple(x.shape)}, got {tuple(noise.shape)}")
        else:
            noise = noise.to(dtype=x.dtype, device=x.device)
        func = _BoundDynamics(self.func, labels, noise)
        t = torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
        state = (x, x.new_zeros(x.shape[0]))
        rtol, atol = self.tolerances
        kwargs: dict[str, Any] = dict(rtol=rtol, atol=atol, method=self.solver, options=self.options)
        start = self.func.nfe
        try:
            if self.adjoint:
                out = odeint_adjoint(
                    func, state, t, adjoint_params=tuple(self.func.parameters()),
                    adjoint_rtol=rtol, adjoint_atol=atol, adjoint_options=dict(self.options),
                    **kwargs,
                )
            else:
                out = odeint(func, state, t, **kwargs)
        except AssertionError as err:
            msg = str(err)
            if "underflow in dt" in msg:
                raise ODESolverError(
                    "ODE solver step size underflow (stiff dynamics) in FFJORD; "
                    f"the dynamics are too stiff for solver={self.solver!r} with rtol={rtol}, "
                    f"atol={atol} (torchdiffeq: {msg}). Consider regularising the dynamics, "
                    "lowering the learning rate or relaxing the tolerances."
                ) from err
            if "max_num_steps exceeded" in msg:
                raise ODESolverError(
                    "ODE solver exceeded max_num_steps (stiff dynamics) in FFJORD "
                    f"(torchdiffeq: {msg}); raise max_num_steps or regularise the dynamics."
                ) from err
            if "non-finite values" in msg:
                raise ODESolverError(
                    "ODE solver produced non-finite values (exploding dynamics) in FFJORD."
                ) from err
            raise
        finally:
            self.last_nfe = self.func.nfe - start
            self.num_solves += 1
        z, logdet = out[0][-1], out[1][-1]
        return z, logdet

    # -------------------------------------------------------------- bijection
    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map data to latent: solve from 0 to T; return ``(z, log|det dz/dx|)``.

        ``noise`` (shape (B, D)) fixes the Hutchinson noise; by default it is drawn
        afresh. It is ignored with the exact trace.
        """
        return self._solve(x, context, 0.0, self.T, noise)

    def inverse(
        self, z: torch.Tensor, context: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map latent to data: solve from T to 0; return ``(x, log|det dx/dz|)``."""
        return self._solve(z, context, self.T, 0.0, noise)

    def extra_repr(self) -> str:
        trace = "exact" if self.exact_trace else f"hutchinson({self.noise_type})"
        return (
            f"dim={self.dim}, num_classes={self.num_classes}, T={self.T}, trace={trace}, "
            f"solver={self.solver}, rtol={self.rtol}, atol={self.atol}, train_tol={self.train_tol}, "
            f"adjoint={self.adjoint}"
        )
