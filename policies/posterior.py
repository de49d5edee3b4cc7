"""Rao-Blackwellised credit: each unit's firing averaged over its Markov blanket.

The local estimator (docs/method.md §1) credits unit ``i`` with ``(h_i - p_i)(L - c)``. Given the
action ``a`` that the network chose, the return ``L`` no longer depends on the hidden samples, so the
sample ``h_i`` may be replaced by its conditional expectation given everything else that was observed:
the other units' samples, the samples of the layer above (its *children*) and the action:

    q_i = P(h_i = 1 | h_{-i}, children, s) = sigmoid(a_i + log P(children | h_i = 1) - log P(children | h_i = 0))
    g_i = (q_i - p_i)(L - c)                                                    (Rao-Blackwellised estimator)

``E[g_i] = E[(h_i - p_i)(L - c)]`` (tower property: the stored ``h`` is a sample of the posterior over
hidden states given the action, so ``h_{-i}`` is too), and ``Var[g_i]`` is never larger (Rao-Blackwell
theorem). A unit whose flip would not change the likelihood of what its children did gets ``q_i = p_i``
and no credit, instead of a random share of the return: the "noise of every other unit" of the known
weakness (docs/method.md §5). The quantities are the ones Gibbs sampling uses in a sigmoid belief network (Neal 1992,
"Connectionist learning of belief networks"): a unit's parents, its children and their other parents;
no derivative is passed between layers. Summing the two values of one variable with the others held at
their samples is the "local expectation gradient" of Titsias & Lazaro-Gredilla (NeurIPS 2015).

Coupled variant (:func:`coupled_noise`, ``LocalPG(coupled_posterior=True)``): a lower layer's children are
replaced by the action itself, with the noise of every layer above held. Each upper unit's sample is
``h_j = 1[u_j < p_j]``; drawing ``u_j`` given the stored sample (uniform on ``[0, p_j)`` where ``h_j = 1``, on
``[p_j, 1)`` where ``h_j = 0``) makes ``(h, u)`` a draw of the network and its noise, and the network above a
deterministic function of ``h_l`` and ``u``. Then

    q_i = P(h_i = 1 | h_{-i}, u, a, s) = sigmoid(a_i + log pi(a | h_i = 1, u) - log pi(a | h_i = 0, u))

where ``pi(a | h_i = v, u)`` redraws the layers above with the held ``u``. The tower property holds as
above (``u`` is independent of ``h_l`` given the layer's inputs), so ``(q_i - p_i)(L - c)`` is unbiased with
a variance never larger than the sample's. A flip that changes no sample above leaves ``pi(a)`` unchanged,
so the unit gets ``q_i = p_i`` and no credit on that row; a flip that redraws the layers above is credited
with what it did to the action. No derivative passes between layers; a unit's credit reads the layers above
it by forward passes. This is the coupling of common random numbers that the flip diagnostics measure with
(``agents.localpg.diagnostics.flip_effects``).
"""

from __future__ import annotations

import torch

from policies.estimators import bernoulli_log_prob

__all__ = ["bernoulli_children_log_ratio", "coupled_noise", "flip_log_ratio", "flip_shifts"]


def flip_shifts(samples: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """How flipping each unit moves a linear map's output ``W h + b``: ``(1 - 2 h_i) W[:, i]``.

    Args:
        samples: the units' binary samples ``h``, (batch, units).
        weight: the next linear map's weight ``W``, (outputs, units).

    Returns:
        (batch, units, outputs), to add to the map's output for the stored ``h`` (unsqueezed to
        (batch, 1, outputs)).
    """
    return (1.0 - 2.0 * samples).unsqueeze(-1) * weight.t().unsqueeze(0)


def flip_log_ratio(samples: torch.Tensor, stored: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """``log P(children | h_i = 1) - log P(children | h_i = 0)`` from the children's log-likelihood with the
    stored samples, (batch, 1) or (batch,), and with unit ``i`` flipped, (batch, units).

    One of the two values of ``h_i`` is the stored one, so one flipped evaluation per unit suffices:
    the difference is ``stored - flipped`` where ``h_i = 1`` and its negative where ``h_i = 0``.
    """
    return (2.0 * samples - 1.0) * (stored.reshape(len(stored), 1) - flipped)


def bernoulli_children_log_ratio(
    child_pre_activation: torch.Tensor, child_samples: torch.Tensor, child_weight: torch.Tensor, samples: torch.Tensor
) -> torch.Tensor:
    """``log P(children | h_i = 1) - log P(children | h_i = 0)`` for a layer of binary stochastic children.

    Args:
        child_pre_activation: the children's pre-activations ``W h + b`` for the stored ``h``, (batch, children).
        child_samples: the children's stored samples in {0, 1}, (batch, children).
        child_weight: ``W``, (children, units).
        samples: the parent layer's stored samples ``h``, (batch, units).

    Returns:
        (batch, units). Memory: batch x units x children floats.
    """
    stored = bernoulli_log_prob(child_samples, child_pre_activation).sum(-1)
    shifted = child_pre_activation.unsqueeze(1) + flip_shifts(samples, child_weight)
    flipped = bernoulli_log_prob(child_samples.unsqueeze(1), shifted).sum(-1)
    return flip_log_ratio(samples, stored, flipped)


def coupled_noise(samples: torch.Tensor, firing_prob: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Noise ``u`` that draws the stored samples again, ``h = 1[u < p]``: ``u = p v`` where ``h = 1`` and
    ``u = p + (1 - p) v`` where ``h = 0``, for ``v`` uniform on [0, 1).

    Given ``h ~ Bernoulli(p)``, ``u`` is then uniform on [0, 1) and independent of everything but ``h``, so
    ``(h, u)`` is a draw of a unit and its noise; redrawing with ``u`` after the unit's inputs changed is the
    maximal coupling of the two Bernoulli draws.

    Args:
        samples: the stored samples ``h`` in {0, 1}, (batch, units).
        firing_prob: ``p``, the probability with which they were drawn, same shape.
        uniform: ``v``, independent uniform noise on [0, 1), same shape.
    """
    return torch.where(samples > 0.5, firing_prob * uniform, firing_prob + (1.0 - firing_prob) * uniform)
