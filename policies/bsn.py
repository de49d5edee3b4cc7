"""Networks of binary stochastic neurons (BSNs).

A layer computes pre-activations ``a = W x + b`` of its input ``x`` (the observation features, or the
*sampled* outputs of the layer below) and each unit fires with probability ``p = sigmoid(a)``:
``h = 1[u < p]``, ``u ~ U(0, 1)``. See ``docs/method.md`` and :mod:`policies.estimators`.

With ``signed_inputs`` a layer above the first reads each unit below as a sign, ``a = W (2h - 1) + b``
(:class:`SignedInputLinear`): the same family of functions, but inputs centred on 0 instead of on 1/2, which
keeps a unit's weight updates from all moving its pre-activation the same way (the centring trick of
Boltzmann machines: Montavon & Mueller, 2012). :func:`bit_affine` gives any layer's map of its raw 0/1 input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from policies.estimators import Estimator, make_estimator

__all__ = [
    "DETERMINISTIC_UNITS",
    "BSNOutput",
    "BinaryStochasticNetwork",
    "NoiseFn",
    "SignedInputLinear",
    "bit_affine",
    "check_deterministic_units",
]

#: ``noise_fn(layer_index, shape) -> uniform noise in [0, 1)`` of that shape.
NoiseFn = Callable[[int, torch.Size], torch.Tensor]

#: What a unit outputs in deterministic mode: ``"threshold"``, its noise-free value (a binary unit fires iff
#: ``p > 0.5``); ``"mean_field"``, its expected output ``E[h]`` (``p`` for a binary unit).
DETERMINISTIC_UNITS = ("threshold", "mean_field")


def check_deterministic_units(value: object) -> str:
    """``value`` if it names a readout of :data:`DETERMINISTIC_UNITS`, else a ``ValueError`` naming the choices."""
    if value not in DETERMINISTIC_UNITS:
        raise ValueError(f"deterministic_units must be one of {', '.join(DETERMINISTIC_UNITS)}, got {value!r}")
    return str(value)


def _is_positive_int(value: object) -> bool:
    """True for an integral value > 0 (``3`` or ``3.0``), False for bools, strings, 0, negatives, ``2.5``."""
    if isinstance(value, bool) or (not isinstance(value, (int, float)) and not hasattr(value, "__index__")):
        return False
    try:
        return int(value) == value and int(value) > 0  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return False


class BSNOutput(NamedTuple):
    """Everything one forward pass of a :class:`BinaryStochasticNetwork` produced.

    Attributes:
        samples: per layer, the layer's output ``h_l``, shape (batch, units_l). Binary {0, 1} for
            the local and straight-through estimators (``sqrt(p) * b`` for STS, ``relu(a + z)`` for
            the noisy rectifier); in deterministic mode with ``deterministic_units="mean_field"``, ``E[h_l]``.
        firing_probs: per layer, the probability that each unit fires, ``p_l = sigmoid(a_l)``
            (``sqrt(sigmoid(a_l))`` for STS, ``Phi(a_l / sigma)`` for the noisy rectifier).
        pre_activations: per layer, ``a_l = W_l x_l + b_l`` (carries autograd to ``W_l, b_l``).
        unit_log_probs: per layer, ``log P(firing event of unit i)`` via log-sigmoid, (batch, units_l).
        log_prob: per row, the joint log-probability of all samples: the sum of ``unit_log_probs``
            over every unit of every layer, shape (batch,). Finite for any finite pre-activation.
        inputs: the network's input, (batch, in_features).
    """

    samples: list[torch.Tensor]
    firing_probs: list[torch.Tensor]
    pre_activations: list[torch.Tensor]
    unit_log_probs: list[torch.Tensor]
    log_prob: torch.Tensor
    inputs: torch.Tensor

    @property
    def output(self) -> torch.Tensor:
        """The top layer's samples, the network's output."""
        return self.samples[-1]

    @property
    def layer_inputs(self) -> list[torch.Tensor]:
        """What each layer read: the network's input for the first, the samples below for the others."""
        return [self.inputs, *self.samples[:-1]]

    def rows(self, index: slice | torch.Tensor) -> BSNOutput:
        """The same output restricted to the rows ``index`` selects, in every field."""
        per_layer = [[tensor[index] for tensor in field] for field in self[:4]]
        return BSNOutput(*per_layer, self.log_prob[index], self.inputs[index])


class SignedInputLinear(nn.Linear):
    """An affine map of 0/1 samples read as signs: ``a = W (2h - 1) + b``.

    Same arguments and parameters as ``nn.Linear``; only the input is centred. Autograd sees the centred input,
    so the local estimator's weight gradient is ``(h_i - p_i) A (2h - 1)``.
    """

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        return F.linear(2.0 * bits - 1.0, self.weight, self.bias)


def bit_affine(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's pre-activation as an affine map of its *raw* input ``x``: ``(W', b')`` with ``a = W' x + b'``.

    ``(W, b)`` for ``nn.Linear``; ``(2W, b - W 1)`` for :class:`SignedInputLinear`. Flipping input ``j`` from 0 to
    1 moves the pre-activations by ``W'[:, j]`` (posterior credit, export to bit-reading runtimes).
    """
    if isinstance(layer, SignedInputLinear):
        return 2.0 * layer.weight, layer.bias - layer.weight.sum(1)
    return layer.weight, layer.bias


class BinaryStochasticNetwork(nn.Module):
    """A stack of fully-connected layers of binary stochastic neurons.

    Layer ``l + 1`` receives the *sampled* outputs ``h_l`` of layer ``l``. With the local estimator
    (the default) samples are constants for autograd, so no gradient flows from one layer into the
    layer below: each layer's parameters only receive gradient from terms of its own pre-activation.
    With a propagating estimator (straight-through, STS, noisy rectifier) autograd back-propagates
    the estimator's surrogate derivative through the samples.

    Args:
        in_features: size of the input vector (> 0).
        hidden_sizes: number of units of each layer, bottom to top (at least one layer, each > 0).
        estimator: an :class:`~policies.estimators.Estimator` or its registry name
            (``"local"``, ``"learned_predictor"``, ``"st"``, ``"st_sigmoid"``, ``"sts"``,
            ``"noisy_rectifier"``). A learned predictor gets one instance per layer.
        estimator_kwargs: keyword arguments of the estimator's constructor, when given by name.
        signed_inputs: layers above the first read the units below as signs, ``2h - 1``
            (:class:`SignedInputLinear`); the first layer reads the input as it is.
        deterministic_units: each unit's output in deterministic mode, a name of :data:`DETERMINISTIC_UNITS`
            (below). It is an attribute that may be changed after training: it changes no parameter.

    Attributes:
        layers: ``nn.ModuleList`` of the affine maps, one per layer (``nn.Linear``, or above the first
            :class:`SignedInputLinear` with ``signed_inputs``).
        estimators: ``nn.ModuleList`` with one estimator per layer (they share no parameters).

    Deterministic mode (``forward(x, deterministic=True)``), the mode used for evaluation, like SB3's
    ``predict(deterministic=True)``: no noise is drawn. With ``deterministic_units="threshold"`` (the default)
    each unit outputs its estimator's noise-free value: for binary units, ``h = 1[p > 0.5]`` (i.e. ``a > 0``).
    With ``"mean_field"`` each unit outputs its expected value ``E[h | a]`` (:meth:`Estimator.mean_output
    <policies.estimators.Estimator.mean_output>`; ``p`` for binary units) and the layer above reads it in place
    of a sample. For one layer this is exact: an affine map of ``p`` is the expectation of the same map of ``h``
    over the units' draws (a Gaussian head's mean action, a categorical head's expected logits). Above the first
    layer it is the mean-field approximation: ``E[sigmoid(a)]`` is replaced by ``sigmoid(E[a])``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        estimator: str | Estimator = "local",
        estimator_kwargs: dict | None = None,
        signed_inputs: bool = False,
        deterministic_units: str = "threshold",
    ) -> None:
        super().__init__()
        self.deterministic_units = check_deterministic_units(deterministic_units)
        if not _is_positive_int(in_features):
            raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
        sizes = list(hidden_sizes) if isinstance(hidden_sizes, Sequence) and not isinstance(hidden_sizes, str) else []
        if not sizes or not all(_is_positive_int(s) for s in sizes):
            raise ValueError(
                f"hidden_sizes must be a non-empty list of positive integers such as [64, 64], got {hidden_sizes!r}"
            )
        self.in_features = int(in_features)
        self.hidden_sizes = [int(s) for s in sizes]
        kwargs = dict(estimator_kwargs or {})
        if isinstance(estimator, Estimator):
            if len(sizes) > 1 and any(True for _ in estimator.parameters()):
                raise ValueError("pass a parametrised estimator by name so each layer gets its own instance")
            per_layer = [estimator] * len(sizes)
        else:
            per_layer = [make_estimator(estimator, **kwargs) for _ in sizes]
        self.estimators = nn.ModuleList(per_layer)
        dims = [self.in_features, *self.hidden_sizes]
        self.signed_inputs = bool(signed_inputs)
        above = SignedInputLinear if self.signed_inputs else nn.Linear
        self.layers = nn.ModuleList(
            (nn.Linear if i == 0 else above)(dims[i], dims[i + 1]) for i in range(len(self.hidden_sizes))
        )
        for layer, layer_estimator in zip(self.layers, self.estimators, strict=True):
            layer_estimator.bind(layer.in_features, layer.out_features)

    @property
    def estimator(self) -> Estimator:
        """The estimator of the first layer (all layers use the same kind)."""
        return self.estimators[0]  # type: ignore[return-value]

    @property
    def propagates(self) -> bool:
        """True if gradients are back-propagated through samples (non-local estimators)."""
        return self.estimator.propagates

    @property
    def is_local(self) -> bool:
        """True for the local family: local unbiased estimator or learned predictor."""
        return not self.estimator.propagates

    @property
    def total_units(self) -> int:
        """Total number of stochastic units over all layers."""
        return sum(self.hidden_sizes)

    @property
    def out_features(self) -> int:
        """Number of units of the top layer."""
        return self.hidden_sizes[-1]

    def forward(
        self,
        inputs: torch.Tensor,
        deterministic: bool = False,
        noise: NoiseFn | Sequence[torch.Tensor] | None = None,
        given_samples: Sequence[torch.Tensor] | None = None,
    ) -> BSNOutput:
        """Run the network on a batch.

        Args:
            inputs: (batch, in_features) float tensor.
            deterministic: draw no noise; each unit outputs what ``deterministic_units`` says (class docstring).
            noise: where uniform noise comes from: ``None`` draws ``torch.rand`` (the global,
                seedable generator); a sequence gives one tensor per layer; a callable
                ``noise(layer_index, shape)`` returns it (e.g. counter-based noise).
            given_samples: re-score these samples (one (batch, units_l) tensor per layer) instead of
                drawing new ones: every layer's input is the given samples of the layer below and
                the log-probabilities are those of the given samples. Used by the update of an
                on-policy algorithm that stored the rollout's hidden samples. Only for the local
                family (propagating estimators need their noise to rebuild the autograd path).

        Returns:
            A :class:`BSNOutput`.
        """
        self._check_inputs(inputs)
        if given_samples is not None and len(given_samples) != len(self.layers):
            raise ValueError(f"given_samples must hold {len(self.layers)} tensors, got {len(given_samples)}")
        if given_samples is not None and self.propagates:
            raise ValueError("given_samples is only supported by local estimators; pass the noise instead")
        samples, probs, pres, unit_lps = [], [], [], []
        for pre_activation, sample, estimator in self._propagate(inputs, deterministic, noise, given_samples):
            samples.append(sample)
            probs.append(estimator.firing_prob(pre_activation))
            pres.append(pre_activation)
            unit_lps.append(estimator.unit_log_prob(sample.detach(), pre_activation))
        log_prob = torch.stack([lp.sum(dim=-1) for lp in unit_lps], dim=0).sum(dim=0)
        return BSNOutput(samples, probs, pres, unit_lps, log_prob, inputs)

    def sample(
        self, inputs: torch.Tensor, deterministic: bool = False, noise: NoiseFn | Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Every layer's output ``h_l`` only, as :meth:`forward` draws them, without the probabilities
        and log-probabilities: the cheaper acting path (a rollout stores the samples and scores them
        later). Arguments as in :meth:`forward`."""
        self._check_inputs(inputs)
        return [sample for _pre, sample, _estimator in self._propagate(inputs, deterministic, noise, None)]

    def _check_inputs(self, inputs: torch.Tensor) -> None:
        if inputs.dim() != 2 or inputs.shape[-1] != self.in_features:
            raise ValueError(f"expected inputs of shape (batch, {self.in_features}), got {tuple(inputs.shape)}")

    def _propagate(
        self,
        inputs: torch.Tensor,
        deterministic: bool,
        noise: NoiseFn | Sequence[torch.Tensor] | None,
        given_samples: Sequence[torch.Tensor] | None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, Estimator]]:
        """Yield ``(pre_activation, sample, estimator)`` of each layer, bottom to top."""
        layer_input = inputs
        for index, (linear, estimator) in enumerate(zip(self.layers, self.estimators, strict=True)):
            pre_activation = linear(layer_input)
            if given_samples is not None:
                sample = given_samples[index].to(pre_activation.dtype)
            elif deterministic and self.deterministic_units == "mean_field":
                sample = estimator.mean_output(pre_activation)
            elif deterministic:
                sample = estimator.deterministic(pre_activation)
            else:
                sample = estimator.sample(pre_activation, self._uniform(noise, index, pre_activation))
            yield pre_activation, sample, estimator
            # Local family: the sample is already a constant; detach makes the no-flow rule explicit.
            layer_input = sample if self.propagates else sample.detach()

    @staticmethod
    def _uniform(
        noise: NoiseFn | Sequence[torch.Tensor] | None, index: int, pre_activation: torch.Tensor
    ) -> torch.Tensor:
        if noise is None:
            return torch.rand(pre_activation.shape, device=pre_activation.device, dtype=pre_activation.dtype)
        uniform = noise(index, pre_activation.shape) if callable(noise) else noise[index]
        if uniform.shape != pre_activation.shape:
            raise ValueError(
                f"noise for layer {index} has shape {tuple(uniform.shape)}, expected {tuple(pre_activation.shape)}"
            )
        return uniform.to(device=pre_activation.device, dtype=pre_activation.dtype)

    def pack_samples(self, samples: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate binary per-layer samples into one compact ``uint8`` tensor (batch, total_units)."""
        return torch.cat([s.detach() for s in samples], dim=-1).to(torch.uint8)

    def unpack_samples(self, packed: torch.Tensor, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        """Inverse of :meth:`pack_samples`: split (batch, total_units) into per-layer float tensors."""
        return [chunk.to(dtype) for chunk in torch.split(packed, self.hidden_sizes, dim=-1)]

    def surrogate(self, output: BSNOutput, unit_gradients: Sequence[torch.Tensor]) -> torch.Tensor:
        """A scalar whose gradient w.r.t. every layer's parameters applies ``unit_gradients``.

        ``sum_l sum_i a_{l,i} * g_{l,i}`` with ``g`` detached: its derivative w.r.t. ``a_{l,i}`` is
        ``g_{l,i}``, so back-propagating it (to ``W_l`` through the layer's own input only) gives
        ``dW_l = g_l^T x_l``, the paper's local update ``(h - p)(L - c) x``. Summed over the batch;
        *maximise* it (or minimise its negative) to ascend ``E[L]``.
        """
        return sum((a * g.detach()).sum() for a, g in zip(output.pre_activations, unit_gradients, strict=True))
