"""Gradient estimators for binary stochastic neurons (BSNs).

Every estimator here answers one question: a unit with pre-activation ``a`` fires with probability
``p = sigmoid(a)``; how does a learning signal reach ``a``?  See ``docs/method.md`` (Bengio, Léonard &
Courville 2013, arXiv 1305.2982 / 1308.3432) for the mathematics.

Two families:

* **Local** (``propagates = False``): the sample ``h`` is a constant for autograd. The gradient with
  respect to ``a`` is an explicit per-unit estimate computed from ``h``, ``p`` and one broadcast
  scalar (a loss, a return, an advantage). Nothing flows from a layer into the layer below.
  :class:`LocalEstimator` (paper section 1, unbiased) and :class:`LearnedPredictorEstimator`
  (paper section 3, a regressor of the unbiased estimate).
* **Propagating** (``propagates = True``): the sample is built so that autograd back-propagates a
  (biased) surrogate derivative through it. :class:`StraightThroughEstimator` (identity and
  sigmoid-adjusted), :class:`StochasticTimesSmoothEstimator`, :class:`NoisyRectifierEstimator`
  (the latter's derivative is the exact pathwise one when the loss is smooth in ``h``; see its class).

Measured bias and variance of each against exact gradients: ``benchmarks/results/estimators.md``.

All estimators draw their randomness from one tensor of uniform noise ``u ~ U(0, 1)`` of the
pre-activation's shape, so that the caller controls the noise (seeded generators, or the
counter-based noise of :mod:`policies.noise` that lets a policy re-create a rollout's samples).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "LearnedPredictorEstimator",
    "LocalEstimator",
    "NoisyRectifierEstimator",
    "StochasticTimesSmoothEstimator",
    "StraightThroughEstimator",
    "bernoulli_log_prob",
    "local_gradient",
    "make_estimator",
]


def bernoulli_log_prob(samples: torch.Tensor, pre_activation: torch.Tensor) -> torch.Tensor:
    """Element-wise ``log Bernoulli(samples; sigmoid(pre_activation))``.

    Equal to ``h * logsigmoid(a) + (1 - h) * logsigmoid(-a)`` and computed, for binary ``h``, as the
    single ``logsigmoid((2h - 1) a)``: never as the log of a probability, so it is finite for every
    finite pre-activation (``a = ±1e4`` included). Its derivative with respect to ``a`` is exactly
    ``h - sigmoid(a)`` (docs/method.md §1).

    Args:
        samples: binary samples ``h`` in {0, 1} (any float dtype), same shape as ``pre_activation``.
        pre_activation: the unit's pre-activation ``a``, any real value.
    """
    return F.logsigmoid((2.0 * samples - 1.0) * pre_activation)


def local_gradient(
    samples: torch.Tensor,
    firing_prob: torch.Tensor,
    learning_signal: torch.Tensor,
    baseline: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """The local unbiased estimator of ``dE[L]/da`` for a binary stochastic neuron.

    ``g_i = (h_i - p_i) * (L - c_i)``                       (docs/method.md §1)

    ``E[g_i] = dE[L]/da_i`` for any baseline ``c_i`` that does not depend on the unit's own noise.

    Args:
        samples: sampled firings ``h`` in {0, 1}, shape (batch, units).
        firing_prob: firing probabilities ``p = sigmoid(a)``, shape (batch, units).
        learning_signal: the broadcast scalar ``L`` per row (loss, return or advantage), shape
            (batch,) or (batch, 1); or one value per unit, shape (batch, units).
        baseline: ``c``: a float, a (batch, 1) tensor shared by all units, or one value per unit of
            shape (batch, units) or (units,).

    Returns:
        The per-unit estimate, shape (batch, units), detached from autograd.
    """
    signal = learning_signal if learning_signal.dim() == samples.dim() else learning_signal.unsqueeze(-1)
    return ((samples - firing_prob) * (signal - baseline)).detach()


class Estimator(nn.Module):
    """Base class: how a layer of BSNs samples in the forward pass and how gradients reach ``a``.

    Attributes:
        name: the registry name (``make_estimator(name)``).
        propagates: True if samples carry a back-propagated gradient to ``a`` (and hence to the
            layers below); False for the local family, whose samples are constants for autograd.
    """

    name: str = ""
    propagates: bool = False

    def firing_prob(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """Probability that a unit fires (``h > 0``); ``sigmoid(a)`` unless overridden."""
        return torch.sigmoid(pre_activation)

    def unit_log_prob(self, samples: torch.Tensor, pre_activation: torch.Tensor) -> torch.Tensor:
        """Log-probability of each unit's firing event ``1[h > 0]`` given its pre-activation."""
        return bernoulli_log_prob((samples > 0).to(pre_activation.dtype), pre_activation)

    def sample(self, pre_activation: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Draw the layer's output from pre-activations ``a`` and uniform noise ``u`` in [0, 1)."""
        firing_prob = torch.sigmoid(pre_activation)
        return (uniform < firing_prob).to(pre_activation.dtype)

    def deterministic(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """Noise-free output used for evaluation: a unit fires iff ``p > 0.5`` (i.e. ``a > 0``)."""
        return (pre_activation > 0).to(pre_activation.dtype)

    def mean_output(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """The unit's expected output ``E[h | a]``, the mean-field readout: ``sigmoid(a)`` for a binary unit."""
        return torch.sigmoid(pre_activation)

    def bind(self, in_features: int, units: int) -> None:
        """Called once by the network with the size of the layer this estimator serves; a no-op unless
        the estimator has per-layer parameters."""


class LocalEstimator(Estimator):
    """Local unbiased estimator (score function), the package default. docs/method.md §1.

    Forward: ``h = 1[u < p]``, a constant for autograd. Gradient: ``g = (h - p)(L - c)`` from
    :func:`local_gradient`; equivalently the derivative of ``(L - c) * log Bernoulli(h; p)``,
    i.e. REINFORCE on the joint distribution of hidden units and action.
    """

    name = "local"
    propagates = False


class StraightThroughEstimator(Estimator):
    """Straight-through (ST) estimator. docs/method.md §4. Biased.

    Forward samples ``h = 1[u < p]``. Backward treats the sampler as
    ``dh/da = 1`` (``variant="identity"``) or ``dh/da = p(1 - p)`` (``variant="sigmoid"``,
    the sigmoid-adjusted ST), so ``dL/da = dL/dh * dh/da``.

    Args:
        variant: ``"identity"`` or ``"sigmoid"``.
    """

    propagates = True

    def __init__(self, variant: str = "sigmoid") -> None:
        super().__init__()
        if variant not in ("identity", "sigmoid"):
            raise ValueError(f"straight-through variant must be 'identity' or 'sigmoid', got {variant!r}")
        self.variant = variant
        self.name = "st" if variant == "identity" else "st_sigmoid"

    def sample(self, pre_activation: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        firing_prob = torch.sigmoid(pre_activation)
        hard = (uniform < firing_prob).to(pre_activation.dtype)
        smooth = pre_activation if self.variant == "identity" else firing_prob
        # (smooth - smooth.detach()) is exactly 0 in the forward pass, so the sample stays exactly binary
        # (``hard + smooth - smooth.detach()`` would round, e.g. 1 + 0.3 - 0.3 != 1 in float32).
        return hard + (smooth - smooth.detach())


class StochasticTimesSmoothEstimator(Estimator):
    """Stochastic times smooth (STS). docs/method.md §4. Biased.

    ``b ~ Bernoulli(sqrt(p))``, ``h = b * sqrt(p)``; back-propagation treats ``b`` as a constant,
    so ``dh/da = b * d sqrt(p)/da = b * sqrt(p) (1 - p) / 2``. ``E[h] = p``.
    The firing event ``h > 0`` has probability ``sqrt(p)``; deterministic output: ``b = 1[sqrt(p) > 0.5]``.
    """

    name = "sts"
    propagates = True

    def firing_prob(self, pre_activation: torch.Tensor) -> torch.Tensor:
        return torch.exp(0.5 * F.logsigmoid(pre_activation))

    def unit_log_prob(self, samples: torch.Tensor, pre_activation: torch.Tensor) -> torch.Tensor:
        fired = (samples > 0).to(pre_activation.dtype)
        log_sqrt_p = 0.5 * F.logsigmoid(pre_activation)
        # 1 - sqrt(p) = (1 - p) / (1 + sqrt(p)), so log(1 - sqrt(p)) = logsigmoid(-a) - log1p(sqrt(p)):
        # exact and finite for every finite a (no cancellation as p -> 1).
        log_not = F.logsigmoid(-pre_activation) - torch.log1p(torch.exp(log_sqrt_p))
        return fired * log_sqrt_p + (1.0 - fired) * log_not

    def sample(self, pre_activation: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        sqrt_p = self.firing_prob(pre_activation)
        return (uniform < sqrt_p.detach()).to(pre_activation.dtype) * sqrt_p

    def deterministic(self, pre_activation: torch.Tensor) -> torch.Tensor:
        sqrt_p = self.firing_prob(pre_activation)
        return (sqrt_p > 0.5).to(pre_activation.dtype) * sqrt_p

    def mean_output(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """``E[h] = sqrt(p) * P(b = 1) = p``."""
        return torch.sigmoid(pre_activation)


class NoisyRectifierEstimator(Estimator):
    """Noisy rectifier. docs/method.md §4.

    ``h = max(0, a + sigma * z)`` with ``z ~ N(0, 1)`` (drawn from ``u`` by the inverse normal CDF);
    back-propagates ``1[a + sigma z > 0]``. Outputs exact zeros (sparsity) but is not binary.
    The firing event ``h > 0`` has probability ``Phi(a / sigma)``.

    Bias: this is the pathwise (reparameterisation) derivative of ``E[L(h)]``, so it is *unbiased*
    when ``L`` is smooth (Lipschitz) in ``h``; it is biased when ``L`` depends on ``h`` through a jump,
    e.g. on the firing event ``1[h > 0]``, whose effect back-propagation cannot see.

    Args:
        noise_std: ``sigma > 0``, the standard deviation of the injected Gaussian noise
            (default 1.0, the unit-variance noise of the paper's experiments).
    """

    name = "noisy_rectifier"
    propagates = True

    def __init__(self, noise_std: float = 1.0) -> None:
        super().__init__()
        if not noise_std > 0:
            raise ValueError(f"noise_std must be > 0, got {noise_std}")
        self.noise_std = float(noise_std)

    def firing_prob(self, pre_activation: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.erfc(-pre_activation / (self.noise_std * math.sqrt(2.0)))

    def unit_log_prob(self, samples: torch.Tensor, pre_activation: torch.Tensor) -> torch.Tensor:
        fired = (samples > 0).to(pre_activation.dtype)
        scaled = pre_activation / self.noise_std
        # log Phi(x) and log(1 - Phi(x)) = log Phi(-x), via torch.special.log_ndtr (finite everywhere).
        return fired * torch.special.log_ndtr(scaled) + (1.0 - fired) * torch.special.log_ndtr(-scaled)

    def sample(self, pre_activation: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        # Inverse-CDF transform of the shared uniform noise; the clamp keeps erfinv finite.
        clamped = uniform.clamp(1e-7, 1.0 - 1e-7)
        gaussian = math.sqrt(2.0) * torch.erfinv(2.0 * clamped - 1.0)
        return F.relu(pre_activation + self.noise_std * gaussian)

    def deterministic(self, pre_activation: torch.Tensor) -> torch.Tensor:
        return F.relu(pre_activation)

    def mean_output(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """``E[max(0, a + sigma z)] = a Phi(a / sigma) + sigma phi(a / sigma)``."""
        scaled = pre_activation / self.noise_std
        density = torch.exp(-0.5 * scaled.square()) / math.sqrt(2.0 * math.pi)
        return pre_activation * torch.special.ndtr(scaled) + self.noise_std * density


class LearnedPredictorEstimator(Estimator):
    """Learned predictor of the unbiased estimator. docs/method.md §3 (1305.2982).

    A small regressor ``F`` (one per layer, shared by the layer's units) maps per-unit features
    to a prediction ``g_hat_i = F(features_i)`` of the local estimate ``g_i = (h_i - p_i)(L - c_i)``.
    It is trained by squared error ``(g_hat_i - g_i)^2`` (see :meth:`predictor_loss`); its minimiser
    is ``E[g_i | features_i]``, lower-variance and, with limited capacity, biased. The weights are
    then updated with ``g_hat`` in place of ``g``.

    Features of unit i (all local): ``a_i``, ``p_i``, ``h_i``, ``h_i - p_i``; with
    ``use_straight_through=True`` also the back-propagated straight-through signal ``dL/dh_i``
    (a biased, non-local feature; the caller supplies it).

    With ``use_inputs=True`` the prediction also uses the layer's input ``x`` (docs/method.md §3 lists
    "layer inputs" among the local features), through a per-unit linear term shaped like the estimate:

        g_hat_i = F(a_i, p_i, h_i, h_i - p_i) + (h_i - p_i) * q_i(x, h_i),
        q_i(x, h) = h * (U1 x + b1)_i + (1 - h) * (U0 x + b0)_i

    Since ``E[g_i | x, h_i] = (h_i - p_i) E[A - c_i | x, h_i]``, ``q_i(x, h)`` is a per-unit regression of
    the learning signal on what the unit sees and what it did; the shared ``F`` alone cannot tell units
    apart, so its minimiser is nearly the same for every unit. Taking the expectation over ``h_i``, the
    update becomes ``p_i (1 - p_i) (q_i(x, 1) - q_i(x, 0))``: a learned, low-variance, biased estimate of
    how much firing helps. ``U0, U1, b0, b1`` start at zero, like ``F``'s output layer.

    Forward sampling is that of the local estimator.

    Args:
        hidden_size: width of the predictor's hidden layer (> 0).
        use_straight_through: also feed ``dL/dh_i``.
        use_inputs: add the input-conditioned per-unit term (the network sizes it through :meth:`bind`).
    """

    name = "learned_predictor"
    propagates = False

    def __init__(self, hidden_size: int = 16, use_straight_through: bool = False, use_inputs: bool = False) -> None:
        super().__init__()
        if hidden_size <= 0:
            raise ValueError(f"hidden_size must be > 0, got {hidden_size}")
        self.use_straight_through = use_straight_through
        self.use_inputs = use_inputs
        n_features = 5 if use_straight_through else 4
        self.regressor = nn.Sequential(nn.Linear(n_features, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1))
        #: ``[U0 x + b0, U1 x + b1]`` of every unit, (in_features -> 2 * units); built by :meth:`bind`.
        self.input_head: nn.Linear | None = None
        self.reset_output()

    def bind(self, in_features: int, units: int) -> None:
        """Size the input-conditioned term for a layer of ``units`` units reading ``in_features`` inputs."""
        if not self.use_inputs:
            return
        if self.input_head is not None:
            if (self.input_head.in_features, self.input_head.out_features) != (in_features, 2 * units):
                raise ValueError("this learned predictor is already bound to a layer of another size")
            return
        self.input_head = nn.Linear(in_features, 2 * units)
        self.reset_output()

    def reset_output(self) -> None:
        """Zero the output layers: an untrained predictor predicts ``g_hat = 0`` and makes no update."""
        for layer in (self.regressor[-1], self.input_head):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def features(
        self,
        samples: torch.Tensor,
        firing_prob: torch.Tensor,
        pre_activation: torch.Tensor,
        straight_through: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Stack the per-unit features, shape (batch, units, n_features), all detached."""
        feats = [pre_activation, firing_prob, samples, samples - firing_prob]
        if self.use_straight_through:
            if straight_through is None:
                raise ValueError("use_straight_through=True needs the straight-through signal dL/dh")
            feats.append(straight_through)
        return torch.stack([f.detach() for f in feats], dim=-1)

    def predict(
        self,
        samples: torch.Tensor,
        firing_prob: torch.Tensor,
        pre_activation: torch.Tensor,
        straight_through: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``g_hat``: the predicted gradient w.r.t. each pre-activation, shape (batch, units).

        ``inputs``: the layer's input ``x``, (batch, in_features); required with ``use_inputs``.
        """
        feats = self.features(samples, firing_prob, pre_activation, straight_through)
        prediction = self.regressor(feats).squeeze(-1)
        if not self.use_inputs:
            return prediction
        if inputs is None or self.input_head is None:
            raise ValueError("use_inputs=True needs the layer's inputs and a predictor bound to its layer (bind)")
        fired = samples.detach()
        off, on = self.input_head(inputs.detach()).chunk(2, dim=-1)
        signal = fired * on + (1 - fired) * off
        return prediction + (fired - firing_prob.detach()) * signal

    def predictor_loss(self, prediction: torch.Tensor, local_estimate: torch.Tensor) -> torch.Tensor:
        """Mean squared error between ``g_hat`` and the (detached) unbiased local estimate ``g``."""
        return (prediction - local_estimate.detach()).pow(2).mean()


ESTIMATORS: dict[str, type[Estimator]] = {
    "local": LocalEstimator,
    "learned_predictor": LearnedPredictorEstimator,
    "st": StraightThroughEstimator,
    "st_sigmoid": StraightThroughEstimator,
    "sts": StochasticTimesSmoothEstimator,
    "noisy_rectifier": NoisyRectifierEstimator,
}


def make_estimator(name: str | Estimator, **kwargs: object) -> Estimator:
    """Build an estimator from its registry name (or return an :class:`Estimator` unchanged).

    Names: ``local`` (default), ``learned_predictor``, ``st`` (identity straight-through),
    ``st_sigmoid`` (sigmoid-adjusted straight-through), ``sts``, ``noisy_rectifier``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if isinstance(name, Estimator):
        return name
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of: {', '.join(ESTIMATORS)}")
    if name == "st":
        return StraightThroughEstimator(variant="identity", **kwargs)  # type: ignore[arg-type]
    if name == "st_sigmoid":
        return StraightThroughEstimator(variant="sigmoid", **kwargs)  # type: ignore[arg-type]
    return ESTIMATORS[name](**kwargs)  # type: ignore[arg-type]
