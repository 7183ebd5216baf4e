"""Kingma et al. (2014)'s semi-supervised VAEs, trained by the same harness as SCNF.

* **M1** (``model.kind = "m1"``): a VAE q(z1 | x) p(x | z1) with p(z1) = N(0, I), trained
  without labels (the first stage of M1+M2; early-stopped on the validation bound with
  ``train.early_stop_patience``). It does not classify.
* **M2** (``model.kind = "m2"``): the generative semi-supervised model p(y) p(z2) p(x | y, z2)
  with the inference networks q(z2 | x, y) and the classifier q(y | x). A labelled row
  contributes the bound L(x, y) and the cross-entropy of q(y | x); an unlabelled row the bound
  U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)). Prediction: argmax q(y | x).
* **M1+M2** (``model.kind = "m1m2"``): M2 on M1's features z1. As the original: with
  ``model.m1_run`` M1 comes trained from an ``m1`` run and stays frozen, M2 models the
  dimensions of z1 whose posterior means vary (std >= ``model.m1_active_std``, their 0.1) and
  trains on a fresh sample of q(z1 | x) each batch; prediction is argmax q(y | mean of
  q(z1 | x)). Without ``m1_run`` (our earlier variant) M1 and M2 train together from step 0,
  M2's gradient stopped at z1.

The objective's weights (:meth:`SemiSupervisedVAE.loss_terms`): ``train.alpha`` is Kingma et
al.'s alpha divided by N (their alpha = 0.1 N is ``alpha = 0.1``), with each batch's labelled
and unlabelled rows weighted by their true shares of the training set, so the loss estimates
J^alpha / N whatever share of labelled rows the sampler draws. ``alpha = 0`` keeps our earlier
weighting (``clf_weight`` on the labelled rows' mean cross-entropy, rows as drawn).

Likelihood of the pixels (``model.vae_likelihood``): ``"bernoulli"``, the original's:
independent Bernoullis of binary pixels, re-binarised b ~ Bernoulli(x) every time a batch is
drawn (evaluation binarises each test image once, from a fixed generator); the reported NLL
then bounds -log P(b), a probability of binary images, and its bits/dim
(``bits_per_dim_binarised``) is not comparable with the flows' density of dequantised pixels.
``"continuous-bernoulli"`` (our earlier variant; Loaiza-Ganem & Cunningham, 2019): a normalised
density on [0, 1]^D of the dequantised intensities, the flows' quantity (``bits_per_dim``, an
upper bound). M2 on z1 uses a Gaussian with a mean and a log-scale per dimension.

Evaluation uses ``log_joint(x)`` (B, K): a one-sample estimate of a lower bound on
log p(x, y=k) (for M1+M2 of the stacked model p(x | z1) p(z1 | y, z2) p(z2) p(y));
``log_density(x, log_joint)``: E_q(y|x)[L(x, y)] + H(q(y|x)), a lower bound on log p(x) (the
logsumexp over one-sample estimates, reported before, is not one); and ``classifier_logits(x)``:
log q(y | x). Every sample is drawn with :func:`scnf.noise.randn_like` /
:func:`~scnf.noise.rand_like`: from the trainer's generator in training, from a fixed one
in evaluation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..noise import rand_like, randn_like
from ..protocol import LossTerms
from .priors import LOG2PI, normal_log_prob




def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with softplus between them (Kingma et al.'s nonlinearity)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension of log N(x; mu, exp(log_scale)^2)."""
    return normal_log_prob(x, mu, log_scale=log_scale).sum(-1)


def kl_to_standard_normal(mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(log_scale)^2) || N(0, I)), summed over the last dimension."""
    return 0.5 * (mu ** 2 + torch.exp(2 * log_scale) - 1 - 2 * log_scale).sum(-1)


def continuous_bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Elementwise log-density on [0, 1] of the continuous Bernoulli (Loaiza-Ganem & Cunningham,
    2019) with parameter sigmoid(logits): x * l - softplus(l) + log C, where the normaliser
    C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) equals l / tanh(l / 2) in terms of the logit l."""
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    log_c = torch.where(small, math.log(2.0) + logits ** 2 / 12.0,
                        torch.log(safe / torch.tanh(safe / 2)))
    return x * logits - F.softplus(logits) + log_c


class BernoulliPixels(nn.Module):
    """log P(b | params) of binary pixels b in {0, 1}: independent Bernoullis with logits
    ``params`` (..., D), the original M1 and M2's likelihood. A probability, not a density."""

    params_per_dim = 1

    def log_prob(self, b: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        b = b[:, None] if params.dim() == 3 else b
        return (b * params - F.softplus(params)).sum(-1)


def binarise(x: torch.Tensor) -> torch.Tensor:
    """b ~ Bernoulli(x) elementwise for intensities x in [0, 1], from the generator that
    :func:`scnf.noise.noise_from` installed (the trainer's in training, a fixed one in evaluation)."""
    return (rand_like(x) < x).to(x.dtype)


class ContinuousBernoulliPixels(nn.Module):
    """log p(x | params) of dequantised pixels x in [0, 1): independent continuous Bernoullis,
    a normalised density on [0, 1]^D. ``params`` (..., D): the logits."""

    params_per_dim = 1

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return continuous_bernoulli_log_prob(x[:, None] if params.dim() == 3 else x, params).sum(-1)


class GaussianFeatures(nn.Module):
    """log p(z | params) of real vectors (M2 on M1's z1): mean and log-scale per dimension."""

    min_log_scale = -7.0
    params_per_dim = 2

    def log_prob(self, z: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        mu, log_scale = params.chunk(2, -1)
        log_scale = log_scale.clamp(min=self.min_log_scale)
        return gaussian_log_prob(z[:, None] if params.dim() == 3 else z, mu, log_scale)


class M2(nn.Module):
    """Kingma et al.'s M2 on ``dim``-dimensional inputs with ``num_classes`` classes."""

    def __init__(self, dim: int, num_classes: int, likelihood: nn.Module, hidden: int = 500, latent: int = 50,
                 class_prior: torch.Tensor | None = None):
        super().__init__()
        self.dim, self.num_classes, self.latent = dim, num_classes, latent
        self.classifier = mlp([dim, hidden, num_classes])
        self.encoder = mlp([dim + num_classes, hidden, 2 * latent])
        self.decoder = mlp([latent + num_classes, hidden, likelihood.params_per_dim * dim])
        self.likelihood = likelihood
        prior = torch.full((num_classes,), 1.0 / num_classes) if class_prior is None else class_prior.float()
        self.register_buffer("log_class_prior", torch.log(prior / prior.sum()))

    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.classifier(x), -1)

    def bounds(self, x: torch.Tensor) -> torch.Tensor:
        """L(x, y=k) for every k (B, K): a one-sample estimate of a lower bound on log p(x, y=k)
        (the z2 part's KL is exact)."""
        b, k = x.shape[0], self.num_classes
        eye = torch.eye(k, dtype=x.dtype, device=x.device)
        xy = torch.cat([x[:, None].expand(b, k, x.shape[1]), eye.expand(b, k, k)], -1)  # (B, K, D + K)
        mu, log_scale = self.encoder(xy).chunk(2, -1)
        z = mu + torch.exp(log_scale) * randn_like(mu)
        params = self.decoder(torch.cat([z, eye.expand(b, k, k)], -1))  # (B, K, 2D)
        return self.likelihood.log_prob(x, params) - kl_to_standard_normal(mu, log_scale) + self.log_class_prior


#: model.vae_likelihood -> the pixel likelihood of M1 and of M2 on pixels
LIKELIHOODS = {"bernoulli": BernoulliPixels, "continuous-bernoulli": ContinuousBernoulliPixels}


class SemiSupervisedVAE(nn.Module):
    """M1 alone (``stage = "m1"``), M2 on pixels (``"m2"``) or M1+M2 (``"m1m2"``), a
    :class:`scnf.protocol.TrainableModel`: ``training_forward`` / ``loss_terms`` (training),
    ``log_joint`` / ``log_density`` / ``class_scores`` (evaluation) and ``parameter_groups``.

    ``likelihood``: ``"bernoulli"`` (the original: pixels re-binarised, b ~ Bernoulli(x), every
    time a batch is drawn; reported densities are probabilities of binarised images) or
    ``"continuous-bernoulli"`` (a density of the dequantised intensities, comparable with the
    flows'). ``pretrained_m1``: the state of a trained M1's ``m1_encoder.*`` / ``m1_decoder.*``;
    M1 is then frozen (the original's sequential recipe), M2 models only the dimensions of z1
    whose posterior means vary across ``active_rows`` with a std of at least ``active_std``
    (the rest keep M1's prior N(0, 1) in the density bound), and M2 trains on a fresh sample of
    q(z1 | x) of every batch. ``labelled_fraction``: the labelled rows' share of the training
    set, N_l / N, which ``train.alpha`` > 0 uses to weight each batch's rows."""

    def __init__(self, dim: int, num_classes: int, m1_hidden: int = 600, m1_latent: int = 50,
                 m2_hidden: int = 500, m2_latent: int = 50, stage: str = "m1m2",
                 class_prior: torch.Tensor | None = None, m1_features: str = "sample",
                 likelihood: str = "bernoulli", labelled_fraction: float | None = None,
                 pretrained_m1: dict | None = None, active_rows: torch.Tensor | None = None,
                 active_std: float = 0.1):
        super().__init__()
        if m1_features not in ("sample", "mean"):
            raise ValueError(f"m1_features must be 'sample' or 'mean', got {m1_features!r}")
        if stage not in ("m1", "m2", "m1m2"):
            raise ValueError(f"stage must be 'm1', 'm2' or 'm1m2', got {stage!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {tuple(LIKELIHOODS)}, got {likelihood!r}")
        if pretrained_m1 is not None and stage != "m1m2":
            raise ValueError("pretrained_m1 applies to stage 'm1m2' only")
        self.dim, self.num_classes, self.m1_features, self.stage = dim, num_classes, m1_features, stage
        self.likelihood = likelihood
        self.pixels = LIKELIHOODS[likelihood]()
        self.labelled_fraction = labelled_fraction
        self.classifies = stage != "m1"
        self.density_of = "binarised" if likelihood == "bernoulli" else "dequantised"
        self.m1_frozen = pretrained_m1 is not None
        if stage == "m2":
            self.m1_encoder = self.m1_decoder = None
            self.m2 = M2(dim, num_classes, self.pixels, m2_hidden, m2_latent, class_prior)
            return
        self.m1_encoder = mlp([dim, m1_hidden, m1_hidden, 2 * m1_latent])
        self.m1_decoder = mlp([m1_latent, m1_hidden, m1_hidden, self.pixels.params_per_dim * dim])
        active = torch.arange(m1_latent)
        if self.m1_frozen:
            mine = {k: v for k, v in self.state_dict().items() if k.startswith(("m1_encoder.", "m1_decoder."))}
            if set(pretrained_m1) != set(mine) or any(pretrained_m1[k].shape != v.shape for k, v in mine.items()):
                raise ValueError("pretrained_m1 does not fit this M1 (model.m1_hidden / model.m1_latent differ "
                                 "from the M1 run's)")
            self.load_state_dict(pretrained_m1, strict=False)
            for p in (*self.m1_encoder.parameters(), *self.m1_decoder.parameters()):
                p.requires_grad_(False)
            if active_rows is not None:
                active = self.active_dimensions(active_rows, active_std)
        self.register_buffer("active", active)
        self.m2 = None if stage == "m1" else M2(len(active), num_classes, GaussianFeatures(), m2_hidden, m2_latent,
                                                class_prior)

    @property
    def stacked(self) -> bool:
        return self.stage == "m1m2"

    @torch.no_grad()
    def active_dimensions(self, rows: torch.Tensor, min_std: float, batch: int = 2000) -> torch.Tensor:
        """Indices of z1's dimensions whose posterior mean varies across ``rows`` (pixels in
        [0, 1]) with a std of at least ``min_std`` (Kingma et al. keep std > 0.1)."""
        mus = torch.cat([self.m1_encoder(self._flat(rows[i:i + batch])).chunk(2, -1)[0]
                         for i in range(0, rows.shape[0], batch)])
        keep = torch.nonzero(mus.std(0) >= min_std).flatten()
        if keep.numel() == 0:
            raise ValueError(f"no dimension of M1's z1 varies with a std of at least {min_std} across the "
                             "training images: the M1 run has collapsed (lower model.m1_active_std, or retrain M1)")
        return keep

    def parameter_counts(self) -> dict:
        m1 = sum(p.numel() for n, p in self.named_parameters() if n.startswith("m1_"))
        m2 = 0 if self.m2 is None else sum(p.numel() for p in self.m2.parameters())
        return {"m1": m1, "m2": m2, "total": m1 + m2}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The optimiser's groups: ``m1`` (M1's encoder and decoder; empty for M2 alone; frozen
        for a pretrained M1) and ``m2`` (empty for M1 alone)."""
        m2 = [] if self.m2 is None else list(self.m2.parameters())
        ids = {id(p) for p in m2}
        return {"m1": [p for p in self.parameters() if id(p) not in ids], "m2": m2}

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"expected inputs with {self.dim} values per row, got {x.shape[1]}")
        return x

    def _observed(self, x: torch.Tensor) -> torch.Tensor:
        """The pixels the likelihood scores: a fresh binarisation b ~ Bernoulli(x) (the original's
        dynamic binarisation; from the installed generator), or ``x`` itself."""
        return binarise(x) if self.likelihood == "bernoulli" else x

    def _m1(self, x_in: torch.Tensor, x_obs: torch.Tensor):
        """M1's encoder output at ``x_in`` (mean, log-scale), a sample z1 and the bound's terms
        log p(x_obs | z1) and log q(z1 | x_in) at the sample."""
        mu, log_scale, z1, log_q = self._q_z1(x_in)
        rec = self.pixels.log_prob(x_obs, self.m1_decoder(z1))
        return mu, log_scale, z1, rec, log_q

    def _q_z1(self, x: torch.Tensor):
        """M1's q(z1 | x): (mean, log-scale, a sample z1, log q at the sample)."""
        mu, log_scale = self.m1_encoder(x).chunk(2, -1)
        eps = randn_like(mu)
        z1 = mu + torch.exp(log_scale) * eps
        # log q(z1 | x) at z1 = mu + exp(log_scale) * eps, written in eps (the reparameterised form)
        return mu, log_scale, z1, (-0.5 * eps ** 2 - log_scale - 0.5 * LOG2PI).sum(-1)

    def _frozen_features(self, x: torch.Tensor):
        """A pretrained M1's q(z1 | x) at the intensities x: (mean, log-scale, sample z1, log q)."""
        with torch.no_grad():
            return self._q_z1(x)

    def _inactive_log_prior(self, z1: torch.Tensor) -> torch.Tensor:
        """log N(z1; 0, I) over the dimensions M2 does not model."""
        mask = torch.ones(z1.shape[-1], dtype=torch.bool, device=z1.device)
        mask[self.active] = False
        return normal_log_prob(z1[..., mask], 0.0, log_scale=torch.zeros(())).sum(-1)

    # ------------------------------------------------------------ training
    def training_forward(self, x: torch.Tensor) -> dict:
        """What :meth:`loss_terms` needs, for the trainer's (possibly DDP-wrapped) forward."""
        x = self._flat(x)
        if self.stage == "m2":
            b = self._observed(x)
            return {"bounds": self.m2.bounds(b), "log_q": self.m2.classifier_logits(b)}
        if self.m1_frozen:
            mu, _, z1, _ = self._frozen_features(x)
            feats = (z1 if self.m1_features == "sample" else mu)[:, self.active]
            return {"bounds": self.m2.bounds(feats), "log_q": self.m2.classifier_logits(feats)}
        b = self._observed(x)
        mu, log_scale, z1, rec, _ = self._m1(b, b)
        m1_bound = rec - kl_to_standard_normal(mu, log_scale)
        if self.stage == "m1":
            return {"m1_bound": m1_bound}
        feats = (z1 if self.m1_features == "sample" else mu).detach()
        return {"bounds": self.m2.bounds(feats), "log_q": self.m2.classifier_logits(feats), "m1_bound": m1_bound}

    def needs_initialisation(self) -> bool:
        """No data-dependent initialisation: the VAEs start from their random weights."""
        return False

    def diagnostics(self, over_run: bool = False) -> dict:
        """Nothing beyond the objective to report."""
        return {}

    def loss_terms(self, out: dict, y: torch.Tensor, cfg, n_rows: int | None = None, n_labelled: int | None = None,
                   target=None, pseudo: bool = False):
        """The objective of a batch as :class:`~scnf.protocol.LossTerms`: (loss, bound of
        labelled rows, bound of unlabelled rows, cross-entropy sum, labelled rows classified
        right, 0).

        M1 alone: -M1's bound, averaged over every row (labels unused). Otherwise labelled rows
        contribute -L(x, y) and the cross-entropy CE of q(y | x); unlabelled rows -U(x); a
        jointly trained M1+M2 adds -M1's bound of every row.

        * ``cfg.alpha`` > 0 (Kingma et al.'s J^alpha with their alpha = ``cfg.alpha`` * N, divided
          by N): -(N_l/N) mean_lab L - (N_u/N) mean_unl U + alpha mean_lab CE, the batch's rows
          weighted by their true shares of the training set (``labelled_fraction``), however
          many labelled rows the sampler draws.
        * ``cfg.alpha`` = 0 (our earlier variant): -(``labelled_weight`` sum_lab L + sum_unl U) /
          n_rows + ``clf_weight`` mean_lab CE.

        Means are over the global batch (``n_rows``, ``n_labelled``) under several processes.
        Pseudo-labels (``pseudo_threshold``) add the cross-entropy of q(y|x) against its own
        confident argmax. ``target`` (consistency) is not supported."""
        if target is not None:
            raise ValueError("the consistency term is not supported by the VAE baselines")
        lab = y >= 0
        if "bounds" not in out:  # M1 alone: unsupervised
            bound = out["m1_bound"]
            n_rows = bound.shape[0] if n_rows is None else n_rows
            zero = bound.new_zeros(())
            return LossTerms(-bound.sum() / n_rows, bound[lab], bound[~lab], zero, zero, zero)
        bounds, log_q = out["bounds"], out["log_q"]
        b_lab = bounds[lab].gather(1, y[lab][:, None]).squeeze(1)
        q = log_q[~lab].exp()
        u = (q * (bounds[~lab] - log_q[~lab])).sum(1)  # U(x) = sum_y q (L(x, y) - log q)
        n_rows = bounds.shape[0] if n_rows is None else n_rows
        n_labelled = int(lab.sum()) if n_labelled is None else n_labelled
        lp_lab, lp_unl = b_lab, u
        if "m1_bound" in out:
            lp_lab, lp_unl = lp_lab + out["m1_bound"][lab], lp_unl + out["m1_bound"][~lab]
        clf_sum = bounds.new_zeros(())
        if n_labelled > 0 and lab.any():
            clf_sum = F.nll_loss(log_q[lab], y[lab], reduction="sum")
        if cfg.alpha > 0:
            if self.labelled_fraction is None:
                raise ValueError("train.alpha needs the model's labelled_fraction (N_l / N)")
            rho, n_unl = self.labelled_fraction, n_rows - n_labelled
            loss = -(rho * lp_lab.sum() / max(n_labelled, 1) + (1 - rho) * lp_unl.sum() / max(n_unl, 1))
            loss = loss + cfg.alpha * clf_sum / max(n_labelled, 1)
        else:
            loss = -(cfg.labelled_weight * lp_lab.sum() + lp_unl.sum()) / n_rows
            if cfg.clf_weight > 0 and n_labelled > 0:
                loss = loss + cfg.clf_weight * clf_sum / n_labelled
        if pseudo and cfg.pseudo_threshold > 0 and (~lab).any():
            conf, y_hat = q.detach().max(1)
            sure = conf >= cfg.pseudo_threshold
            if sure.any():
                pl = F.nll_loss(log_q[~lab][sure], y_hat[sure], reduction="sum")
                loss = loss + cfg.pseudo_weight * pl / max(n_rows - n_labelled, 1)
        with torch.no_grad():
            correct = (log_q[lab].argmax(1) == y[lab]).sum()
        return LossTerms(loss, lp_lab, lp_unl, clf_sum, correct, bounds.new_zeros(()))

    # ------------------------------------------------------------ evaluation
    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        """log q(y | x) (B, K) at the intensities x; M1+M2 classifies the mean of q(z1 | x)."""
        if self.m2 is None:
            raise ValueError("M1 alone does not classify (model.kind = 'm1' is unsupervised)")
        x = self._flat(x)
        if self.stacked:
            x = self.m1_encoder(x).chunk(2, -1)[0][:, self.active]
        return self.m2.classifier_logits(x)

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K): a one-sample estimate of a lower bound on log p(x, y=k) (M1 alone: (B, 1),
        its ELBO). With the Bernoulli likelihood x is binarised first (from the installed
        generator), so this bounds the probability of that binary image. M1+M2: log p(x | z1)
        - log q(z1 | x) + L_M2(z1, k) (+ log N(z1; 0, I) over the dimensions M2 drops) at
        z1 ~ q(z1 | x): a bound for the stacked model whose prior on z1 is M2."""
        x = self._flat(x)
        b = self._observed(x)
        if self.stage == "m2":
            return self.m2.bounds(b)
        if self.m1_frozen:
            _, _, z1, log_q = self._frozen_features(x)
            rec = self.pixels.log_prob(b, self.m1_decoder(z1))
            return (rec - log_q + self._inactive_log_prior(z1))[:, None] + self.m2.bounds(z1[:, self.active])
        mu, log_scale, z1, rec, log_q = self._m1(b, b)
        if self.stage == "m1":
            return (rec - kl_to_standard_normal(mu, log_scale))[:, None]
        return (rec - log_q)[:, None] + self.m2.bounds(z1)

    def log_density(self, x: torch.Tensor, log_joint: torch.Tensor) -> torch.Tensor:
        """(B,): a lower bound on log p(x) (in expectation over the samples): M1's ELBO, or
        sum_k q(k | x) (L_k - log q(k | x)) = E_q[L] + H(q) from :meth:`log_joint`'s L_k and the
        classifier q(y | x); log p(x) >= it for any q, since each L_k bounds log p(x, k).
        (A logsumexp over one-sample estimates would not be a bound.)"""
        if self.stage == "m1":
            return log_joint[:, 0]
        log_q = self.classifier_logits(x)
        return (log_q.exp() * (log_joint - log_q)).sum(1)

    def class_scores(self, x: torch.Tensor, log_joint: torch.Tensor | None = None) -> torch.Tensor:
        """log q(y | x): the VAEs predict with their classifier, not from the bound."""
        return self.classifier_logits(x)

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier_logits(x).exp()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier_logits(x).argmax(1)


def build(kind: str, dim: int, num_classes: int, m1_hidden: int = 600, m1_latent: int = 50, m2_hidden: int = 500,
          m2_latent: int = 50, class_prior: torch.Tensor | None = None, m1_features: str = "sample",
          **kwargs) -> SemiSupervisedVAE:
    """A baseline of ``model.kind`` ``kind`` ("m1", "m2", "m1m2"); ``kwargs`` go to
    :class:`SemiSupervisedVAE` (likelihood, labelled_fraction, pretrained_m1, ...)."""
    if kind not in ("m1", "m2", "m1m2"):
        raise ValueError(f"unknown baseline {kind!r}; expected 'm1', 'm2' or 'm1m2'")
    return SemiSupervisedVAE(dim, num_classes, m1_hidden, m1_latent, m2_hidden, m2_latent, stage=kind,
                             class_prior=class_prior, m1_features=m1_features, **kwargs)
