"""Baselines ``c`` for the local estimator ``g_i = (h_i - p_i)(L - c_i)`` (docs/method.md §1-2).

A baseline never changes the estimator's expectation as long as it does not depend on the unit's own
noise; a good one lowers its variance. Every baseline maps a batch to one tensor per layer,
broadcastable to (batch, units_l):

* :class:`NoBaseline`: ``c = 0``.
* :class:`RunningMeanBaseline`: one scalar, a running mean of ``L`` (the classic REINFORCE baseline).
* :class:`OptimalBaseline`: the per-neuron variance-minimising ``c_i* = E[(h_i - p_i)^2 L] /
  E[(h_i - p_i)^2]`` (docs/method.md §2), tracked with running averages of numerator and
  denominator. Not input-dependent, so optimal for a fixed input distribution.
* :class:`LearnedBaseline`: an input-dependent per-neuron regressor ``c(x)``, trained on
  ``sum_i (h_i - p_i)^2 (L - c_i(x))^2`` whose minimiser is ``c_i*`` given ``x``; ``x`` is the observation
  features, or each unit's own input (``condition="layer_input"``).

Protocol: compute ``c = baseline(inputs, output)`` *before* using the current batch's ``L``; then
call ``baseline.observe(output, L)`` (running statistics) and/or minimise ``baseline.loss(...)``.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from policies.bsn import BSNOutput

__all__ = [
    "BASELINES",
    "LEARNED_BASELINE_CONDITIONS",
    "Baseline",
    "LearnedBaseline",
    "NoBaseline",
    "OptimalBaseline",
    "RunningMeanBaseline",
    "make_baseline",
]


def _column(learning_signal: torch.Tensor) -> torch.Tensor:
    """(batch,) or (batch, 1) -> (batch, 1)."""
    return learning_signal.reshape(-1, 1)


class Baseline(nn.Module):
    """Base class. Subclasses implement :meth:`forward`; running ones :meth:`observe`, learned ones :meth:`loss`.

    Attributes:
        name: registry name for :func:`make_baseline`.
        learned: True if the baseline has parameters trained by :meth:`loss`.
    """

    name: str = ""
    learned: bool = False

    @abstractmethod
    def forward(self, inputs: torch.Tensor, output: BSNOutput) -> list[torch.Tensor]:
        """Per layer, the baseline ``c_l`` broadcastable to (batch, units_l). Detached."""

    def observe(self, output: BSNOutput, learning_signal: torch.Tensor) -> None:
        """Update running statistics with this batch (after it has been used). No-op by default."""

    def loss(self, inputs: torch.Tensor, output: BSNOutput, learning_signal: torch.Tensor) -> torch.Tensor | None:
        """Training loss of a learned baseline; ``None`` for baselines without parameters."""
        return None


class NoBaseline(Baseline):
    """``c = 0``: the plain estimator ``(h - p) L``."""

    name = "none"

    def forward(self, inputs: torch.Tensor, output: BSNOutput) -> list[torch.Tensor]:
        return [torch.zeros(1, 1, device=inputs.device, dtype=inputs.dtype) for _ in output.samples]


class RunningMeanBaseline(Baseline):
    """``c`` = exponential running mean of ``L`` over past batches, shared by every unit.

    Bias-corrected like Adam's moments (divided by ``1 - decay^t``) so early estimates are not
    pulled towards zero.

    Args:
        decay: weight of the past in the running mean, in [0, 1) (default 0.9).
    """

    name = "mean"

    def __init__(self, decay: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.register_buffer("running_sum", torch.zeros(()))
        self.register_buffer("weight", torch.zeros(()))

    def value(self) -> torch.Tensor:
        """The current scalar baseline (0 before the first observation)."""
        return torch.where(self.weight > 0, self.running_sum / self.weight.clamp_min(1e-12), self.running_sum)

    def forward(self, inputs: torch.Tensor, output: BSNOutput) -> list[torch.Tensor]:
        value = self.value().to(inputs.device, inputs.dtype).reshape(1, 1)
        return [value for _ in output.samples]

    @torch.no_grad()
    def observe(self, output: BSNOutput, learning_signal: torch.Tensor) -> None:
        self.running_sum.mul_(self.decay).add_((1.0 - self.decay) * learning_signal.mean().to(self.running_sum))
        self.weight.mul_(self.decay).add_(1.0 - self.decay)


class OptimalBaseline(Baseline):
    """Per-neuron variance-optimal baseline ``c_i* = E[(h_i - p_i)^2 L] / E[(h_i - p_i)^2]``. docs/method.md §2.

    Numerator and denominator are exponential running averages over past batches (bias-corrected
    by the shared ``1 - decay^t`` factor, which cancels in the ratio). Units with no statistics yet
    get ``c = 0``. Optimal for the sample credit ``(h_i - p_i)(L - c_i)``; with LocalPG's posterior credit
    ``(q_i - p_i)(L - c_i)`` it stays unbiased, but the variance-optimal weights would be ``(q_i - p_i)^2``.

    Args:
        hidden_sizes: number of units of each layer of the network it serves.
        decay: weight of the past in the running averages, in [0, 1) (default 0.9).
    """

    name = "optimal"

    def __init__(self, hidden_sizes: Sequence[int], decay: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.hidden_sizes = [int(s) for s in hidden_sizes]
        total = sum(self.hidden_sizes)
        self.register_buffer("numerator", torch.zeros(total))
        self.register_buffer("denominator", torch.zeros(total))

    def value(self) -> torch.Tensor:
        """Current ``c*`` of every unit, concatenated over layers, shape (total_units,)."""
        safe = self.denominator.clamp_min(1e-12)
        return torch.where(self.denominator > 0, self.numerator / safe, torch.zeros_like(self.numerator))

    def forward(self, inputs: torch.Tensor, output: BSNOutput) -> list[torch.Tensor]:
        value = self.value().to(inputs.device, inputs.dtype)
        return [c.unsqueeze(0) for c in torch.split(value, self.hidden_sizes)]

    @torch.no_grad()
    def observe(self, output: BSNOutput, learning_signal: torch.Tensor) -> None:
        weights = torch.cat([(h - p).pow(2) for h, p in zip(output.samples, output.firing_probs, strict=True)], -1)
        weights = weights.detach().to(self.numerator)
        signal = _column(learning_signal).to(self.numerator)
        self.numerator.mul_(self.decay).add_((1.0 - self.decay) * (weights * signal).mean(0))
        self.denominator.mul_(self.decay).add_((1.0 - self.decay) * weights.mean(0))


class LearnedBaseline(Baseline):
    """Input-dependent per-neuron baseline ``c_i(x)``, one output per unit. docs/method.md §2.

    Trained with ``sum_i (h_i - p_i)^2 (L - c_i(x))^2`` (mean over the batch), whose minimiser is
    ``c_i*(x) = E[(h_i - p_i)^2 L | x] / E[(h_i - p_i)^2 | x]``. A linear map of ``x`` by default, or an MLP
    with ``net_arch`` hidden tanh layers.

    What ``x`` is (``condition``):

    * ``"features"``: the network's input (the observation features), one regressor for every unit.
    * ``"layer_input"``: each unit's own input, ``x_{l-1}`` (the observation features for the first layer, the
      samples of the layer below for the others), one regressor per layer. It stays unbiased because ``x_{l-1}``
      is drawn before ``h_i``: ``E[(h_i - p_i) c_i(x_{l-1})] = 0``. Conditioning on the samples below removes
      from a unit's signal the part of ``L`` that the lower layers' noise caused, which a state-value critic
      cannot see: the variance that grows with depth.

    Args:
        in_features: size of the network's input (> 0).
        hidden_sizes: number of units of each layer of the network it serves.
        net_arch: hidden layer sizes of each regressor (empty: linear).
        condition: ``"features"`` or ``"layer_input"`` (above).
    """

    name = "learned"
    learned = True

    def __init__(
        self, in_features: int, hidden_sizes: Sequence[int], net_arch: Sequence[int] = (), condition: str = "features"
    ) -> None:
        super().__init__()
        if condition not in LEARNED_BASELINE_CONDITIONS:
            raise ValueError(
                f"unknown baseline condition {condition!r}; choose one of: {', '.join(LEARNED_BASELINE_CONDITIONS)}"
            )
        self.hidden_sizes = [int(s) for s in hidden_sizes]
        self.condition = condition
        if condition == "features":
            shapes = [(int(in_features), sum(self.hidden_sizes))]
        else:
            shapes = list(zip([int(in_features), *self.hidden_sizes[:-1]], self.hidden_sizes, strict=True))
        self.regressors = nn.ModuleList(_regressor(fan_in, fan_out, net_arch) for fan_in, fan_out in shapes)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        # Models saved before the regressors became a list named their one regressor ``regressor``.
        for key in [k for k in state_dict if k.startswith(prefix + "regressor.")]:
            state_dict[prefix + "regressors.0." + key.removeprefix(prefix + "regressor.")] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]

    def predict(self, inputs: torch.Tensor, output: BSNOutput) -> torch.Tensor:
        """``c(x)`` for every unit, with autograd, shape (batch, total_units).

        Args:
            inputs: the network's input, (batch, in_features).
            output: the network's output on ``inputs`` (its layer inputs, for ``condition="layer_input"``).
        """
        if self.condition == "features":
            return self.regressors[0](inputs)
        pairs = zip(self.regressors, output.layer_inputs, strict=True)
        return torch.cat([regressor(x.detach()) for regressor, x in pairs], -1)

    def forward(self, inputs: torch.Tensor, output: BSNOutput) -> list[torch.Tensor]:
        return list(torch.split(self.predict(inputs, output).detach(), self.hidden_sizes, dim=-1))

    def loss(self, inputs: torch.Tensor, output: BSNOutput, learning_signal: torch.Tensor) -> torch.Tensor:
        weights = torch.cat([(h - p).pow(2) for h, p in zip(output.samples, output.firing_probs, strict=True)], -1)
        residual = _column(learning_signal).detach() - self.predict(inputs, output)
        return (weights.detach() * residual.pow(2)).sum(-1).mean()


#: What a :class:`LearnedBaseline` may condition on (its ``condition`` argument).
LEARNED_BASELINE_CONDITIONS = ("features", "layer_input")


def _regressor(fan_in: int, fan_out: int, net_arch: Sequence[int]) -> nn.Sequential:
    """A linear map ``fan_in -> fan_out``, or an MLP with ``net_arch`` hidden tanh layers."""
    dims = [fan_in, *[int(n) for n in net_arch]]
    modules: list[nn.Module] = []
    for inner_in, inner_out in itertools.pairwise(dims):
        modules += [nn.Linear(inner_in, inner_out), nn.Tanh()]
    modules.append(nn.Linear(dims[-1], fan_out))
    return nn.Sequential(*modules)


BASELINES: dict[str, type[Baseline]] = {
    "none": NoBaseline,
    "mean": RunningMeanBaseline,
    "optimal": OptimalBaseline,
    "learned": LearnedBaseline,
}


def make_baseline(name: str, in_features: int, hidden_sizes: Sequence[int], **kwargs: object) -> Baseline:
    """Build a baseline by registry name: ``none``, ``mean``, ``optimal`` or ``learned``.

    Args:
        name: the registry name.
        in_features: input size of the network served (used by ``learned``).
        hidden_sizes: layer sizes of the network served (used by ``optimal`` and ``learned``).
        kwargs: the baseline's own constructor arguments (``decay``; ``net_arch``, ``condition``).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}")
    if name == "none":
        return NoBaseline()
    if name == "mean":
        return RunningMeanBaseline(**kwargs)  # type: ignore[arg-type]
    if name == "optimal":
        return OptimalBaseline(hidden_sizes, **kwargs)  # type: ignore[arg-type]
    return LearnedBaseline(in_features, hidden_sizes, **kwargs)  # type: ignore[arg-type]
