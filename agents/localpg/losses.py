"""LocalPG's per-neuron clipped local loss, with its gradient written in closed form.

For a layer of binary stochastic units with pre-activations ``a``, stored samples ``h``, firing
probabilities ``p = sigmoid(a)`` and learning signals ``s = A - c`` (advantage minus an optional
per-neuron baseline), the loss is PPO's clipped surrogate applied to every unit separately:

    L = -(1 / B) sum_rows sum_units min(r_i s_i, clip(r_i, 1 - eps, 1 + eps) s_i),
    r_i = P_new(h_i | x) / P_old(h_i | x)

and its gradient with respect to the unit's own pre-activation is the paper's local estimator
(docs/method.md §1) scaled by the ratio, on the unclipped branch only:

    dL/da_i = -(1 / B) r_i (h_i - p_i) s_i   where the unclipped term is the minimum, else 0

(``d r_i / d a_i = r_i (h_i - p_i)``, since ``d log P(h_i) / d a_i = h_i - p_i``). Writing the backward
pass as this one product instead of letting autograd differentiate the dozen element-wise ops of
the forward pass halves the update's element-wise work on large batches and its per-op overhead on
small ones. ``tests/test_localpg.py`` checks it against autograd's derivative of the forward pass.

Rao-Blackwellised variant (``posterior`` given, :mod:`policies.posterior`): with ``q_i`` the probability
that unit ``i`` fired given its Markov blanket under ``P_old``, the surrogate is summed over both values
``v`` of the unit, ``sum_v w_v min(r_i(v) s_i, clip(r_i(v)) s_i)`` with ``w_1 = q_i``, ``w_0 = 1 - q_i`` and
``r_i(v) = P_new(h_i = v) / P_old(h_i = v)``; its gradient at ``r = 1`` is ``-(1 / B)(q_i - p_i) s_i``. With
``q_i = h_i`` it is the loss above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from policies.bsn import BSNOutput
from policies.estimators import LearnedPredictorEstimator, bernoulli_log_prob, local_gradient

__all__ = ["MAX_LOG_RATIO", "clipped_local_loss", "hidden_loss"]

#: Bound on ``|log r_i|``: beyond it ``exp`` would overflow, so the ratio is clamped and the unit's
#: gradient is zero there (a unit whose probability moved by a factor e^20 is far outside any trust region).
MAX_LOG_RATIO = 20.0


class _ClippedLocalLoss(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        pre_activation: torch.Tensor,
        samples: torch.Tensor,
        firing_prob: torch.Tensor,
        log_prob: torch.Tensor,
        old_log_prob: torch.Tensor,
        signal: torch.Tensor,
        clip_range: float | torch.Tensor,
        posterior: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = pre_activation.shape[0]
        # One branch per value a unit may take: the stored sample with weight 1, or (Rao-Blackwellised)
        # both values, weighted by their posterior probabilities given the Markov blanket.
        branches = [(samples, log_prob, old_log_prob, None)]
        if posterior is not None:
            other = 1.0 - samples
            weight_of_sample = torch.where(samples > 0.5, posterior, 1.0 - posterior)
            other_log_prob = bernoulli_log_prob(other, pre_activation)
            other_old_log_prob = torch.log(-torch.expm1(old_log_prob))  # log(1 - P_old(h_i)); -inf if P_old = 1
            branches = [
                (samples, log_prob, old_log_prob, weight_of_sample),
                (other, other_log_prob, other_old_log_prob, 1.0 - weight_of_sample),
            ]
        terms, gradients = [], []
        for value, new, old, weight in branches:
            log_ratio = new - old
            ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()
            unclipped = ratio * signal
            clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range) * signal
            # The unclipped branch carries the gradient where it is the minimum and the ratio was not clamped.
            active = (unclipped <= clipped) & (log_ratio.abs() < MAX_LOG_RATIO)
            term = torch.minimum(unclipped, clipped)
            gradient = torch.where(active, unclipped * (value - firing_prob), 0.0)
            if weight is not None:
                term, gradient = term * weight, gradient * weight
            if not terms:  # the stored samples' branch
                clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
            terms.append(term.sum())
            gradients.append(gradient)
        loss, coefficient = sum(terms), sum(gradients[1:], gradients[0])
        ctx.save_for_backward(coefficient.mul_(-1.0 / rows))
        ctx.mark_non_differentiable(clip_fraction)
        return loss.mul(-1.0 / rows), clip_fraction

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_clip_fraction: torch.Tensor) -> tuple[Any, ...]:
        (coefficient,) = ctx.saved_tensors
        return grad_loss * coefficient, None, None, None, None, None, None, None


def clipped_local_loss(
    pre_activation: torch.Tensor,
    samples: torch.Tensor,
    firing_prob: torch.Tensor,
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    signal: torch.Tensor,
    clip_range: float | torch.Tensor,
    posterior: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's clipped local loss (module docstring) and the fraction of its clipped ratios.

    Gradient flows to ``pre_activation`` only, by the closed form above; every other input is treated
    as a constant (the signal's baseline learns from its own loss, never through this one).

    Args:
        pre_activation: ``a``, (batch, units), carrying autograd to the layer's own weights.
        samples: the stored samples ``h`` in {0, 1}, (batch, units).
        firing_prob: ``p = sigmoid(a)`` under the current parameters, (batch, units).
        log_prob: ``log P_new(h_i)`` under the current parameters, (batch, units).
        old_log_prob: ``log P_old(h_i)`` under the parameters that collected the rollout, (batch, units).
        signal: the learning signal ``A - c``: (batch, 1) shared by the layer's units, or (batch, units).
        clip_range: half-width ``eps > 0`` of the per-neuron trust region ``[1 - eps, 1 + eps]``: a float,
            or a 0-dim tensor (no gradient), which a compiled caller can vary without recompiling.
        posterior: ``None`` for the local estimator, or the Rao-Blackwellised one
            (:mod:`policies.posterior`): ``q_i = P_old(h_i = 1 | Markov blanket)``, (batch, units). The
            loss then sums the clipped surrogate over both values of each unit, weighted by ``q_i`` and
            ``1 - q_i``; at ``r = 1`` its gradient is ``-(1 / B)(q_i - p_i) s_i``.

    Returns:
        ``(loss, clip_fraction)``: the 0-dim loss (summed over units, averaged over rows) and the
        0-dim fraction of ratios with ``|r_i - 1| > eps`` (no gradient).
    """
    detached = [t.detach() for t in (samples, firing_prob, log_prob, old_log_prob, signal)]
    clip = clip_range.detach() if isinstance(clip_range, torch.Tensor) else float(clip_range)
    weights = None if posterior is None else posterior.detach()
    return _ClippedLocalLoss.apply(pre_activation, *detached, clip, weights)  # type: ignore[no-any-return]


def hidden_loss(
    bsn_out: BSNOutput,
    estimators: Sequence[Any],
    old_unit_log_prob: torch.Tensor,
    old_posterior: torch.Tensor | None,
    signals: Sequence[torch.Tensor],
    clip_range: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The hidden layers' loss: its gradient w.r.t. each pre-activation is minus that unit's (clipped) local estimate.

    Local estimator (docs/method.md §1): per unit ``-min(r_i (A - c_i), clip(r_i) (A - c_i))`` with
    ``r_i = exp(log P_new(h_i) - log P_old(h_i))`` (:func:`clipped_local_loss`); at ``r_i = 1`` its gradient
    is ``-(h_i - p_i)(A - c_i)``. With a posterior (Rao-Blackwellised credit), summed over both values of
    the unit weighted by the stored posterior ``q_i``; its gradient at ``r_i = 1`` is ``-(q_i - p_i)(A - c_i)``.
    Learned predictor (docs/method.md §3): ``-a_i * g_hat_i`` and the predictor's squared error to the local
    estimate ``(h_i - p_i)(A - c_i)`` (``(q_i - p_i)(A - c_i)`` with a posterior).

    Args:
        bsn_out: the BSN's output on the minibatch, with the stored samples (``given_samples``).
        estimators: the BSN's per-layer estimators (``local`` or ``learned_predictor``).
        old_unit_log_prob: (rows, total_units) log-probabilities of the stored samples under ``P_old``.
        old_posterior: (rows, total_units) stored posteriors ``q`` (posterior credit), or ``None`` (sample credit).
        signals: per layer, the learning signal ``A - c_i``: (rows, 1) or (rows, units).
        clip_range: half-width ``eps > 0`` of every unit's clipped ratio.

    Returns:
        The summed hidden loss, the learned predictors' loss (0 without one), and the mean fraction of
        clipped per-unit ratios over the clipped layers (``None`` if no layer is clipped).
    """
    sizes = [samples.shape[-1] for samples in bsn_out.samples]
    old_unit_lp = torch.split(old_unit_log_prob, sizes, dim=-1)
    posteriors: Sequence[torch.Tensor | None] = (
        [None] * len(sizes) if old_posterior is None else torch.split(old_posterior, sizes, dim=-1)
    )
    losses: list[torch.Tensor] = []
    predictor_losses: list[torch.Tensor] = []
    clip_fractions: list[torch.Tensor] = []
    for index, estimator in enumerate(estimators):
        samples, probs = bsn_out.samples[index], bsn_out.firing_probs[index]
        pre_activation = bsn_out.pre_activations[index]
        if isinstance(estimator, LearnedPredictorEstimator):
            credit = samples if posteriors[index] is None else posteriors[index]
            target = local_gradient(credit, probs, signals[index])
            predicted = estimator.predict(samples, probs, pre_activation, inputs=bsn_out.layer_inputs[index])
            predictor_losses.append(estimator.predictor_loss(predicted, target))
            losses.append(-(pre_activation * predicted.detach()).sum(-1).mean())
            continue
        loss, clip_fraction = clipped_local_loss(
            pre_activation, samples, probs, bsn_out.unit_log_probs[index], old_unit_lp[index], signals[index],
            clip_range, posteriors[index],
        )
        losses.append(loss)
        clip_fractions.append(clip_fraction)
    predictor_loss = sum(predictor_losses) if predictor_losses else torch.zeros((), device=old_unit_log_prob.device)
    unit_clip_fraction = torch.stack(clip_fractions).mean() if clip_fractions else None
    return sum(losses), predictor_loss, unit_clip_fraction  # type: ignore[return-value]
