"""Run configuration: TOML files read with ``tomllib`` into validated dataclasses.

A config has three tables, ``[data]``, ``[model]`` and ``[train]``, plus an optional
top-level ``seed``. Every problem (unknown key, wrong type, bad value, missing file) raises
:class:`ConfigError` (a ``ValueError``) whose message names the key.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: every data set a config can name (``data.dataset``), in one place
TOY_DATASETS = ("moons", "circles")
IMAGE_DATASETS = ("mnist", "fashion-mnist")
OWN_DATASETS = ("npz", "folder")  # your own data, read from data.path
DATASETS = TOY_DATASETS + IMAGE_DATASETS + OWN_DATASETS

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
    """What a config may say of one model kind (``model.kind``); the builders are in
    :mod:`scnf.models.registry`."""

    name: str                    #: the value of ``model.kind``
    title: str | None            #: the name in reports and tables (None: from the flow's parts)
    keys: tuple[str, ...]        #: the ``[model]`` keys it reads
    flow: bool                   #: an exact-likelihood flow (the analyses, EM-SGD, warm-up, h_lr_mult apply)
    images_only: bool


MODEL_KINDS: dict[str, ModelKind] = {
    "scnf": ModelKind("scnf", None, FLOW_KEYS, flow=True, images_only=False),
    "m1": ModelKind("m1", "M1", ("m1_hidden", "m1_latent", "vae_likelihood"), flow=False, images_only=True),
    "m2": ModelKind("m2", "M2", ("m2_hidden", "m2_latent", "vae_likelihood"), flow=False, images_only=True),
    "m1m2": ModelKind("m1m2", "M1+M2", VAE_KEYS, flow=False, images_only=True),
}


def model_title(cfg: "RunConfig") -> str:
    """"GLOW ∘ GMM", or the baseline's name ("M2", "M1+M2")."""
    title = MODEL_KINDS[cfg.model.kind].title
    if title is not None:
        return title
    return f"{cfg.model.unconditional.upper()} ∘ {cfg.model.conditional.upper()}"


def _key(default: Any, help: str):
    """A config field: its default and its meaning (what ``scnf config --defaults`` prints)."""
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    dataset: str = _key("moons", "moons | circles | mnist | fashion-mnist | npz | folder (your own data: data.path)")
    path: str = _key("", "npz / folder: the .npz file (x, y with -1 unlabelled; optional x_test, y_test) or the image folder "
                    "(relative: to the config file's folder)")
    n_train: int = _key(1000, "toy only: training objects")
    n_test: int = _key(1000, "toy only: test objects")
    n_labelled: int = _key(10, "labelled training rows, the same number per class (own data: the file's labels)")
    noise: float = _key(0.1, "toy only: std of the generators' Gaussian noise")
    split_seed: int = _key(0, "which labelled split")
    data_dir: str = _key("", "images only: overrides SCNF_DATA / the cache (relative: to the config file's folder)")
    n_unlabelled: int = _key(0, "images only: 0 = all remaining training rows")
    n_test_eval: int = _key(0, "images only: 0 = all 10,000 test images")
    n_validation: int = _key(0, "images only: training images held out (not in the unlabelled pool) to score choices")
    extra_labels: str = _key("", "a CSV of labels for rows of the training pool (columns pool_index and label, e.g. scnf suggest's suggestions.csv with a label column filled in)")
    evaluate_on: str = _key("test", "toy only: \"test\", or \"validation\": n_test other points of the training distribution")


@dataclass
class ModelConfig:
    kind: str = _key("scnf", "scnf | m1 | m2 | m1m2 (Kingma et al. 2014's VAEs, scnf.baselines; images only; m1 is unsupervised)")
    unconditional: str = _key("glow", "glow | ffjord")
    conditional: str = _key("glow", "glow | gmm | ffjord")
    deep_dim: int = _key(0, "0 = the builder's default (196 for images, all for vectors)")
    hidden: int = _key(64, "f's coupling nets")
    blocks: int = _key(0, "0 = builder default (5 toy flow steps; 4 residual blocks for images)")
    h_hidden: int = _key(0, "0 = builder default (64 toy, 256 images)")
    h_blocks: int = _key(4, "glow h: flow steps (vectors) or residual blocks per coupling net (images)")
    lu: bool = _key(False, "LU-parameterised 1x1 convolutions (images)")
    init_from_labels: bool = _key(False, "class-aware init from labelled z_f: gmm means, or glow with h_class_affine")
    h_class_affine: bool = _key(False, "glow h: prepend a class-conditional affine layer (set by init_from_labels)")
    h_net: str = _key("", "vectors, glow h: coupling nets \"mlp\" or \"resmlp\" (\"\" = mlp); images use resmlp")
    h_net_blocks: int = _key(0, "vectors, glow h: layers (mlp) or residual blocks (resmlp) per net (0 = 2)")
    embed_dim: int = _key(0, "glow h: width of the class table shared by h's couplings (0 = number of classes)")
    ffjord_tol: float = _key(1e-5, "FFJORD parts: solver rtol = atol (evaluation; training too unless below)")
    ffjord_train_tol: float = _key(0.0, "FFJORD parts: rtol = atol while training (0 = ffjord_tol)")
    m1_hidden: int = _key(600, "m1m2: units in each of M1's two hidden layers (encoder and decoder)")
    m1_latent: int = _key(50, "m1m2: dimension of M1's latent z1")
    m2_hidden: int = _key(500, "m2, m1m2: units in the hidden layer of M2's networks")
    m2_latent: int = _key(50, "m2, m1m2: dimension of M2's latent z2")
    m1_features: str = _key("sample", "m1m2: M2 trains on samples of q(z1 | x) or on its means (\"mean\")")
    vae_likelihood: str = _key("bernoulli", "m1, m2, m1m2: pixels \"bernoulli\" (re-binarised each batch, the original) or \"continuous-bernoulli\" (dequantised)")
    m1_run: str = _key("", "m1m2: a finished model.kind = \"m1\" run directory; M1 is loaded from it and frozen (\"\" = train M1 jointly; relative: to the config file's folder)")
    m1_active_std: float = _key(0.1, "m1m2 with m1_run: keep z1's dimensions whose posterior means vary with at least this std (0 keeps all)")


@dataclass
class TrainConfig:
    optimisation: str = _key("sgd", "sgd | em-sgd (Appendix B)")
    clf_weight: float = _key(0.0, "weight of the classification loss L_clf (VAEs: of the labelled rows' mean cross-entropy, with alpha = 0)")
    alpha: float = _key(0.0, "VAEs: Kingma et al.'s alpha / N (their 0.1): cross-entropy weight, rows weighted by their true shares (0 = off)")
    optimizer: str = _key("adamax", "adamax | adam (Kingma et al.'s VAEs: adam, lr 3e-4, constant)")
    early_stop_patience: int = _key(0, "stop after this many evaluations without a better validation NLL and keep the best weights (0 = off; needs data.n_validation)")
    labelled_share: float = _key(1 / 3, "share of each batch drawn (with replacement) from labelled rows")
    labelled_weight: float = _key(1.0, "weight of labelled rows' log p(x, y) in the objective")
    batch_size: int = _key(256, "rows per step (the global batch under several processes)")
    steps: int = _key(3000, "optimiser steps (the schedule's length)")
    lr: float = _key(1e-3, "Adamax learning rate at the start")
    weight_decay: float = _key(1e-5, "Adamax weight decay")
    schedule: str = _key("linear", "linear (decay to 0) | constant")
    warmup_f_steps: int = _key(0, "steps training f alone (h frozen) at the start")
    augment_shift: int = _key(0, "images: labelled rows shifted by up to this many pixels (0 = off)")
    consistency_weight: float = _key(0.0, "images: KL(p(y|shifted x) || p(y|x)) on unlabelled rows (needs augment_shift)")
    consistency_temperature: float = _key(1.0, "temperature of the shifted view's target posterior (< 1 sharpens)")
    h_lr_mult: float = _key(1.0, "learning-rate multiplier of the conditional part")
    micro_batch: int = _key(0, "rows per forward/backward chunk within a step (0 = whole batch); same gradient")
    pseudo_threshold: float = _key(0.0, "unlabelled rows whose max p(y|x) reaches this get a pseudo-label (0 = off)")
    pseudo_weight: float = _key(0.0, "weight of the pseudo-labelled rows' cross-entropy (per unlabelled row)")
    pseudo_start: int = _key(0, "step from which pseudo-labels are used")
    input_noise: float = _key(0.0, "vectors: std of Gaussian noise added to training rows each step (0 = off)")
    ema_decay: float = _key(0.0, "evaluate (and save for evaluation) an exponential moving average of the weights (0 = off)")
    max_seconds: float = _key(0.0, "stop after this many training seconds (0 = no limit; the schedule still counts steps)")
    eval_every: int = _key(500, "steps between evaluations (test and validation sets) and log records")
    checkpoint_every: int = _key(500, "steps between checkpoints")
    max_nonfinite: int = _key(20, "consecutive skipped steps before the run stops")
    device: str = _key("auto", "auto | cpu | cuda")
    progress: bool = _key(True, "a progress bar on a terminal")
    threads: int = _key(0, "torch threads while training (0 = automatic: 1 for vector data, whose small models a second thread slows on a busy machine; torch's default for images)")
    precision: str = _key("fp32", "fp32 | tf32 | bf16-mixed (CUDA; bf16 autocast only in coupling nets)")
    compile: bool = _key(False, "torch.compile the (DDP-wrapped) training forward, one graph after eager ActNorm init")


@dataclass
class RunConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_CHOICES = {
    "data.dataset": DATASETS,
    "model.kind": tuple(MODEL_KINDS),
    "model.m1_features": ("sample", "mean"),
    "model.vae_likelihood": ("bernoulli", "continuous-bernoulli"),
    "train.optimizer": ("adamax", "adam"),
    "model.unconditional": ("glow", "ffjord"),
    "model.conditional": ("glow", "gmm", "ffjord"),
    "train.optimisation": ("sgd", "em-sgd"),
    "train.schedule": ("linear", "constant"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("fp32", "tf32", "bf16-mixed"),
}
_POSITIVE = {"data.n_train", "data.n_test", "data.n_labelled", "train.batch_size", "train.steps",
             "train.eval_every", "train.checkpoint_every", "train.max_nonfinite", "model.hidden",
             "model.ffjord_tol", "train.consistency_temperature", "model.m1_hidden", "model.m1_latent",
             "model.m2_hidden", "model.m2_latent"}
_NON_NEGATIVE = {"data.noise", "train.clf_weight", "train.weight_decay", "train.warmup_f_steps", "train.input_noise",
                 "data.n_unlabelled", "data.n_test_eval", "model.deep_dim", "model.blocks", "model.h_hidden",
                 "model.h_blocks", "train.threads", "data.split_seed", "train.labelled_weight",
                 "train.augment_shift", "model.ffjord_train_tol",
                 "train.consistency_weight", "train.micro_batch", "data.n_validation",
                 "train.pseudo_threshold", "train.pseudo_weight", "train.pseudo_start", "train.max_seconds",
                 "train.alpha", "train.early_stop_patience", "model.m1_active_std"}


def _coerce(key: str, value: Any, default: Any) -> Any:
    want = type(default)
    if want is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if want is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if want is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if want is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise AssertionError(want)


def _fill(section: str, cls, table: Any):
    if not isinstance(table, dict):
        raise ConfigError(f"config key '{section}' must be a table, got {table!r}")
    obj = cls()
    names = {f.name for f in fields(cls)}
    for key, value in table.items():
        full = f"{section}.{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{full}' (known: {', '.join(sorted(names))})")
        setattr(obj, key, _coerce(full, value, getattr(obj, key)))
    return obj


def validate(cfg: RunConfig) -> RunConfig:
    for section in ("data", "model", "train"):
        sub = getattr(cfg, section)
        for f in fields(sub):
            key, value = f"{section}.{f.name}", getattr(sub, f.name)
            if key in _CHOICES and value not in _CHOICES[key]:
                raise ConfigError(f"config key '{key}' must be one of {_CHOICES[key]}, got {value!r}")
            if key in _POSITIVE and not value > 0:
                raise ConfigError(f"config key '{key}' must be positive, got {value!r}")
            if key in _NON_NEGATIVE and value < 0:
                raise ConfigError(f"config key '{key}' must be non-negative, got {value!r}")
    if not 0.0 <= cfg.train.labelled_share < 1.0:
        raise ConfigError(f"config key 'train.labelled_share' must lie in [0, 1), got {cfg.train.labelled_share}")
    if not cfg.train.lr > 0:
        raise ConfigError(f"config key 'train.lr' must be positive, got {cfg.train.lr}")
    if cfg.train.consistency_weight > 0 and cfg.train.augment_shift == 0:
        raise ConfigError("config key 'train.consistency_weight' needs 'train.augment_shift' > 0 "
                          "(the shift makes the second view)")
    if not cfg.train.h_lr_mult >= 0:
        raise ConfigError(f"config key 'train.h_lr_mult' must be non-negative, got {cfg.train.h_lr_mult}")
    _check_no_silent_keys(cfg)
    return cfg


def _vectors(cfg: RunConfig, images: bool | None = None) -> bool | None:
    """Whether the config's data are vectors (True), images (False) or not known before the data
    are read (None: an npz file, until :func:`check_for_data` is called with what it holds)."""
    if images is not None:
        return not images
    if cfg.data.dataset in TOY_DATASETS:
        return True
    if cfg.data.dataset == "npz":
        return None
    return False


def check_for_data(cfg: RunConfig, images: bool) -> None:
    """The checks that depend on whether the data are images, once the data are read (an npz
    file holds either); a problem is a :class:`ConfigError` naming the key."""
    _check_no_silent_keys(cfg, images)


def _check_model_kind(cfg: RunConfig, images: bool | None = None) -> None:
    """Each model kind (:data:`scnf.models.registry.MODEL_KINDS`) reads its own model keys; a key of another
    kind, and a flow-only train key, are refused."""
    m, default = cfg.model, ModelConfig()
    kind = MODEL_KINDS[m.kind]
    for k in FLOW_KEYS + VAE_KEYS:
        if k not in kind.keys and getattr(m, k) != getattr(default, k):
            owners = [n for n, mk in MODEL_KINDS.items() if k in mk.keys]
            raise ConfigError(f"config key 'model.{k}' applies to model.kind = "
                              f"{' or '.join(repr(n) for n in owners)} only, not {m.kind!r}")
    if kind.images_only and _vectors(cfg, images) is True:
        raise ConfigError(f"model.kind = {m.kind!r} applies to image data only (mnist, fashion-mnist, folder, "
                          "or an npz of uint8 images)")
    if kind.flow:
        for k, allowed in VAE_ONLY_TRAIN.items():
            if getattr(cfg.train, k) != allowed:
                raise ConfigError(f"config key 'train.{k}' applies to the VAE baselines only (model.kind = "
                                  f"'m1', 'm2' or 'm1m2'), not to model.kind = {m.kind!r}")
        return
    for k, allowed in FLOW_ONLY_TRAIN.items():
        value = getattr(cfg.train, k)
        if value not in (allowed if isinstance(allowed, tuple) else (allowed,)):
            raise ConfigError(f"config key 'train.{k}' = {value!r} applies to the flows only, not to "
                              f"model.kind = {m.kind!r}")


def _check_no_silent_keys(cfg: RunConfig, images: bool | None = None) -> None:
    """Refuse combinations in which a key would silently do nothing. ``images``: what the data
    hold, when known from the files (own data); else from ``data.dataset``. Checks that depend
    on it wait for the data when it is not known (an npz file)."""
    _check_model_kind(cfg, images)
    _check_own_data(cfg)
    m, vec = cfg.model, _vectors(cfg, images)
    toy = cfg.data.dataset in TOY_DATASETS
    if vec is False and m.kind == "scnf" and (m.unconditional != "glow" or m.conditional == "ffjord"):
        raise ConfigError("image models use unconditional = 'glow' and conditional = 'glow' or 'gmm'")
    if m.h_net not in ("", "mlp", "resmlp"):
        raise ConfigError(f"config key 'model.h_net' must be 'mlp' or 'resmlp', got {m.h_net!r}")
    for key in ("h_net", "h_net_blocks"):
        if getattr(m, key) and vec is False:
            raise ConfigError(f"config key 'model.{key}' applies to vector data only; image models' h nets "
                              "are residual (model.h_hidden, model.h_blocks)")
    for key in ("h_net", "h_net_blocks", "embed_dim"):
        if getattr(m, key) and m.conditional != "glow":
            raise ConfigError(f"config key 'model.{key}' applies to conditional = 'glow' only")
    if m.h_net_blocks < 0 or m.embed_dim < 0:
        raise ConfigError("config keys 'model.h_net_blocks' and 'model.embed_dim' must be non-negative")
    if m.init_from_labels and m.conditional == "ffjord":
        raise ConfigError("config key 'model.init_from_labels' has nothing to initialise with conditional = "
                          "'ffjord'; use conditional = 'gmm', or 'glow' with h_class_affine = true")
    if m.init_from_labels and m.conditional == "glow" and not m.h_class_affine:
        raise ConfigError("config key 'model.init_from_labels' needs 'model.h_class_affine' = true with "
                          "conditional = 'glow' (the class-conditional layer it initialises); without it "
                          "nothing is initialised from the labels")
    if m.h_class_affine and m.conditional != "glow":
        raise ConfigError(f"config key 'model.h_class_affine' applies to conditional = 'glow' only, "
                          f"got conditional = {m.conditional!r}")
    if m.ffjord_train_tol > 0 and "ffjord" not in (m.unconditional, m.conditional):
        raise ConfigError("config key 'model.ffjord_train_tol' applies to FFJORD parts only; "
                          "set unconditional or conditional to 'ffjord', or remove it")
    if vec and m.lu:
        raise ConfigError("config key 'model.lu' applies to image models only")
    if vec and cfg.train.augment_shift > 0:
        raise ConfigError("config key 'train.augment_shift' applies to image data only")
    if vec is False and cfg.train.input_noise > 0:
        raise ConfigError("config key 'train.input_noise' applies to vector data only (moons, circles); "
                          "image pixels are dequantised instead")
    if cfg.data.evaluate_on not in ("test", "validation"):
        raise ConfigError(f"config key 'data.evaluate_on' must be 'test' or 'validation', got {cfg.data.evaluate_on!r}")
    if not toy and cfg.data.evaluate_on != "test":
        raise ConfigError("config key 'data.evaluate_on' applies to toy data only (moons, circles); "
                          "image runs hold out validation images with data.n_validation")
    if toy and cfg.data.n_validation > 0:
        raise ConfigError("config key 'data.n_validation' applies to image datasets and your own data (npz, "
                          "folder), not to moons / circles (data.evaluate_on = 'validation' instead)")
    t = cfg.train
    if not t.pseudo_threshold <= 1.0:
        raise ConfigError(f"config key 'train.pseudo_threshold' must lie in [0, 1], got {t.pseudo_threshold}")
    if (t.pseudo_threshold > 0) != (t.pseudo_weight > 0):
        raise ConfigError("config keys 'train.pseudo_threshold' and 'train.pseudo_weight' work together: "
                          "set both above 0 (pseudo-labels on) or both to 0 (off)")
    if t.pseudo_start > 0 and t.pseudo_threshold == 0:
        raise ConfigError("config key 'train.pseudo_start' needs 'train.pseudo_threshold' > 0")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"config key 'train.ema_decay' must lie in [0, 1), got {t.ema_decay}")
    if t.early_stop_patience > 0 and (toy or cfg.data.n_validation == 0):
        raise ConfigError("config key 'train.early_stop_patience' needs held-out rows: set data.n_validation > 0 "
                          "(image datasets, own data)")
    if t.early_stop_patience > 0 and t.ema_decay > 0:
        raise ConfigError("config keys 'train.early_stop_patience' and 'train.ema_decay' cannot be combined")
    if t.alpha > 0 and (t.clf_weight > 0 or t.labelled_weight != 1.0):
        raise ConfigError("config key 'train.alpha' replaces 'train.clf_weight' and 'train.labelled_weight' for the "
                          "VAEs (rows weighted by their true shares): set clf_weight = 0 and labelled_weight = 1")
    if m.m1_active_std != ModelConfig().m1_active_std and not m.m1_run:
        raise ConfigError("config key 'model.m1_active_std' applies with 'model.m1_run' only (a pretrained M1)")
    if m.kind == "m1" and (t.alpha > 0 or t.clf_weight > 0 or t.pseudo_threshold > 0):
        raise ConfigError("model.kind = 'm1' is unsupervised: train.alpha, train.clf_weight and "
                          "train.pseudo_threshold do not apply")


def _check_own_data(cfg: RunConfig) -> None:
    d, default = cfg.data, DataConfig()
    if d.dataset in OWN_DATASETS:
        if not d.path:
            raise ConfigError(f"data.dataset = {d.dataset!r} needs data.path (the .npz file or the image folder)")
        for key in ("n_labelled", "n_train", "n_test", "noise"):
            if getattr(d, key) != getattr(default, key):
                raise ConfigError(f"config key 'data.{key}' does not apply to your own data (data.dataset = "
                                  f"{d.dataset!r}): the file's labels say which rows are labelled (-1: unlabelled)")
    elif d.path:
        raise ConfigError(f"config key 'data.path' applies to your own data only (data.dataset = 'npz' or "
                          f"'folder'), not to {d.dataset!r}")


def from_dict(raw: dict) -> RunConfig:
    cfg = RunConfig()
    for key, value in raw.items():
        if key == "seed":
            cfg.seed = _coerce("seed", value, 0)
        elif key in ("data", "model", "train"):
            cls = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}[key]
            setattr(cfg, key, _fill(key, cls, value))
        else:
            raise ConfigError(f"unknown config key '{key}' (known: seed, data, model, train)")
    return validate(cfg)


def with_overrides(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """``cfg`` with ``section.key=value`` assignments applied (``value`` in TOML syntax; a bare
    word is a string), validated like a config file: ``["data.split_seed=1", "train.threads=1"]``."""
    raw = cfg.to_dict()
    for a in assignments:
        key, sep, text = a.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {a!r} must look like section.key=value")
        section, dot, name = key.partition(".")
        if key == "seed":
            target, name = raw, "seed"
        elif dot and section in ("data", "model", "train"):
            target = raw[section]
        else:
            raise ConfigError(f"override {a!r}: expected seed=N or data.KEY / model.KEY / train.KEY")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        target[name] = value
    return from_dict(raw)


def key_reference() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, meaning) of every config key, read from the fields' metadata
    (the one place they are written)."""
    out = [("", "seed", 0, "seeds the model's initialisation and the training streams")]
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
        for f in fields(cls):
            out.append((section, f.name, getattr(cls(), f.name), f.metadata["help"]))
    return out


def reference_toml() -> str:
    """Every key with its default and meaning, as a TOML file (what ``scnf config --defaults`` prints)."""
    lines = ["# scnf config: every key, its default and meaning (scnf config --defaults)", ""]
    section = None
    for sec, key, default, meaning in key_reference():
        if sec != section and sec:
            lines += ["", f"[{sec}]"]
            section = sec
        lines.append(f"{key} = {toml_value(default)}".ljust(36) + f"# {meaning}")
    return "\n".join(lines) + "\n"


#: the config keys that name files or folders: a relative one is read against the config file's folder
PATH_KEYS = (("data", "path"), ("data", "data_dir"), ("data", "extra_labels"), ("model", "m1_run"))


def resolve_paths(cfg: RunConfig, base: str | Path) -> RunConfig:
    """``cfg`` with every relative path (:data:`PATH_KEYS`; ``~`` expanded) made absolute
    against the folder ``base``; absolute and empty ones are kept. The run directory's
    config.toml records the absolute paths, so a run works from any working directory and after
    its folder is moved."""
    out = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data), model=dataclasses.replace(cfg.model),
                              train=dataclasses.replace(cfg.train))
    for section, key in PATH_KEYS:
        value = getattr(getattr(out, section), key)
        if value:
            setattr(getattr(out, section), key,
                    os.path.normpath(os.path.join(os.path.abspath(base), os.path.expanduser(value))))
    return out


def load_config(path: str | Path) -> RunConfig:
    """The config in the TOML file ``path``; its relative paths (``data.path``, ``data.data_dir``,
    ``model.m1_run``) are read against the file's folder, not the working directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return resolve_paths(from_dict(raw), path.absolute().parent)


def toml_value(v: Any) -> str:
    """``v`` (bool, str or number) as a TOML value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as TOML text (readable back by :func:`load_config`)."""
    lines = [f"seed = {cfg.seed}", ""]
    for section in ("data", "model", "train"):
        lines.append(f"[{section}]")
        for f in fields(getattr(cfg, section)):
            lines.append(f"{f.name} = {toml_value(getattr(getattr(cfg, section), f.name))}")
        lines.append("")
    return "\n".join(lines)


def demo_config(seed: int = 0) -> RunConfig:
    """The embedded default of ``scnf demo``: SCNF-GLOW on moons, 1000 points, 10 labels."""
    cfg = RunConfig(seed=seed)
    cfg.data = DataConfig(dataset="moons", n_train=1000, n_test=1000, n_labelled=10, noise=0.1, split_seed=seed)
    cfg.model = ModelConfig(unconditional="glow", conditional="glow")
    cfg.train = TrainConfig(steps=3000, batch_size=256, labelled_share=0.1, eval_every=500, checkpoint_every=500,
                            device="cpu", threads=1)
    return validate(cfg)
