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
The trace is computed exactly (the ``D`` diagonal entries of the Jacobian, fine for
small ``D``) or with Hutchinson's estimator ``e^T (df/dz) e`` (one Jacobian-vector
product), the noise ``e`` being drawn once per solve and held fixed within it. Both are
computed in forward mode, the Jacobian-vector products carried through the layers of the
dynamics network alongside its values (:meth:`ODEFunc.velocity_and_divergence`);
:func:`divergence` is the same trace by reverse-mode automatic differentiation (the
reference the tests compare with).

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

    def modulation(self, t: torch.Tensor, like: torch.Tensor,
                   c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sigmoid(G [t, c] + g), B [t, c])``: shape (1, dim_out) without context (the same
        for every row: computed once and broadcast), (B, dim_out) with it."""
        tc = t.to(like.dtype).reshape(1, 1)
        if c is not None:
            tc = torch.cat([tc.expand(c.shape[0], 1), c], dim=1)
        return torch.sigmoid(self.hyper_gate(tc)), self.hyper_bias(tc)

    def forward(self, t: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        gate, bias = self.modulation(t, x, c)
        return torch.addcmul(bias, self.linear(x), gate)


def _sum_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` (B, H) summed over rows where ``like`` is one row broadcast over them."""
    return x.sum(0, keepdim=True) if like.shape[0] == 1 and x.shape[0] != 1 else x


def _times_weight(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``u @ w`` for tangents ``u`` (K, B, H) as one 2-D product (torch.matmul's batched
    path is twice as slow on CPU at these sizes)."""
    return u.reshape(-1, u.shape[-1]).mm(w).reshape(*u.shape[:-1], w.shape[-1])


def _sum_products(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(u * v).sum(0)`` over a short first dimension (the D tangents), one fused
    multiply-add per tangent."""
    out = u[0] * v[0]
    for k in range(1, u.shape[0]):
        out = out.addcmul_(u[k], v[k]) if out.shape == torch.broadcast_shapes(u[k].shape, v[k].shape) \
            else out + u[k] * v[k]
    return out


def _tanh(p: torch.Tensor) -> torch.Tensor:
    """tanh as ``2 sigmoid(2p) - 1`` (the same function; torch's CPU tanh kernel is about three
    times slower than its sigmoid at these sizes; the two agree to float rounding, absolute
    error below 2 eps)."""
    return torch.sigmoid(p * 2).mul_(2).sub_(1)


class _TanhDynamicsExactTrace(torch.autograd.Function):
    """``f(z)`` and the exact ``tr(df/dz)`` of a tanh MLP of concatsquash layers, with a
    hand-written backward pass (one autograd node per evaluation of the dynamics).

    Inputs: ``z`` (B, D), then per layer its weight ``W`` (out, in), bias ``b`` (out,), gate
    ``g`` and modulation bias ``c`` (both (1, out), broadcast over rows, or (B, out)): the
    layer is ``p = (h W^T + b) * g + c``, followed by tanh except after the last layer.

    Forward mode as :meth:`ODEFunc.velocity_and_divergence`: the tangents ``T_i = dh_i/dz``
    (D, B, H) of the unit vectors go through the layers, ``U_i = T_{i-1} W_i^T`` and
    ``T_i = U_i * m_i`` with ``m_i = tanh'(p_i) g_i = (1 - h_i^2) g_i``; the first layer's
    ``U`` is ``W^T`` itself, and of the last layer only the diagonal is formed. The backward
    pass is reverse mode through these same steps (``tanh' = 1 - h^2`` makes the
    derivative of ``m`` with respect to ``h`` ``-2 h g``).
    """

    @staticmethod
    def forward(ctx, z, *layers):
        n = len(layers) // 4
        saved = [z]
        h, T = z, None
        for i in range(n):
            W, b, g, c = layers[4 * i: 4 * i + 4]
            a = torch.addmm(b, h, W.t())
            p = torch.addcmul(c, a, g)
            if i == n - 1:
                diag = torch.diagonal(W).unsqueeze(1) if T is None else (T * W.unsqueeze(1)).sum(-1)  # (D, B|1)
                div = (diag * g.t()).sum(0)
                if div.shape[0] != z.shape[0]:
                    div = div.expand(z.shape[0]).contiguous()
                saved += [a, diag]
                ctx.save_for_backward(*saved, *layers)
                ctx.n = n
                return p, div
            h = _tanh(p)
            sd = torch.mul(h, h).neg_().add_(1)
            m = sd * g
            U = W.t().contiguous().unsqueeze(1) if T is None else _times_weight(T, W.t())  # (D, 1|B, H)
            T = U * m
            saved += [a, h, sd, m, U, T]
        raise ValueError("the dynamics network needs at least one layer")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_f, grad_div):
        n = ctx.n
        t = ctx.saved_tensors
        z, hidden, (a_last, diag) = t[0], t[1:1 + 6 * (n - 1)], t[1 + 6 * (n - 1): 3 + 6 * (n - 1)]
        layers = t[3 + 6 * (n - 1):]
        grads: list[torch.Tensor | None] = [None] * (4 * n)
        W, b, g, c = layers[4 * (n - 1): 4 * n]
        h_prev = hidden[6 * (n - 2) + 1] if n > 1 else z
        coef = grad_div.unsqueeze(1) * g  # (B, D): d loss / d diag[d, b] = grad_div_b g[b, d]
        gg = torch.addcmul(grad_f * a_last, grad_div.unsqueeze(1), diag.t())
        ga = grad_f * g
        gW = ga.t().mm(h_prev)
        if n == 1:
            gW.diagonal().add_(coef.sum(0))
            T_bar = None
        else:
            T_prev = hidden[6 * (n - 2) + 5]
            cT = coef.t().unsqueeze(-1)  # (D, B, 1)
            gW.add_((cT * T_prev).sum(1))
            T_bar = cT * W.unsqueeze(1)  # (D, B, H)
        grads[4 * (n - 1): 4 * n] = [gW, ga.sum(0), _sum_to(gg, g), _sum_to(grad_f, c)]
        h_bar = ga.mm(W)
        for i in range(n - 2, -1, -1):
            a, h, sd, m, U, T = hidden[6 * i: 6 * i + 6]
            W, b, g, c = layers[4 * i: 4 * i + 4]
            U_bar = T_bar * m
            m_bar = _sum_products(T_bar, U)  # (B, H)
            h_bar = h_bar.addcmul_(h, m_bar * g, value=-2)
            p_bar = h_bar.mul_(sd)
            gg = torch.addcmul(m_bar.mul_(sd), p_bar, a)
            ga = p_bar * g
            h_prev = hidden[6 * (i - 1) + 1] if i > 0 else z
            gW = ga.t().mm(h_prev)
            if i == 0:  # U = W^T broadcast over rows
                gW.add_(U_bar.sum(1).t())
            else:
                T_prev = hidden[6 * (i - 1) + 5]
                gW.add_(U_bar.reshape(-1, U_bar.shape[-1]).t().mm(T_prev.reshape(-1, T_prev.shape[-1])))
                T_bar = _times_weight(U_bar, W)
            grads[4 * i: 4 * i + 4] = [gW, ga.sum(0), _sum_to(gg, g), _sum_to(p_bar, c)]
            h_bar = ga.mm(W)
        return (h_bar, *grads)


class ODEFunc(nn.Module):
    """Augmented dynamics ``(z, a) -> (f(z, t, y), tr(df/dz))`` of the flow.

    The network ``f`` is an MLP of :class:`ConcatSquashLinear` layers. The
    class labels and the Hutchinson noise of a solve are bound by
    :class:`_BoundDynamics`, the module actually handed to torchdiffeq (the
    embedding lives here, so its weights are among the adjoint parameters).

    The divergence is computed in forward mode with the values
    (:meth:`velocity_and_divergence`): differentiable like them when gradients are
    enabled, and nothing is recorded under ``torch.no_grad()``.
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

    def _context(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        if self.embedding is None:
            return None
        if labels is None:
            raise ValueError("conditional dynamics need class labels (context)")
        return self.embedding(labels).to(z.dtype)

    def velocity(self, t: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The vector field ``f(z, t, y)`` with ``y = labels`` (ignored if unconditional)."""
        c = self._context(z, labels)
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(t, h, c)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h

    def _act_derivative(self, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """d act(pre) / d pre, from the pre-activation and the activation's output."""
        if isinstance(self.act, nn.Tanh):
            return 1 - out * out
        # nn.Softplus: x past the threshold passes unchanged (slope 1), as torch differentiates it
        beta, threshold = self.act.beta, self.act.threshold
        return torch.where(pre * beta > threshold, torch.ones_like(pre), torch.sigmoid(pre * beta))

    def velocity_and_divergence(
        self, t: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``f(z, t, y)`` and ``tr(df/dz)`` (exact when ``noise`` is None, else Hutchinson's
        ``e^T (df/dz) e`` with ``e = noise``), both per row.

        The divergence is computed in forward mode, alongside the values: the tangents
        ``dh/dz v`` of every layer's output ``h`` are carried through the layers, for the ``D``
        unit vectors ``v = e_d`` (exact trace) or for ``v = e``. A layer
        ``h' = act((W h + b) * g + c)`` maps a tangent ``u`` to ``act'(.) * g * (W u)``; the first
        layer's tangents of the unit vectors are the columns of ``W`` (no product), and of the
        last layer (exact trace) only the diagonal ``g_d (W_d . u_d)`` is formed. Training
        backpropagates through these steps once (no vector-Jacobian products with
        ``create_graph``, no double backward); for tanh with the exact trace they run inside
        :class:`_TanhDynamicsExactTrace`, whose backward pass is written out by hand, elsewhere
        as ordinary autograd operations.
        """
        c = self._context(z, labels)
        if noise is None and isinstance(self.act, nn.Tanh):
            # the same steps with a hand-written backward pass: one autograd node, not dozens
            layers = []
            for layer in self.layers:
                layers += [layer.linear.weight, layer.linear.bias, *layer.modulation(t, z, c)]
            return _TanhDynamicsExactTrace.apply(z, *layers)
        last = len(self.layers) - 1
        h = z
        tan = None if noise is None else noise.unsqueeze(0)  # (K, B, H); None: the identity (exact)
        for i, layer in enumerate(self.layers):
            gate, bias = layer.modulation(t, z, c)
            w = layer.linear.weight  # (out, in)
            pre = torch.addcmul(bias, layer.linear(h), gate)
            if i == last:
                if noise is None:  # diagonal of the Jacobian only: g_d (W_d . u_d)
                    diag = torch.diagonal(w).unsqueeze(1) if tan is None else (tan * w.unsqueeze(1)).sum(-1)
                    div = (diag * gate.t()).sum(0)  # (D, B or 1) -> (B,) or (1,)
                    div = div.expand(z.shape[0]) if div.shape[0] != z.shape[0] else div
                else:
                    div = (_times_weight(tan, w.t())[0] * gate * noise).sum(1)
                return pre, div
            h = self.act(pre)
            m = self._act_derivative(pre, h) * gate  # (B, H)
            wu = w.t().contiguous().unsqueeze(1) if tan is None else _times_weight(tan, w.t())  # (K, 1|B, H)
            tan = wu * m
        raise AssertionError("unreachable: the network has at least one layer")

    def forward(
        self,
        t: torch.Tensor,
        states: tuple[torch.Tensor, torch.Tensor],
        labels: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(dz/dt, da/dt)`` with ``da/dt = tr(df/dz)``.

        The trace is exact when ``noise`` is None, else Hutchinson's estimate with
        that noise (:meth:`velocity_and_divergence`).
        """
        self.nfe += 1
        return self.velocity_and_divergence(t, states[0], labels, noise)


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
