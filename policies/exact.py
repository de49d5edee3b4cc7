"""Exact gradients of tiny binary stochastic networks, by enumerating every hidden configuration.

Shared by ``tests/test_estimators*.py``, ``tests/test_baselines.py`` and ``benchmarks/estimators.py``.

For a network whose units are binary events (local, learned-predictor, straight-through: the event
``h = 1`` has probability ``p = sigmoid(a)``; STS: the event ``b = 1`` has probability ``sqrt(p)``
and the unit outputs ``b * sqrt(p)``), the expected loss on an input ``x`` is a finite sum

    E[L | x] = sum over configurations e of  prod_{l,i} P(e_{l,i} | a_{l,i}(e_{<l}))  *  L(value(e_top))

which autograd differentiates exactly. Everything here is written directly from the layers'
``weight`` and ``bias`` tensors, independently of :meth:`BinaryStochasticNetwork.forward`, so that
it can check that code.

The same enumeration gives the *exact expectation of an estimator*: re-run the network with the
uniform noise chosen so that each configuration is drawn (``u = 0`` fires, ``u = 1`` does not), compute
the estimator's per-row gradient and weight each row by its probability. No Monte Carlo error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from policies.baselines import Baseline
from policies.bsn import BinaryStochasticNetwork, BSNOutput, bit_affine
from policies.estimators import LearnedPredictorEstimator, StochasticTimesSmoothEstimator, local_gradient

__all__ = [
    "Enumeration",
    "Readout",
    "UnitGradientFn",
    "configurations",
    "enumerate_network",
    "estimator_objective",
    "exact_estimator_mean",
    "exact_gradient",
    "exact_unit_estimates",
    "exact_unit_moments",
    "fit_baseline",
    "fit_predictors",
    "flat_gradient",
    "layer_parameters",
    "local_unit_gradients",
    "make_tiny_network",
    "monte_carlo_gradients",
    "parameter_names",
    "per_row_gradients",
    "predictor_unit_gradients",
    "rectifier_expected_loss",
    "straight_through_signals",
    "z_scores",
]

#: ``fn(output, learning_signal, baselines) -> per-layer (batch, units_l) estimates of dE[L]/da``.
UnitGradientFn = Callable[[BSNOutput, torch.Tensor, Sequence[torch.Tensor]], list[torch.Tensor]]


def configurations(units: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Every binary vector of length ``units`` (1..20), shape (2**units, units); row k is k's bits."""
    if not 1 <= units <= 20:
        raise ValueError(f"units must be in 1..20 to enumerate 2**units configurations, got {units}")
    codes = torch.arange(2**units).unsqueeze(1)
    return ((codes >> torch.arange(units)) & 1).to(dtype)


class Readout(nn.Module):
    """A fixed, smooth, nonlinear loss of the top layer: ``L(h) = offset + u . tanh(V h + c)``.

    Smooth so that propagating estimators can back-propagate it; nonlinear so that straight-through
    is provably biased on it; ``offset`` sets how much a baseline can remove.

    Args:
        in_units: number of top-layer units it reads (> 0).
        hidden: number of tanh features (> 0).
        offset: constant added to the loss.
        seed: seed of its fixed random parameters (``V, c, u`` all standard normal, ``u`` scaled by 2).
        normalise: divide ``V`` by ``sqrt(in_units)`` so the loss's spread does not grow with the width
            (used when comparing networks of different widths).
    """

    def __init__(
        self, in_units: int, hidden: int = 4, offset: float = 3.0, seed: int = 0, normalise: bool = False
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(in_units, hidden, generator=generator, dtype=torch.float64)
        self.register_buffer("projection", projection / in_units**0.5 if normalise else projection)
        self.register_buffer("shift", torch.randn(hidden, generator=generator, dtype=torch.float64))
        self.register_buffer("weights", 2.0 * torch.randn(hidden, generator=generator, dtype=torch.float64))
        self.offset = float(offset)

    def forward(self, top: torch.Tensor) -> torch.Tensor:
        """Loss per row of ``top`` (batch, in_units) -> (batch,)."""
        features = torch.tanh(top.to(self.projection) @ self.projection + self.shift)
        return self.offset + features @ self.weights


class Enumeration(NamedTuple):
    """All (input, configuration) rows of a network.

    Attributes:
        input_index: which input each row belongs to, shape (rows,).
        inputs: each row's network input, shape (rows, in_features).
        events: per layer, each row's binary events (rows, units_l), constants.
        values: per layer, each row's unit outputs (events, or ``events * sqrt(p)`` for STS), with autograd.
        probability: each row's probability given its input, shape (rows,), with autograd.
    """

    input_index: torch.Tensor
    inputs: torch.Tensor
    events: list[torch.Tensor]
    values: list[torch.Tensor]
    probability: torch.Tensor


def enumerate_network(net: BinaryStochasticNetwork, inputs: torch.Tensor) -> Enumeration:
    """Enumerate every joint configuration of every layer for each row of ``inputs`` (batch, in_features).

    Supports binary-event estimators (local, learned predictor, straight-through) and STS; raises for
    the noisy rectifier (continuous outputs cannot be enumerated).
    """
    kinds = {type(e).__name__ for e in net.estimators}
    if "NoisyRectifierEstimator" in kinds:
        raise ValueError("the noisy rectifier has continuous outputs; enumerate binary-event estimators only")
    sts = isinstance(net.estimator, StochasticTimesSmoothEstimator)
    table = configurations(net.total_units, inputs.dtype)
    batch, count = inputs.shape[0], table.shape[0]
    input_index = torch.arange(batch).repeat_interleave(count)
    events = list(torch.split(table.repeat(batch, 1), net.hidden_sizes, dim=-1))
    layer_input = inputs[input_index]
    values, log_probability = [], torch.zeros(batch * count, dtype=inputs.dtype)
    for linear, event in zip(net.layers, events, strict=True):
        pre_activation = linear(layer_input)
        fire = torch.sigmoid(pre_activation)
        fire = fire.sqrt() if sts else fire
        log_probability = log_probability + (event * fire.log() + (1 - event) * (1 - fire).log()).sum(-1)
        value = event * fire if sts else event
        values.append(value)
        layer_input = value
    return Enumeration(input_index, inputs[input_index], events, values, log_probability.exp())


def layer_parameters(net: BinaryStochasticNetwork) -> list[nn.Parameter]:
    """The weights and biases of every layer, in order (estimator / baseline parameters excluded)."""
    return list(net.layers.parameters())


def parameter_names(net: BinaryStochasticNetwork) -> list[str]:
    """One readable name per scalar entry of :func:`layer_parameters`, e.g. ``W1[0,2]`` or ``b2[1]``."""
    names = []
    for index, linear in enumerate(net.layers, start=1):
        rows, cols = linear.weight.shape
        names += [f"W{index}[{r},{c}]" for r in range(rows) for c in range(cols)]
        names += [f"b{index}[{r}]" for r in range(rows)]
    return names


def flat_gradient(scalar: torch.Tensor, net: BinaryStochasticNetwork) -> torch.Tensor:
    """Gradient of ``scalar`` w.r.t. every layer parameter, flattened to one vector (zeros if unused)."""
    params = layer_parameters(net)
    grads = torch.autograd.grad(scalar, params, allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads, strict=True)]
    )


def exact_gradient(net: BinaryStochasticNetwork, inputs: torch.Tensor, loss_fn: Callable) -> torch.Tensor:
    """``d/dtheta mean_x E[L(top) | x]`` by enumeration; flat over :func:`layer_parameters`."""
    rows = enumerate_network(net, inputs)
    expected = (rows.probability * loss_fn(rows.values[-1])).sum() / inputs.shape[0]
    return flat_gradient(expected, net)


def local_unit_gradients(
    output: BSNOutput, signal: torch.Tensor, baselines: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """The paper's local estimate ``(h - p)(L - c)`` of every layer (docs/method.md §1)."""
    return [
        local_gradient(h, p, signal, c) for h, p, c in zip(output.samples, output.firing_probs, baselines, strict=True)
    ]


def estimator_objective(
    net: BinaryStochasticNetwork,
    output: BSNOutput,
    loss: torch.Tensor,
    baselines: Sequence[torch.Tensor],
    row_weights: torch.Tensor,
    unit_gradient_fn: UnitGradientFn = local_unit_gradients,
) -> torch.Tensor:
    """Scalar whose parameter gradient is ``sum_rows w_row * (the estimator's per-row gradient of L)``.

    Local family: :meth:`BinaryStochasticNetwork.surrogate` applied to ``unit_gradient_fn``'s estimates.
    Propagating family: ``sum_rows w_row * L_row`` back-propagated through the samples.

    Args:
        net: the network that produced ``output``.
        output: its forward pass.
        loss: per-row loss ``L`` (batch,), carrying autograd through the samples for propagating nets.
        baselines: per-layer baselines ``c_l`` (ignored by propagating estimators).
        row_weights: per-row weights (batch,), e.g. ``1 / batch`` for a Monte Carlo mean.
        unit_gradient_fn: how the local family turns ``(output, L, c)`` into per-unit estimates.
    """
    if net.propagates:
        return (row_weights * loss).sum()
    estimates = unit_gradient_fn(output, loss.detach(), baselines)
    return net.surrogate(output, [g * row_weights.unsqueeze(-1) for g in estimates])


def exact_estimator_mean(
    net: BinaryStochasticNetwork,
    inputs: torch.Tensor,
    loss_fn: Callable,
    baseline: Baseline | None = None,
    unit_gradient_fn: UnitGradientFn = local_unit_gradients,
) -> torch.Tensor:
    """The exact expectation of an estimator's parameter gradient (mean over ``inputs``), by enumeration.

    Forces each configuration through :meth:`BinaryStochasticNetwork.forward` with uniform noise
    ``0`` (fire) or ``1`` (do not fire), computes the estimator's gradient on every row and weights
    the rows by their exact probability. ``baseline`` (frozen) supplies ``c``; ``None`` means ``c = 0``.
    """
    rows = enumerate_network(net, inputs)
    noise = [1.0 - event for event in rows.events]
    output = net(rows.inputs, noise=noise)
    baselines = baseline(rows.inputs, output) if baseline is not None else [torch.zeros(1, 1)] * len(net.layers)
    weights = rows.probability.detach() / inputs.shape[0]
    return flat_gradient(
        estimator_objective(net, output, loss_fn(output.output), baselines, weights, unit_gradient_fn), net
    )


def per_row_gradients(
    net: BinaryStochasticNetwork,
    inputs: torch.Tensor,
    loss_fn: Callable,
    baseline: Baseline | None = None,
    unit_gradient_fn: UnitGradientFn = local_unit_gradients,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The estimator's parameter gradient on every (input, configuration) row, with its exact weight.

    A row's pre-activations only affect that row, so one backward pass of the summed objective gives
    every row's ``d objective / d a_l``; the row's parameter gradient is then ``dW_l = outer(d/da_l, x_l)``,
    ``db_l = d/da_l`` with ``x_l`` the row's input to layer ``l``. Exact moments of the estimator follow:
    ``mean = weights @ gradients`` and the per-sample covariance around it.

    Returns:
        ``(weights, gradients)``: weights (rows,) sum to 1; gradients (rows, parameters), flat in the
        order of :func:`layer_parameters`.
    """
    rows = enumerate_network(net, inputs)
    output = net(rows.inputs, noise=[1.0 - event for event in rows.events])
    zeros = [torch.zeros(1, 1, dtype=inputs.dtype)] * len(net.layers)
    baselines = baseline(rows.inputs, output) if baseline is not None else zeros
    ones = torch.ones(rows.inputs.shape[0], dtype=inputs.dtype)
    objective = estimator_objective(net, output, loss_fn(output.output), baselines, ones, unit_gradient_fn)
    unit_grads = torch.autograd.grad(objective, output.pre_activations, allow_unused=True)
    layer_inputs = [x.detach() for x in output.layer_inputs]
    columns = []
    for grad, pre, x in zip(unit_grads, output.pre_activations, layer_inputs, strict=True):
        grad = torch.zeros_like(pre) if grad is None else grad
        columns += [(grad.unsqueeze(-1) * x.unsqueeze(-2)).flatten(1), grad]
    return rows.probability.detach() / inputs.shape[0], torch.cat(columns, dim=-1).detach()


def exact_unit_estimates(
    net: BinaryStochasticNetwork,
    inputs: torch.Tensor,
    loss_fn: Callable,
    unit_gradient_fn: UnitGradientFn = local_unit_gradients,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (input, configuration) row's per-unit estimate and its weight, for exact moments.

    Returns:
        ``(weights, estimates)``: weights (rows,) sum to 1 (probability / number of inputs);
        estimates (rows, total_units) are ``unit_gradient_fn``'s values with ``c = 0``.
    """
    rows = enumerate_network(net, inputs)
    with torch.no_grad():
        output = net(rows.inputs, noise=[1.0 - event for event in rows.events])
        zeros = [torch.zeros(1, 1, dtype=inputs.dtype)] * len(net.layers)
        estimates = torch.cat(unit_gradient_fn(output, loss_fn(output.output), zeros), dim=-1)
    return rows.probability.detach() / inputs.shape[0], estimates


def exact_unit_moments(
    net: BinaryStochasticNetwork, inputs: torch.Tensor, loss_fn: Callable, baseline_values: torch.Tensor | float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ONE input, exact per-unit moments of the local estimate ``g_i = (h_i - p_i)(L - c_i)``.

    Args:
        net: a binary-event network.
        inputs: a single input, shape (1, in_features).
        loss_fn: the loss of the top layer.
        baseline_values: ``c``, a float or one value per unit (total_units,).

    Returns:
        ``(mean, variance, optimal_baseline)``, each of shape (total_units,): ``E[g_i]``, ``Var[g_i]``,
        and ``c_i* = E[(h_i - p_i)^2 L] / E[(h_i - p_i)^2]`` (docs/method.md §2).
    """
    if inputs.shape[0] != 1:
        raise ValueError(f"exact_unit_moments takes one input row, got {inputs.shape[0]}")
    with torch.no_grad():
        rows = enumerate_network(net, inputs)
        fire = [
            torch.sigmoid(linear(x)) for linear, x in zip(net.layers, [rows.inputs, *rows.values[:-1]], strict=True)
        ]
        centred = torch.cat([e - p for e, p in zip(rows.events, fire, strict=True)], dim=-1)
        loss = loss_fn(rows.values[-1]).unsqueeze(-1)
        weight = rows.probability.unsqueeze(-1)
        estimate = centred * (loss - baseline_values)
        mean = (weight * estimate).sum(0)
        variance = (weight * estimate.pow(2)).sum(0) - mean.pow(2)
        optimal = (weight * centred.pow(2) * loss).sum(0) / (weight * centred.pow(2)).sum(0)
    return mean, variance, optimal


def monte_carlo_gradients(
    net: BinaryStochasticNetwork,
    inputs: torch.Tensor,
    loss_fn: Callable,
    n_batches: int,
    batch_size: int,
    baseline: Baseline | None = None,
    unit_gradient_fn: UnitGradientFn = local_unit_gradients,
) -> torch.Tensor:
    """Per-batch Monte Carlo means of an estimator's parameter gradient, shape (n_batches, parameters).

    Each batch holds ``batch_size`` rows cycling through ``inputs`` (``batch_size`` must be a multiple
    of the number of inputs), drawn with the global torch generator. The rows of the result are
    independent and unbiased iff the estimator is, so their mean and standard error test it.
    ``baseline`` (frozen) supplies ``c``; ``None`` means ``c = 0``.
    """
    if batch_size % inputs.shape[0]:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {inputs.shape[0]} inputs")
    rows = inputs.repeat(batch_size // inputs.shape[0], 1)
    weights = torch.full((batch_size,), 1.0 / batch_size, dtype=inputs.dtype)
    zeros = [torch.zeros(1, 1, dtype=inputs.dtype)] * len(net.layers)
    results = []
    for _ in range(n_batches):
        output = net(rows)
        baselines = baseline(rows, output) if baseline is not None else zeros
        objective = estimator_objective(net, output, loss_fn(output.output), baselines, weights, unit_gradient_fn)
        results.append(flat_gradient(objective, net))
    return torch.stack(results)


def straight_through_signals(net: BinaryStochasticNetwork, output: BSNOutput, loss_fn: Callable) -> list[torch.Tensor]:
    """Per layer, the sigmoid-adjusted straight-through signal ``dL/dh_l`` (docs/method.md §4), detached.

    Computed by hand from the sampled outputs so it also works for local networks, whose samples are
    autograd constants: ``dL/dh_top`` by autograd through ``loss_fn``, then
    ``dL/dh_l = (dL/dh_{l+1} * p_{l+1}(1 - p_{l+1})) W_{l+1}``.
    """
    with torch.enable_grad():
        top = output.output.detach().requires_grad_(True)
        (signal,) = torch.autograd.grad(loss_fn(top).sum(), top)
    signals = [signal]
    for index in range(len(net.layers) - 1, 0, -1):
        prob = output.firing_probs[index].detach()
        signal = (signal * prob * (1 - prob)) @ bit_affine(net.layers[index])[0].detach()
        signals.insert(0, signal)
    return signals


def predictor_unit_gradients(net: BinaryStochasticNetwork, loss_fn: Callable | None = None) -> UnitGradientFn:
    """A :data:`UnitGradientFn` that replaces ``(h - p)(L - c)`` by each layer's learned prediction ``g_hat``.

    Args:
        net: a network built with ``estimator="learned_predictor"``.
        loss_fn: the loss, needed only when the predictors use the straight-through feature.
    """

    def unit_gradients(
        output: BSNOutput, signal: torch.Tensor, baselines: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        extra = straight_through_signals(net, output, loss_fn) if loss_fn is not None else [None] * len(net.layers)
        predictors: list[LearnedPredictorEstimator] = list(net.estimators)  # type: ignore[arg-type]
        return [
            predictor.predict(h.detach(), p.detach(), a.detach(), st, inputs=x.detach()).detach()
            for predictor, h, p, a, st, x in zip(
                predictors,
                output.samples,
                output.firing_probs,
                output.pre_activations,
                extra,
                output.layer_inputs,
                strict=True,
            )
        ]

    return unit_gradients


def fit_predictors(
    net: BinaryStochasticNetwork,
    inputs: torch.Tensor,
    loss_fn: Callable,
    steps: int = 300,
    batch_size: int = 2048,
    learning_rate: float = 0.02,
    baseline: Baseline | None = None,
) -> list[float]:
    """Train every layer's :class:`LearnedPredictorEstimator` by squared error on the local estimate.

    The regression target is ``g = (h - p)(L - c)``, with ``c`` from the frozen ``baseline`` (``None``:
    ``c = 0``); a good baseline removes most of the target's noise. Rows cycle through ``inputs``;
    Adam's learning rate decays linearly to 1% of ``learning_rate``; the network's own weights are not
    changed. Returns the summed predictor loss of every step (for checking that training lowers it).
    """
    predictors: list[LearnedPredictorEstimator] = list(net.estimators)  # type: ignore[arg-type]
    uses_st = predictors[0].use_straight_through
    optimizer = torch.optim.Adam([p for e in predictors for p in e.parameters()], lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.01, steps)
    rows = inputs.repeat(-(-batch_size // inputs.shape[0]), 1)[:batch_size]
    history = []
    for _ in range(steps):
        with torch.no_grad():
            output = net(rows)
            loss = loss_fn(output.output)
            baselines = baseline(rows, output) if baseline is not None else [0.0] * len(net.layers)
        extra = straight_through_signals(net, output, loss_fn) if uses_st else [None] * len(net.layers)
        layers = zip(
            output.samples,
            output.firing_probs,
            output.pre_activations,
            extra,
            baselines,
            output.layer_inputs,
            strict=True,
        )
        total = sum(
            predictor.predictor_loss(predictor.predict(h, p, a, st, inputs=x), local_gradient(h, p, loss, c))
            for predictor, (h, p, a, st, c, x) in zip(predictors, layers, strict=True)
        )
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        schedule.step()
        history.append(float(total.detach()))
    return history


def fit_baseline(
    baseline: Baseline,
    net: BinaryStochasticNetwork,
    inputs: torch.Tensor,
    loss_fn: Callable,
    steps: int = 200,
    batch_size: int = 2048,
    learning_rate: float = 0.05,
) -> Baseline:
    """Warm a baseline up on fresh batches (running statistics and/or its loss), then freeze it.

    Rows cycle through ``inputs``. Follows the baselines' protocol: ``observe`` after the batch;
    learned baselines take one Adam step on :meth:`Baseline.loss` per batch, with the learning rate
    decaying linearly from ``learning_rate`` to 1% of it (so the regressor settles at the minimiser
    instead of jittering around it). Returns ``baseline``.
    """
    optimizer = torch.optim.Adam(baseline.parameters(), lr=learning_rate) if baseline.learned else None
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.01, steps) if optimizer is not None else None
    rows = inputs.repeat(-(-batch_size // inputs.shape[0]), 1)[:batch_size]
    for _ in range(steps):
        with torch.no_grad():
            output = net(rows)
            loss = loss_fn(output.output)
        baseline.observe(output, loss)
        if optimizer is not None:
            optimizer.zero_grad()
            baseline.loss(rows, output, loss).backward()
            optimizer.step()
            schedule.step()
    return baseline.requires_grad_(False)


def z_scores(batch_means: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How many standard errors the Monte Carlo mean lies from ``reference``, per parameter.

    Args:
        batch_means: (n_batches, parameters) independent per-batch estimates (n_batches >= 2).
        reference: (parameters,) the value the estimator should average to.

    Returns:
        ``(z, standard_error)``: ``(mean - reference) / se`` and ``se = std / sqrt(n_batches)``, each
        (parameters,).
    """
    standard_error = batch_means.std(0) / batch_means.shape[0] ** 0.5
    return (batch_means.mean(0) - reference) / standard_error, standard_error


def make_tiny_network(
    in_features: int,
    hidden_sizes: Sequence[int],
    estimator: str = "local",
    seed: int = 0,
    weight_scale: float = 1.0,
    **estimator_kwargs: object,
) -> BinaryStochasticNetwork:
    """A float64 network with standard-normal weights times ``weight_scale`` and ``N(0, 0.25)`` biases.

    Large enough weights that firing probabilities spread over (0, 1) (PyTorch's default init keeps
    tiny nets near ``p = 1/2``, where several biased estimators happen to be nearly exact).

    Args:
        in_features: input size (> 0).
        hidden_sizes: units per layer.
        estimator: registry name of the estimator.
        seed: seed of the weights (the estimator's own parameters use the global generator).
        weight_scale: standard deviation of the weights (> 0).
        estimator_kwargs: forwarded to the estimator's constructor.
    """
    net = BinaryStochasticNetwork(in_features, hidden_sizes, estimator, estimator_kwargs or None).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for linear in net.layers:
            linear.weight.copy_(weight_scale * torch.randn(linear.weight.shape, generator=generator))
            linear.bias.copy_(0.5 * torch.randn(linear.bias.shape, generator=generator))
    return net


def rectifier_expected_loss(pre_activation: torch.Tensor, loss: Callable, noise_std: float = 1.0) -> torch.Tensor:
    """``E[L(relu(a + sigma z))]`` by quadrature: ``Phi(-a/sigma) L(0) + int_0^inf L(y) phi((y-a)/sigma)/sigma dy``.

    ``a`` enters only through the Gaussian density, so autograd of this integral is the exact gradient of
    one noisy-rectifier unit's expected loss (trapezoid rule, 400k points up to ``a + 14 sigma``).

    Args:
        pre_activation: the unit's ``a``, a 0-d float64 tensor (may require grad).
        loss: ``L`` of a (batch, 1) tensor of outputs -> (batch,).
        noise_std: ``sigma > 0``.
    """
    y = torch.linspace(0.0, float(pre_activation.detach()) + 14 * noise_std, 400_001, dtype=torch.float64)
    density = torch.exp(-0.5 * ((y - pre_activation) / noise_std) ** 2) / (noise_std * math.sqrt(2 * math.pi))
    zero_mass = 0.5 * torch.erfc(pre_activation / (noise_std * math.sqrt(2.0)))
    return zero_mass * loss(torch.zeros(1, 1, dtype=torch.float64))[0] + torch.trapezoid(
        loss(y.unsqueeze(-1)) * density, y
    )
