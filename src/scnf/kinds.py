"""The model kinds a config can name (``model.kind``), in one place: which config keys each
takes, what data it needs, whether it is a flow, and how it is built. Config validation
(:mod:`scnf.config`), run building (:func:`scnf.experiment.build_model`) and the analyses'
refusal (:mod:`scnf.analysis`) all read :data:`MODEL_KINDS`.

Importing this module imports no model code; the builders import it when called.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

#: model keys of the flows
FLOW_KEYS = ("unconditional", "conditional", "deep_dim", "hidden", "blocks", "h_hidden", "h_blocks", "lu",
             "init_from_labels", "h_class_affine", "ffjord_tol", "ffjord_train_tol", "h_net", "h_net_blocks",
             "embed_dim")
#: model keys of Kingma et al.'s VAEs
VAE_KEYS = ("m1_hidden", "m1_latent", "m2_hidden", "m2_latent", "m1_features", "vae_likelihood", "m1_run",
            "m1_active_std")

#: train keys that only a flow uses (its exact likelihood, its f/h split, its couplings)
FLOW_ONLY_TRAIN = {"optimisation": "sgd", "consistency_weight": 0.0, "warmup_f_steps": 0, "h_lr_mult": 1.0,
                   "precision": ("fp32", "tf32")}
#: train keys that only the VAEs use
VAE_ONLY_TRAIN = {"alpha": 0.0}


@dataclass(frozen=True)
class ModelKind:
    name: str                    #: the value of ``model.kind``
    title: str | None            #: the name in reports and tables (None: from the flow's parts)
    keys: tuple[str, ...]        #: the ``[model]`` keys it reads
    flow: bool                   #: an exact-likelihood flow (the analyses, EM-SGD, warm-up, h_lr_mult apply)
    images_only: bool
    build: Callable[..., Any]    #: (config, data, number of classes, p(y), **parts) -> model


def _build_flow(cfg, data, k: int, prior):
    from . import architectures

    m = cfg.model
    if data.images:  # config validation refuses other parts on image data
        return architectures.image_scnf(tuple(data.x.shape[1:]), m.conditional, m.deep_dim or None, k, hidden=m.hidden,
                                        blocks=m.blocks or 4, h_hidden=m.h_hidden or 256, h_blocks=m.h_blocks,
                                        lu=m.lu, class_prior=prior, h_class_affine=m.h_class_affine,
                                        embed_dim=m.embed_dim or None)
    ode = {}
    if "ffjord" in (m.unconditional, m.conditional):
        ode = dict(rtol=m.ffjord_tol, atol=m.ffjord_tol, train_tol=m.ffjord_train_tol or None)
    return architectures.vector_scnf(data.dims, k, m.conditional, m.deep_dim or None, unconditional=m.unconditional,
                                     blocks=m.blocks or 5, hidden=m.hidden, h_blocks=m.h_blocks,
                                     h_hidden=m.h_hidden or 64, class_prior=prior,
                                     h_class_affine=m.h_class_affine, h_net=m.h_net or "mlp",
                                     h_net_blocks=m.h_net_blocks or 2, embed_dim=m.embed_dim or None, **ode)


def _build_vae(cfg, data, k: int, prior, pretrained_m1: dict | None = None):
    from . import baselines

    m = cfg.model
    n_lab = int((data.y >= 0).sum())
    extra = {}
    if pretrained_m1 is not None:  # the sequential recipe: a trained M1, frozen; its active dimensions
        extra = dict(pretrained_m1=pretrained_m1, active_std=m.m1_active_std,
                     active_rows=data.prepare(data.x, _fixed_generator()).flatten(1))
    return baselines.build(m.kind, data.dims, k, m1_hidden=m.m1_hidden, m1_latent=m.m1_latent,
                           m2_hidden=m.m2_hidden, m2_latent=m.m2_latent, class_prior=prior,
                           m1_features=m.m1_features, likelihood=m.vae_likelihood,
                           labelled_fraction=n_lab / data.y.shape[0], **extra)


def _fixed_generator():
    """A fixed generator for the dequantisation of the rows M1's active dimensions are measured on."""
    import torch

    return torch.Generator().manual_seed(0)


MODEL_KINDS: dict[str, ModelKind] = {
    "scnf": ModelKind("scnf", None, FLOW_KEYS, flow=True, images_only=False, build=_build_flow),
    "m1": ModelKind("m1", "M1", ("m1_hidden", "m1_latent", "vae_likelihood"), flow=False, images_only=True,
                    build=_build_vae),
    "m2": ModelKind("m2", "M2", ("m2_hidden", "m2_latent", "vae_likelihood"), flow=False, images_only=True,
                    build=_build_vae),
    "m1m2": ModelKind("m1m2", "M1+M2", VAE_KEYS, flow=False, images_only=True, build=_build_vae),
}
