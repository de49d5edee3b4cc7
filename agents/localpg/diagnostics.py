"""LocalPG's per-update diagnostics: what the ``bsn/`` TensorBoard keys report, and how they are computed.

Rollout-level quantities (entropies, ``mean |h - p|``, the signal-to-noise ratio of each layer's local
estimates, the share of the advantage a per-neuron baseline explains) come from one pass over the
rollout before the update's first gradient step (:func:`rollout_diagnostics`); what flipping one unit
does to the action, layer by layer, from a second pass over a few of its rows (:func:`flip_effects`);
minibatch statistics (losses, approximate KLs, clip fractions) are accumulated in :class:`UpdateStats`;
:func:`log_update` writes them all to SB3's logger. Every key is documented in ``docs/tensorboard.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch.nn import functional as F

from agents.localpg.losses import MAX_LOG_RATIO
from policies.bsn import BSNOutput
from policies.estimators import local_gradient
from policies.posterior import coupled_noise

__all__ = [
    "DIAGNOSTIC_ROWS",
    "FLIP_ROWS",
    "FLIP_UNITS",
    "RolloutDiagnostics",
    "UpdateStats",
    "bernoulli_entropy",
    "evenly_spaced",
    "explained_variance",
    "flip_effects",
    "hidden_entropy",
    "layer_kls",
    "log_update",
    "rollout_diagnostics",
    "signal_to_noise",
]

#: Rows of a rollout the per-update diagnostics are computed from (every k-th row beyond it): their cost
#: stays bounded on rollouts of 10^5 rows, and 8192 rows estimate each mean to about 1% (1 / sqrt(8192)).
DIAGNOSTIC_ROWS = 8192

#: Rows of a rollout, and units of each layer, that :func:`flip_effects` flips (evenly spaced): its cost is
#: rows x units x (width of the layers above) per layer, bounded on wide, deep networks and large rollouts.
FLIP_ROWS = 256
FLIP_UNITS = 32


def bernoulli_entropy(pre_activation: torch.Tensor) -> torch.Tensor:
    """Entropy of Bernoulli(sigmoid(a)) per unit, in nats: ``softplus(a) - a * sigmoid(a)``.

    Written in the logit so value and gradient stay finite when ``sigmoid(a)`` rounds to 0 or 1 (the
    probability form's gradient is then ``0 * inf = NaN``, even with a zero coefficient).

    Args:
        pre_activation: the units' pre-activations ``a``, any shape, any real values.
    """
    return F.softplus(pre_activation) - pre_activation * torch.sigmoid(pre_activation)


def hidden_entropy(output: BSNOutput) -> torch.Tensor:
    """Summed Bernoulli entropy of all hidden units of ``output``, mean over the batch (a 0-dim tensor)."""
    return torch.stack([bernoulli_entropy(a).sum(-1) for a in output.pre_activations]).sum(0).mean()


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """SB3's ``explained_variance``, ``1 - Var[target - predicted] / Var[target]`` (NaN if ``Var[target] = 0``).

    Computed where the tensors live, so a rollout on a GPU copies one number to the host instead of
    both columns.

    Args:
        predicted: the critic's values, any shape.
        target: the returns, the same shape.
    """
    target_variance = target.var(unbiased=False)
    ratio = (target - predicted).var(unbiased=False) / target_variance
    return float(torch.where(target_variance == 0, torch.nan, 1 - ratio))


def signal_to_noise(estimate: torch.Tensor) -> torch.Tensor:
    """``|mean g| / std g`` of each column of ``estimate`` (rows, units), averaged over units (0 for one row)."""
    rows = len(estimate)
    mean = estimate.mean(0)
    # Moments instead of std(0): a column-wise std is several times slower on CPU for a whole rollout.
    std = ((estimate * estimate).mean(0) - mean * mean).clamp_min(0).mul(rows / max(rows - 1, 1)).sqrt()
    snr = mean.abs() / (std + 1e-8) if rows > 1 else mean * 0
    return snr.mean()


def layer_kls(
    old_unit_log_prob: torch.Tensor, unit_log_probs: Sequence[torch.Tensor], hidden_sizes: Sequence[int]
) -> dict[str, torch.Tensor]:
    """``{"layer_kl_<l>": approximate joint KL of layer l}``: the mean over rows of ``sum_i ((r_i - 1) - log r_i)``.

    Schulman's non-negative estimator of ``KL(P_old || P_new)`` per unit, summed over the layer's units
    (the units of a layer are independent given the layer's input).

    Args:
        old_unit_log_prob: (rows, total_units) log-probabilities of the stored samples under ``P_old``.
        unit_log_probs: per layer, (rows, units) log-probabilities of the same samples under ``P_new``.
        hidden_sizes: units per layer, bottom to top.
    """
    old = torch.split(old_unit_log_prob, list(hidden_sizes), dim=-1)
    kls = {}
    for index, (new_lp, old_lp) in enumerate(zip(unit_log_probs, old, strict=True)):
        log_ratio = (new_lp.detach() - old_lp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        kls[f"layer_kl_{index}"] = (torch.expm1(log_ratio) - log_ratio).sum(-1).mean()
    return kls


def evenly_spaced(total: int, most: int) -> torch.Tensor:
    """Indices of ``min(total, most)`` evenly spaced items (rows, units) of ``total``, first and last included."""
    return torch.linspace(0, total - 1, min(total, most)).round().long()


def flip_effects(
    policy: Any, output: BSNOutput, actions: torch.Tensor, uniform: Sequence[torch.Tensor]
) -> list[dict[str, torch.Tensor]]:
    """What flipping one hidden unit does to the action's log-likelihood, with the noise of every layer above held.

    For each row and each of up to :data:`FLIP_UNITS` units ``i`` of layer ``l`` (evenly spaced), ``h_i``
    is flipped and the layers above are drawn again with the *same* uniform noise, ``h_j = 1[u_j < p_j]``.
    The noise is drawn given the stored samples, ``u_j ~ U(0, p_j)`` where ``h_j = 1`` and ``U(p_j, 1)``
    where ``h_j = 0``, so without the flip the stored samples come back, and with it the coupled network
    is still a draw of the network (with the flipped unit). Per layer:

        flip_influence = mean over rows and units of |log pi(a | h with h_i flipped) - log pi(a | h)|
        flip_reach     = share of those flips that change the top layer's sample (1 for the top layer)

    The local estimate of unit ``i``, ``(h_i - p_i)(A - c)``, has mean ``p_i (1 - p_i)`` times the
    difference its firing makes to the expected advantage, which reaches the return only through the
    action; its noise, ``p_i (1 - p_i) Var(A)``, does not depend on the layer. ``flip_influence`` is
    that lever arm from a unit to the action, measured without the advantage's noise (docs/deep-policies.md).

    Args:
        policy: the :class:`~policies.BinaryStochasticPolicy` (its BSN, its action head).
        output: the BSN's output with the stored binary samples (local-family estimators), (rows, units_l)
            per layer, scored under the parameters that drew them.
        actions: the actions the rows took, as the rollout stores them.
        uniform: per layer, (rows, units_l) noise in [0, 1), uniform and independent of everything else.

    Returns:
        Per layer, bottom first, ``{"flip_influence": ..., "flip_reach": ...}`` as 0-dim tensors.
    """
    noise = [coupled_noise(h, p, v) for h, p, v in zip(output.samples, output.firing_probs, uniform, strict=True)]
    stored_log_prob = policy._get_action_dist_from_latent(output.output).log_prob(actions)
    effects = []
    for index, samples in enumerate(output.samples):
        units = evenly_spaced(samples.shape[-1], FLIP_UNITS).to(samples.device)
        log_prob, reached = policy.flipped_action_log_probs(output, actions, index, units, noise, with_reach=True)
        effects.append({
            "flip_influence": (log_prob - stored_log_prob.unsqueeze(-1)).abs().mean(),
            "flip_reach": reached.float().mean(),
        })
    return effects


class RolloutDiagnostics(NamedTuple):
    """Rollout-level diagnostics of one update (tensors on the device).

    Attributes:
        scalars: ``hidden_entropy``; ``entropy_loss`` if the action distribution has an entropy;
            ``baseline_explained_variance`` with a per-neuron baseline (0-dim tensors).
        layers: per BSN layer, ``abs_h_minus_p`` (``mean |h - p|``) and ``grad_snr`` (``|mean g| / std g``
            of the local estimates ``g``, averaged over units). Scalars and layers use at most
            :data:`DIAGNOSTIC_ROWS` rows of the rollout (every k-th row beyond it).
        unit_firing_rate: each unit's firing rate over the whole rollout, shape (total_units,).
    """

    scalars: dict[str, torch.Tensor]
    layers: list[dict[str, torch.Tensor]]
    unit_firing_rate: torch.Tensor


def rollout_diagnostics(
    policy: Any,
    output: BSNOutput,
    credits: Sequence[torch.Tensor],
    advantages: torch.Tensor,
    learning_signals: Callable[[torch.Tensor, BSNOutput, torch.Tensor], list[torch.Tensor]],
) -> RolloutDiagnostics:
    """The :class:`RolloutDiagnostics` of a whole rollout scored under the collecting parameters.

    Args:
        policy: the :class:`~policies.BinaryStochasticPolicy` (its action distribution and per-neuron baseline).
        output: the BSN's output on every row of the rollout, with the stored samples.
        credits: per layer, what each unit is credited with (its sample ``h``, or its posterior ``q``).
        advantages: (rows,) the rollout's advantages, as the update prepares them (standardised or not).
        learning_signals: ``(features, output, advantages) -> per-layer A - c_i``, the update's own.
    """
    unit_firing_rate = torch.cat(output.samples, -1).mean(0)
    stride = max(1, len(advantages) // DIAGNOSTIC_ROWS)
    if stride > 1:  # every stride-th row: a sample across steps and envs
        output, advantages = output.rows(slice(None, None, stride)), advantages[::stride]
        credits = [credit[::stride] for credit in credits]
    scalars = {"hidden_entropy": hidden_entropy(output)}
    entropy = policy._get_action_dist_from_latent(output.output).entropy()
    if entropy is not None:
        scalars["entropy_loss"] = -entropy.mean()
    signals = learning_signals(output.inputs, output, advantages)
    if policy.neuron_baseline is not None:  # 1 - Var(A - c) / Var(A)
        residual = torch.cat([s.expand_as(h) for s, h in zip(signals, output.samples, strict=True)], -1)
        scalars["baseline_explained_variance"] = 1 - residual.var() / (advantages.var() + 1e-8)
    layers = [
        {"abs_h_minus_p": (samples - probs).abs().mean(), "grad_snr": signal_to_noise(local_gradient(credit, probs, s))}
        for samples, credit, probs, s in zip(output.samples, credits, output.firing_probs, signals, strict=True)
    ]
    return RolloutDiagnostics(scalars, layers, unit_firing_rate)


class UpdateStats:
    """Accumulates the scalars of one update for logging; tensors stay on the device until :meth:`mean`."""

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = {}
        self.layers: dict[tuple[int, str], float] = {}
        self.unit_firing_rate: torch.Tensor | None = None

    def add(self, **values: torch.Tensor) -> None:
        """Record one value (a 0-dim tensor) of each named statistic."""
        for key, value in values.items():
            self.values.setdefault(key, []).append(value.detach())

    def add_rollout(self, diagnostics: RolloutDiagnostics) -> None:
        """Record the rollout-level diagnostics of the update."""
        self.add(**diagnostics.scalars)
        self.add_layers(diagnostics.layers)
        self.unit_firing_rate = diagnostics.unit_firing_rate

    def add_layers(self, layers: Sequence[dict[str, torch.Tensor]]) -> None:
        """Record one value of each named per-layer statistic, bottom layer first."""
        for index, layer in enumerate(layers):
            self.layers.update({(index, name): float(value) for name, value in layer.items()})

    def mean(self, key: str, default: float = 0.0) -> float:
        """The mean of the recorded values of ``key``, or ``default`` if none was recorded."""
        if key not in self.values:
            return default
        return float(torch.stack([value.float() for value in self.values[key]]).mean())

    def layer_mean(self, index: int, key: str) -> float:
        """The rollout-level diagnostic ``key`` of BSN layer ``index`` (NaN if not recorded)."""
        return self.layers.get((index, key), float("nan"))


def log_update(model: Any, stats: UpdateStats, clip_range: float, weights_before: Sequence[torch.Tensor]) -> None:
    """Write one update's ``train/`` keys (as SB3's PPO names them) and ``bsn/`` keys to the model's logger.

    Args:
        model: the :class:`~agents.LocalPG` after its update (logger, rollout buffer, policy, update count).
        stats: the update's statistics, with its rollout diagnostics.
        clip_range: the action head's clip range of this update.
        weights_before: each BSN layer's weight before the update (for ``bsn/layer<l>/update_norm``).
    """
    buffer, bsn = model.rollout_buffer, model.policy.bsn
    record = model.logger.record
    record("train/entropy_loss", stats.mean("entropy_loss"))
    record("train/policy_gradient_loss", stats.mean("action_loss"))
    record("train/value_loss", stats.mean("value_loss"))
    record("train/approx_kl", stats.mean("approx_kl"))
    record("train/clip_fraction", stats.mean("clip_fraction"))
    record("train/loss", stats.mean("loss"))
    record("train/explained_variance",
           explained_variance(buffer.tensors.values.flatten(), buffer.tensors.returns.flatten()))
    record("train/n_updates", model._n_updates, exclude="tensorboard")
    record("train/clip_range", clip_range)
    record("bsn/hidden_loss", stats.mean("hidden_loss"))
    record("bsn/hidden_entropy", stats.mean("hidden_entropy"))
    if "unit_clip_fraction" in stats.values:
        record("bsn/unit_clip_fraction", stats.mean("unit_clip_fraction"))
    if "predictor_loss" in stats.values:
        record("bsn/predictor_loss", stats.mean("predictor_loss"))
    unit_rate = stats.unit_firing_rate
    assert unit_rate is not None, "the update records the firing rates when it scores the rollout"
    layers = zip(torch.split(unit_rate, bsn.hidden_sizes), bsn.layers, weights_before, strict=True)
    for index, (rates, layer, old_weight) in enumerate(layers):
        prefix = f"bsn/layer{index}"
        record(f"{prefix}/firing_rate", float(rates.mean()))
        record(f"{prefix}/frac_always_on", float((rates == 1).float().mean()))
        record(f"{prefix}/frac_never_on", float((rates == 0).float().mean()))
        record(f"{prefix}/mean_abs_h_minus_p", stats.layer_mean(index, "abs_h_minus_p"))
        record(f"{prefix}/grad_snr", stats.layer_mean(index, "grad_snr"))
        record(f"{prefix}/flip_influence", stats.layer_mean(index, "flip_influence"))
        record(f"{prefix}/flip_reach", stats.layer_mean(index, "flip_reach"))
        record(f"{prefix}/update_norm", float((layer.weight.detach() - old_weight).norm()))
        record(f"{prefix}/approx_kl", stats.mean(f"layer_kl_{index}"))
    if model.policy.neuron_baseline is not None:
        record("bsn/baseline_explained_variance", stats.mean("baseline_explained_variance", default=float("nan")))
