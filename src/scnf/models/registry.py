"""The registry of model kinds: how each ``model.kind`` (declared, with the config keys it
reads, in :data:`scnf.config.MODEL_KINDS`) is built. The run builder
(:func:`scnf.runs.run.build_model`) and the estimator build their models through
:func:`build`.

``data`` is anything with the semi-supervised data's fields (:class:`scnf.data.batches.SemiSupervisedData`):
``images``, ``dims``, ``x``, ``y`` and ``prepare``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..config import RunConfig
from . import builders, vae


def _build_flow(cfg: RunConfig, data, k: int, prior):
    m = cfg.model
    # a key left at 0 / "" means "the builder's default": it is not passed, so the defaults
    # are stated once, in the builders' signatures
    optional = dict(blocks=m.blocks, h_hidden=m.h_hidden, embed_dim=m.embed_dim)
    if data.images:  # config validation refuses other parts on image data
        kw = {key: v for key, v in optional.items() if v}
        return builders.image_scnf(tuple(data.x.shape[1:]), m.conditional, m.deep_dim or None, k, hidden=m.hidden,
                                   h_blocks=m.h_blocks, lu=m.lu, class_prior=prior,
                                   h_class_affine=m.h_class_affine, **kw)
    optional.update(h_net=m.h_net, h_net_blocks=m.h_net_blocks)
    kw = {key: v for key, v in optional.items() if v}
    if "ffjord" in (m.unconditional, m.conditional):
        kw.update(rtol=m.ffjord_tol, atol=m.ffjord_tol, train_tol=m.ffjord_train_tol or None)
    return builders.vector_scnf(data.dims, k, m.conditional, m.deep_dim or None, unconditional=m.unconditional,
                                hidden=m.hidden, h_blocks=m.h_blocks, class_prior=prior,
                                h_class_affine=m.h_class_affine, **kw)


def _build_vae(cfg: RunConfig, data, k: int, prior, pretrained_m1: dict | None = None):
    m = cfg.model
    n_lab = int((data.y >= 0).sum())
    extra = {}
    if pretrained_m1 is not None:  # the sequential recipe: a trained M1, frozen; its active dimensions
        # measured on the rows dequantised with a fixed generator
        extra = dict(pretrained_m1=pretrained_m1, active_std=m.m1_active_std,
                     active_rows=data.prepare(data.x, torch.Generator().manual_seed(0)).flatten(1))
    return vae.build(m.kind, data.dims, k, m1_hidden=m.m1_hidden, m1_latent=m.m1_latent,
                     m2_hidden=m.m2_hidden, m2_latent=m.m2_latent, class_prior=prior,
                     m1_features=m.m1_features, likelihood=m.vae_likelihood,
                     labelled_fraction=n_lab / data.y.shape[0], **extra)


#: model.kind -> (config, data, number of classes, p(y), **parts) -> model
BUILDERS: dict[str, Callable[..., Any]] = {"scnf": _build_flow, "m1": _build_vae, "m2": _build_vae,
                                           "m1m2": _build_vae}


def build(cfg: RunConfig, data, num_classes: int, class_prior: torch.Tensor, **parts):
    """The model of ``cfg.model.kind`` for ``data``; ``parts``: pieces a kind takes ready-made
    (``pretrained_m1`` for M1+M2 from an M1 run)."""
    return BUILDERS[cfg.model.kind](cfg, data, num_classes, class_prior, **parts)
