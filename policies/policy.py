"""SB3-compatible actor-critic policy whose actor is a network of binary stochastic neurons.

``BinaryStochasticPolicy`` is a drop-in :class:`stable_baselines3.common.policies.ActorCriticPolicy`:

* observations go through SB3 features extractors (``FlattenExtractor`` for Box / Discrete /
  MultiDiscrete / MultiBinary, ``NatureCNN`` for images of at least 36 x 36 pixels, ``CombinedExtractor``
  for Dict; :func:`default_features_extractor`);
* the actor is a :class:`~policies.bsn.BinaryStochasticNetwork` (``net_arch`` sizes), whose top
  layer's binary samples feed SB3's action head (Categorical, MultiCategorical, Bernoulli, Gaussian);
* the critic is SB3's usual tanh MLP and ``value_net``: the learned state-value baseline.

Two ways to learn the hidden units:

1. :class:`agents.LocalPG` stores each step's hidden samples and calls :meth:`act` /
   :meth:`evaluate_hidden`, which re-score the stored samples.
2. Stock SB3 ``PPO`` / ``A2C`` call ``forward`` and ``evaluate_actions``. To let them score the
   *same* hidden samples that chose the actions, those two methods draw the hidden units from
   counter-based noise (:mod:`policies.noise`), a hash of the preprocessed observation and a
   per-rollout key. Each time the policy goes from training mode back to evaluation mode (the start
   of every ``collect_rollouts``) the key advances and the policy freezes a copy of its actor (the
   features extractor and the BSN layers: the *behaviour* parameters that draw this rollout's
   samples). ``evaluate_actions`` re-draws each row's hidden samples with that frozen copy and the
   same noise, then scores them under the current parameters, so every minibatch of every epoch
   scores exactly the samples that acted. For the local family, the returned log-probability is
   that of the joint (hidden units and action), so PPO's ratio and A2C's policy gradient apply the
   local estimator ``(h - p) * advantage`` to every hidden unit with no back-propagation between
   layers; for propagating estimators it is the action's only, the samples are re-drawn from the
   same noise under the current parameters (the reparametrised draw their pathwise derivative
   differentiates), and autograd back-propagates through them. Limit: bit-identical observations
   within one rollout share their hidden samples (see :mod:`policies.noise`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first, preprocess_obs
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from policies.baselines import Baseline, make_baseline
from policies.bsn import (
    BinaryStochasticNetwork,
    BSNOutput,
    SignedInputLinear,
    bit_affine,
    check_deterministic_units,
)
from policies.estimators import ESTIMATORS, LearnedPredictorEstimator
from policies.noise import CounterNoise
from policies.posterior import bernoulli_children_log_ratio, coupled_noise, flip_log_ratio, flip_shifts

__all__ = [
    "FLIP_CHUNK_ELEMENTS",
    "LOG_STD_RANGE",
    "NEURON_BASELINES",
    "SUPPORTED_ACTION_SPACES",
    "SUPPORTED_OBSERVATION_SPACES",
    "BinaryStochasticPolicy",
    "BsnExtractor",
    "HiddenEvaluation",
    "PolicyStep",
    "check_spaces",
    "default_features_extractor",
]

SUPPORTED_ACTION_SPACES: tuple[type[spaces.Space], ...] = (
    spaces.Discrete,
    spaces.MultiDiscrete,
    spaces.MultiBinary,
    spaces.Box,
)
SUPPORTED_OBSERVATION_SPACES: tuple[type[spaces.Space], ...] = (
    spaces.Box,
    spaces.Discrete,
    spaces.MultiDiscrete,
    spaces.MultiBinary,
    spaces.Dict,
)
#: BSN layer sizes of the actor when ``net_arch`` does not give them (for every features extractor).
DEFAULT_PI_SIZES = (64, 64)
#: The smallest image height and width SB3's ``NatureCNN`` accepts (its 8/4, 4/2 and 3/1 convolutions).
NATURE_CNN_MIN_SIDE = 36
#: Default orthogonal-initialisation gain of the BSN layers (see ``bsn_init_gain``).
DEFAULT_INIT_GAIN = 128.0
#: Range of a state-dependent Gaussian log-std (``state_dependent_std``), SAC's clamp in SB3.
LOG_STD_RANGE = (-20.0, 2.0)
#: Most flipped activations (rows x flipped units x units above) that :meth:`BinaryStochasticPolicy.unit_posteriors`
#: and :meth:`BinaryStochasticPolicy.flipped_action_log_probs` hold at once; larger batches go in chunks of rows.
FLIP_CHUNK_ELEMENTS = 1 << 20
#: Per-neuron baselines applied to the advantage, on top of the value critic (see ``baseline``).
NEURON_BASELINES = ("value", "mean", "optimal", "learned")
#: The fix that space errors about observations name.
FLATTEN_FIX = "wrap the env with gymnasium.wrappers.FlattenObservation"


def _space_names(kinds: Sequence[type[spaces.Space]]) -> str:
    return ", ".join(kind.__name__ for kind in kinds)


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Raise ``ValueError`` naming the received space and the supported ones if either is unsupported (for an
    observation space, also the fix: :data:`FLATTEN_FIX`)."""
    if not isinstance(action_space, SUPPORTED_ACTION_SPACES):
        raise ValueError(
            f"unsupported action space {action_space}; BinaryStochasticPolicy supports "
            f"{_space_names(SUPPORTED_ACTION_SPACES)}"
        )
    observed = observation_space.spaces.values() if isinstance(observation_space, spaces.Dict) else [observation_space]
    for space in observed:
        if isinstance(space, spaces.Dict) or not isinstance(space, SUPPORTED_OBSERVATION_SPACES):
            raise ValueError(
                f"unsupported observation space {observation_space}; BinaryStochasticPolicy supports "
                f"{_space_names(SUPPORTED_OBSERVATION_SPACES)} (Dict of the others, not nested); {FLATTEN_FIX}"
            )


def _row_chunks(rows: int, elements_per_row: int) -> list[slice]:
    """Slices of ``rows`` rows in chunks of at most :data:`FLIP_CHUNK_ELEMENTS` elements (at least one row each),
    for work that holds ``elements_per_row`` elements per row at once."""
    chunk = max(1, FLIP_CHUNK_ELEMENTS // elements_per_row)
    return [slice(start, start + chunk) for start in range(0, rows, chunk)]


class PolicyStep(NamedTuple):
    """One rollout step of :meth:`BinaryStochasticPolicy.act`.

    Attributes:
        actions: sampled actions, shaped like SB3's ``forward`` output.
        values: state values ``V(s)``, shape (batch, 1).
        log_prob: log-probability of the actions given the hidden samples, shape (batch,).
        hidden: the hidden samples of every layer packed as ``uint8``, shape (batch, total_units).
    """

    actions: torch.Tensor
    values: torch.Tensor
    log_prob: torch.Tensor
    hidden: torch.Tensor


class HiddenEvaluation(NamedTuple):
    """Re-scoring of stored samples by :meth:`BinaryStochasticPolicy.evaluate_hidden`.

    Attributes:
        values: ``V(s)``, shape (batch, 1).
        action_log_prob: ``log pi(a | h_top)``, shape (batch,).
        entropy: entropy of the action distribution, shape (batch,) (``None`` if intractable).
        bsn: the network's output for the stored samples (per-unit log-probs, firing probs...).
        features: the actor's input features (the per-neuron learned baseline conditions on them).
    """

    values: torch.Tensor
    action_log_prob: torch.Tensor
    entropy: torch.Tensor | None
    bsn: BSNOutput
    features: torch.Tensor


class BsnExtractor(nn.Module):
    """The policy's ``mlp_extractor``: a BSN actor and an MLP critic body.

    Args:
        feature_dim: size of the features from the features extractor.
        pi_sizes: units per BSN layer of the actor (non-empty).
        vf_sizes: hidden sizes of the critic's MLP (may be empty).
        activation_fn: activation of the critic's MLP.
        estimator: estimator name (see :data:`policies.estimators.ESTIMATORS`).
        estimator_kwargs: the estimator's constructor arguments.
        signed_inputs: BSN layers above the first read the units below as ``2h - 1``.
        deterministic_units: the BSN units' output in deterministic mode (:data:`policies.bsn.DETERMINISTIC_UNITS`).
    """

    def __init__(
        self,
        feature_dim: int,
        pi_sizes: Sequence[int],
        vf_sizes: Sequence[int],
        activation_fn: type[nn.Module],
        estimator: str,
        estimator_kwargs: dict[str, Any] | None,
        signed_inputs: bool = False,
        deterministic_units: str = "threshold",
    ) -> None:
        super().__init__()
        self.bsn = BinaryStochasticNetwork(
            feature_dim, pi_sizes, estimator, estimator_kwargs, signed_inputs, deterministic_units
        )
        layers: list[nn.Module] = []
        last = feature_dim
        for size in vf_sizes:
            layers += [nn.Linear(last, int(size)), activation_fn()]
            last = int(size)
        self.value_body = nn.Sequential(*layers)
        self.latent_dim_pi = self.bsn.out_features
        self.latent_dim_vf = last

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SB3 ``MlpExtractor`` protocol (i.i.d. noise); the policy itself calls the parts directly."""
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.bsn.sample(features)[-1]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_body(features)


class BehaviourActor:
    """A frozen copy of the actor path that collected the current rollout (not a registered module).

    Holds copies of the BSN network and, when it has parameters, of the actor's features extractor.
    :meth:`refresh` copies the live values in place (re-allocating only when a module moved to another
    device); the copies never receive gradients and are not part of the policy's ``state_dict``.
    """

    def __init__(self) -> None:
        self.bsn: BinaryStochasticNetwork | None = None
        self.extractor: BaseFeaturesExtractor | None = None

    def refresh(self, bsn: BinaryStochasticNetwork, extractor: BaseFeaturesExtractor) -> None:
        """Copy the current values of ``bsn`` and ``extractor`` (the extractor only if it has parameters)."""
        self.bsn = _frozen_copy(bsn, self.bsn)
        has_parameters = any(True for _ in extractor.parameters())
        self.extractor = _frozen_copy(extractor, self.extractor) if has_parameters else None


def _frozen_copy(module: nn.Module, previous: nn.Module | None) -> nn.Module:
    """``previous`` with ``module``'s current values copied in, or a new gradient-free deep copy when there is
    none or ``module`` has moved to another device or dtype since (``policy.to(...)``)."""
    current = module.state_dict()
    if previous is not None and _placements(previous.state_dict()) == _placements(current):
        previous.load_state_dict(current)
        return previous
    frozen = copy.deepcopy(module)
    frozen.requires_grad_(False)
    return frozen


def _placements(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.device, torch.dtype, torch.Size]]:
    return [(name, tensor.device, tensor.dtype, tensor.shape) for name, tensor in state.items()]


def _image_side(space: spaces.Box) -> int:
    """The smaller of an image space's height and width (channel-first or channel-last)."""
    height, width = space.shape[1:] if is_image_space_channels_first(space) else space.shape[:2]
    return min(height, width)


def default_features_extractor(observation_space: spaces.Space,
                               normalize_images: bool = True) -> type[BaseFeaturesExtractor]:
    """The features extractor the policy uses when ``features_extractor_class`` is not given.

    SB3's choice (``CombinedExtractor`` for Dict, ``NatureCNN`` for images, ``FlattenExtractor``
    otherwise), except that an image smaller than :data:`NATURE_CNN_MIN_SIDE` pixels on a side, which
    ``NatureCNN`` cannot convolve, is flattened (its pixels still scaled to [0, 1] when
    ``normalize_images``).

    Args:
        observation_space: the policy's observation space.
        normalize_images: whether image observations are scaled from [0, 255] (SB3's argument).

    Raises:
        ValueError: for a Dict space holding such a small image, which ``CombinedExtractor`` would give
            to ``NatureCNN``.
    """
    if isinstance(observation_space, spaces.Dict):
        for key, subspace in observation_space.spaces.items():
            if (is_image_space(subspace, normalized_image=not normalize_images)
                    and _image_side(subspace) < NATURE_CNN_MIN_SIDE):
                raise ValueError(
                    f"observation {key!r} is an image of shape {subspace.shape}, smaller than the "
                    f"{NATURE_CNN_MIN_SIDE} x {NATURE_CNN_MIN_SIDE} pixels of CombinedExtractor's NatureCNN; "
                    f"{FLATTEN_FIX}"
                )
        return CombinedExtractor
    if is_image_space(observation_space, normalized_image=not normalize_images):
        return NatureCNN if _image_side(observation_space) >= NATURE_CNN_MIN_SIDE else FlattenExtractor
    return FlattenExtractor


class BinaryStochasticPolicy(ActorCriticPolicy):
    """Actor-critic policy with a binary-stochastic-neuron actor (SB3 ``ActorCriticPolicy`` API).

    All of SB3's ``ActorCriticPolicy`` arguments keep their meaning; ``activation_fn`` applies to
    the critic MLP only (the actor's units are binary stochastic). New arguments:

    Args:
        net_arch: BSN layer sizes of the actor as a list (critic gets SB3's default ``[64, 64]``),
            or ``dict(pi=[...], vf=[...])``. Default ``dict(pi=[64, 64], vf=[64, 64])``.
        estimator: how hidden units learn: ``"local"`` (default, docs/method.md §1),
            ``"learned_predictor"`` (section 3, LocalPG only), or a propagating comparison
            (``"st"``, ``"st_sigmoid"``, ``"sts"``, ``"noisy_rectifier"``, section 4).
        estimator_kwargs: constructor arguments of the estimator (e.g. ``noise_std``).
        baseline: the baseline subtracted from each hidden unit's learning signal. ``"value"``
            (default): the state-value critic ``V(s)`` shared by every unit (the advantage is the
            signal). ``"mean"``, ``"optimal"`` or ``"learned"``: additionally subtract a per-neuron
            baseline from the advantage, respectively a running mean, the running variance-optimal
            ``c_i*`` (docs/method.md §2) or an input-dependent per-neuron regressor ``c_i(x)`` (``x``: the
            observation features, or with ``baseline_kwargs={"condition": "layer_input"}`` each unit's own input).
            Per-neuron baselines are applied by LocalPG; stock PPO/A2C use the value critic.
        baseline_kwargs: constructor arguments of the per-neuron baseline (``decay``; ``net_arch``, ``condition``).
        bsn_init_gain: gain of the orthogonal initialisation of the BSN layers (> 0; default 128). Small
            gains (about 1) start every unit near ``p = 0.5``, the most exploratory point, and the policy
            stays as noisy as its units; large ones (tens to 128) start each unit as a near-deterministic
            threshold unit, noisy only near its hyperplane, so the stochastic policy that is trained is close
            to the deterministic one that is evaluated. The default is a gain with which stock PPO and A2C
            learn CartPole-v1 with RL Zoo's settings and SB3's identity tasks
            (``benchmarks/results/compare_sb3_plugin.md``); ``hyperparams/localpg.yml`` sets it per task.
            One float for every layer, or a list of one gain per BSN layer, bottom first: a layer above the
            first reads 0/1 samples of the layer below, whose scale differs from the observation's.
        signed_inputs: BSN layers above the first read each unit below as a sign, ``a = W (2h - 1) + b``
            (:class:`~policies.bsn.SignedInputLinear`), centring their inputs on 0. The policy computes the same
            family of functions; what changes is how evenly the weights learn. Posterior credit and export
            account for it (:func:`~policies.bsn.bit_affine`). Default ``False`` (inputs ``h`` in {0, 1}).
        signed_head: the action head reads the top layer's units as signs, ``W (2h - 1) + b``
            (:class:`~policies.bsn.SignedInputLinear`) instead of ``W h + b``: the same family of heads, with its
            inputs centred on 0, so that a head weight's update does not also shift the head's output by the mean
            of its unit's firing. Posterior credit and export account for it. Default ``False``.
        state_dependent_std: for Box actions, the Gaussian's log-std is a function of the state: the action
            head maps the top layer's samples ``h`` to ``[mean, log_std] = W h + b`` (``2 x action_dim``
            outputs; ``log_std`` clamped to :data:`LOG_STD_RANGE`; its rows start at weight 0 and bias
            ``log_std_init``), instead of SB3's one learned log-std per action dimension (``False``, the
            default). Posterior credit and the local estimators see both halves, as they see the mean.
            Actions outside the Box bounds are clipped by SB3 when they are sent to the environment (the
            log-probability is that of the unclipped sample); ``squash_output`` is gSDE's and is not offered.
        deterministic_units: what the BSN units output for ``predict(deterministic=True)`` (evaluation, export).
            ``"threshold"`` (default): each unit fires iff ``p > 0.5``. ``"mean_field"``: each unit outputs its
            firing probability ``p`` (its expected output), so with one BSN layer the head gives the sampled
            policy's expected head output: the mean of a Gaussian policy's action, averaged over the units' draws,
            as SB3's deterministic mode gives an MLP policy's mean action; with more layers, its mean-field
            approximation (:class:`~policies.bsn.BinaryStochasticNetwork`). Training is the same either way. The
            :attr:`deterministic_units` attribute may be changed on a trained policy to evaluate it the other way;
            ``save`` stores the ``policy_kwargs`` the model was built with, not such a change.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] | None = None,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        estimator: str = "local",
        estimator_kwargs: dict[str, Any] | None = None,
        baseline: str = "value",
        baseline_kwargs: dict[str, Any] | None = None,
        bsn_init_gain: float | Sequence[float] = DEFAULT_INIT_GAIN,
        signed_inputs: bool = False,
        signed_head: bool = False,
        state_dependent_std: bool = False,
        deterministic_units: str = "threshold",
    ) -> None:
        check_spaces(observation_space, action_space)
        check_deterministic_units(deterministic_units)
        if state_dependent_std and not isinstance(action_space, spaces.Box):
            raise ValueError(
                f"state_dependent_std applies to Box action spaces only, got {action_space}; drop state_dependent_std"
            )
        if use_sde:
            raise ValueError(
                "use_sde=True is not supported by BinaryStochasticPolicy (its hidden units already explore): "
                "set use_sde=False, or use SB3's MlpPolicy for gSDE"
            )
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
        if baseline not in NEURON_BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; choose one of: {', '.join(NEURON_BASELINES)}")
        gains = [bsn_init_gain] if isinstance(bsn_init_gain, (int, float)) else list(bsn_init_gain)
        if not gains or any(not isinstance(gain, (int, float)) or not gain > 0 for gain in gains):
            raise ValueError(f"bsn_init_gain must be > 0 (a float or one per BSN layer), got {bsn_init_gain}")
        if features_extractor_class is None:
            features_extractor_class = default_features_extractor(observation_space, normalize_images)
        self.estimator_name = estimator
        self.estimator_kwargs = dict(estimator_kwargs or {})
        self.baseline_name = baseline
        self.baseline_kwargs = dict(baseline_kwargs or {})
        self.signed_inputs = bool(signed_inputs)
        self.signed_head = bool(signed_head)
        self.state_dependent_std = bool(state_dependent_std)
        self._deterministic_units = str(deterministic_units)
        self.bsn_init_gain = float(gains[0]) if isinstance(bsn_init_gain, (int, float)) else [float(g) for g in gains]
        if net_arch is None:  # SB3 would turn None into [] (no layer) when it picks NatureCNN
            net_arch = dict(pi=list(DEFAULT_PI_SIZES), vf=[64, 64])
        # Per-rollout key of the counter-based noise; advanced on every train -> eval transition.
        self.noise_key = int(torch.randint(0, 2**31 - 1, ()).item())
        # The actor's parameters at the start of the current rollout (refreshed with the key).
        self.behaviour = BehaviourActor()
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            use_sde=False,
            log_std_init=log_std_init,
            full_std=full_std,
            use_expln=use_expln,
            squash_output=squash_output,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=share_features_extractor,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    # ------------------------------------------------------------------ construction
    def _layer_sizes(self) -> tuple[list[int], list[int]]:
        arch = self.net_arch
        if isinstance(arch, dict):
            unknown = set(arch) - {"pi", "vf"}
            if unknown:
                raise ValueError(f"net_arch dict takes keys 'pi' and 'vf', got {sorted(unknown)}")
            pi, vf = list(arch.get("pi", DEFAULT_PI_SIZES)), list(arch.get("vf", [64, 64]))
        else:
            pi, vf = list(arch), [64, 64]
        if not pi:
            raise ValueError("net_arch must give at least one BSN layer for the actor (e.g. net_arch=[64])")
        for size in [*pi, *vf]:
            if not isinstance(size, (int, np.integer)) or size <= 0:
                raise ValueError(f"net_arch sizes must be positive integers, got {self.net_arch}")
        return pi, vf

    def _build_mlp_extractor(self) -> None:
        pi_sizes, vf_sizes = self._layer_sizes()
        self.mlp_extractor = BsnExtractor(
            self.features_dim,
            pi_sizes,
            vf_sizes,
            self.activation_fn,
            self.estimator_name,
            self.estimator_kwargs,
            self.signed_inputs,
            self._deterministic_units,
        )
        self.neuron_baseline: Baseline | None = None
        if self.baseline_name != "value":
            self.neuron_baseline = make_baseline(
                self.baseline_name, self.features_dim, pi_sizes, **self.baseline_kwargs
            )

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        if self.ortho_init:
            for layer, gain in zip(self.bsn.layers, self.layer_init_gains(), strict=True):
                nn.init.orthogonal_(layer.weight, gain=gain)
                nn.init.zeros_(layer.bias)
            # SB3's orthogonal init also reached the learned predictors; restore their zero output.
            for estimator in self.bsn.estimators:
                if isinstance(estimator, LearnedPredictorEstimator):
                    estimator.reset_output()
        if self.signed_head or self.state_dependent_std:
            self._rebuild_action_head(lr_schedule)

    def _rebuild_action_head(self, lr_schedule: Schedule) -> None:
        """Replace SB3's ``action_net`` by the head that ``signed_head`` and ``state_dependent_std`` ask for, then
        rebuild the optimizer over the new parameters.

        ``signed_head``: a :class:`~policies.bsn.SignedInputLinear` with SB3's initial weights. ``state_dependent_std``
        (Box): one map to ``[mean, log_std]`` in place of SB3's mean head and free ``log_std``: the mean rows as SB3
        initialised them, the log-std rows at weight 0 and bias ``log_std_init``.
        """
        sb3_head = self.action_net
        rows = sb3_head.out_features
        head_class = SignedInputLinear if self.signed_head else nn.Linear
        head = head_class(sb3_head.in_features, 2 * rows if self.state_dependent_std else rows)
        with torch.no_grad():
            head.weight[:rows].copy_(sb3_head.weight)
            head.bias[:rows].copy_(sb3_head.bias)
            if self.state_dependent_std:
                head.weight[rows:].zero_()
                head.bias[rows:].fill_(self.log_std_init)
        self.action_net = head
        if self.state_dependent_std:
            del self.log_std
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def layer_init_gains(self) -> list[float]:
        """``bsn_init_gain`` for each BSN layer, bottom first.

        Raises:
            ValueError: a list of gains whose length is not the number of BSN layers.
        """
        layers = len(self.bsn.layers)
        if isinstance(self.bsn_init_gain, float):
            return [self.bsn_init_gain] * layers
        if len(self.bsn_init_gain) != layers:
            raise ValueError(
                f"bsn_init_gain gives {len(self.bsn_init_gain)} gains for {layers} BSN layers; "
                "pass one float or one per layer"
            )
        return list(self.bsn_init_gain)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            estimator=self.estimator_name,
            estimator_kwargs=self.estimator_kwargs,
            baseline=self.baseline_name,
            baseline_kwargs=self.baseline_kwargs,
            bsn_init_gain=self.bsn_init_gain,
            signed_inputs=self.signed_inputs,
            signed_head=self.signed_head,
            state_dependent_std=self.state_dependent_std,
            deterministic_units=self.deterministic_units,
        )
        data.pop("use_sde", None)
        data.pop("full_std", None)
        data.pop("use_expln", None)
        data.pop("squash_output", None)
        return data

    @property
    def bsn(self) -> BinaryStochasticNetwork:
        """The actor's binary stochastic network."""
        return self.mlp_extractor.bsn

    @property
    def deterministic_units(self) -> str:
        """The BSN units' output in deterministic mode, ``"threshold"`` or ``"mean_field"`` (settable)."""
        return self.bsn.deterministic_units

    @deterministic_units.setter
    def deterministic_units(self, value: str) -> None:
        self.bsn.deterministic_units = check_deterministic_units(value)

    # ------------------------------------------------------------------ noise
    def set_training_mode(self, mode: bool) -> None:
        """SB3 hook; a train -> eval transition starts a new rollout: the noise key advances and the
        actor's behaviour copy is refreshed (local family only: the others do not re-score samples)."""
        if self.training and not mode:
            self.noise_key = (self.noise_key + 1) & 0x7FFFFFFF
            if self.bsn.is_local:
                self.behaviour.refresh(self.bsn, self.pi_features_extractor)
        super().set_training_mode(mode)

    def _noise_rows(self, obs: PyTorchObs) -> torch.Tensor:
        """The preprocessed observation, flattened per row: what counter-based noise is keyed on."""
        processed = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        if isinstance(processed, dict):
            return torch.cat([processed[key].reshape(processed[key].shape[0], -1) for key in sorted(processed)], 1)
        return processed.reshape(processed.shape[0], -1)

    def actor_features(self, obs: PyTorchObs) -> torch.Tensor:
        """The BSN network's input: ``obs`` preprocessed and passed through the actor's features extractor."""
        return BaseModel.extract_features(self, obs, self.pi_features_extractor)

    def _split_features(self, obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor's and the critic's features (one pass when the extractor is shared)."""
        pi_features = self.actor_features(obs)
        if self.share_features_extractor:
            return pi_features, pi_features
        return pi_features, BaseModel.extract_features(self, obs, self.vf_features_extractor)

    @torch.no_grad()
    def behaviour_samples(self, obs: PyTorchObs, noise: CounterNoise) -> list[torch.Tensor]:
        """Every layer's hidden samples as the rollout drew them: ``noise`` under the behaviour copy.

        Before the first rollout (no copy yet) the current parameters draw them.
        """
        bsn, extractor = self.behaviour.bsn, self.behaviour.extractor
        if bsn is None:
            return self.bsn.sample(self.actor_features(obs), noise=noise)
        actor_extractor = extractor if extractor is not None else self.pi_features_extractor
        return bsn.sample(BaseModel.extract_features(self, obs, actor_extractor), noise=noise)

    def _hidden_log_prob(self, output: BSNOutput) -> torch.Tensor | float:
        """The hidden units' joint log-prob added to the action's (local family only)."""
        return output.log_prob if self.bsn.is_local else 0.0

    # ------------------------------------------------------------------ SB3 API (PPO / A2C)
    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, ...]:
        """Actions, values and log-probabilities, hidden units drawn from counter-based noise.

        Returns ``log pi(a | h) + log P(h | s)`` for the local family (the joint), else ``log pi(a | h)``.
        """
        pi_features, vf_features = self._split_features(obs)
        output = self.bsn(
            pi_features, deterministic=deterministic, noise=CounterNoise(self._noise_rows(obs), self.noise_key)
        )
        distribution = self._get_action_dist_from_latent(output.output)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions) + self._hidden_log_prob(output)
        values = self.value_net(self.mlp_extractor.forward_critic(vf_features))
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Score the actions with the hidden samples that chose them, under the current parameters.

        Local family: the samples are re-drawn by the behaviour copy from the rollout's counter noise
        (:meth:`behaviour_samples`), identical to the rollout's at every minibatch of every epoch, and
        re-scored. Propagating estimators: re-drawn from the same noise by the current parameters.
        """
        pi_features, vf_features = self._split_features(obs)
        noise = CounterNoise(self._noise_rows(obs), self.noise_key)
        if self.bsn.is_local:
            output = self.bsn(pi_features, given_samples=self.behaviour_samples(obs, noise))
        else:
            output = self.bsn(pi_features, noise=noise)
        distribution = self._get_action_dist_from_latent(output.output)
        log_prob = distribution.log_prob(actions) + self._hidden_log_prob(output)
        values = self.value_net(self.mlp_extractor.forward_critic(vf_features))
        return values, log_prob, distribution.entropy()

    def get_distribution(self, obs: PyTorchObs, deterministic: bool = False) -> Distribution:
        """Action distribution given a draw of the hidden units (noise-free if ``deterministic``)."""
        noise = None if deterministic else CounterNoise(self._noise_rows(obs), self.noise_key)
        samples = self.bsn.sample(self.actor_features(obs), deterministic=deterministic, noise=noise)
        return self._get_action_dist_from_latent(samples[-1])

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        """``predict(deterministic=True)`` also makes the hidden units deterministic (:attr:`deterministic_units`)."""
        return self.get_distribution(observation, deterministic).get_actions(deterministic=deterministic)

    # ------------------------------------------------------------------ LocalPG API
    def act(self, obs: PyTorchObs) -> PolicyStep:
        """Sample hidden units with i.i.d. noise and actions; return them with the packed hidden samples."""
        pi_features, vf_features = self._split_features(obs)
        samples = self.bsn.sample(pi_features)
        distribution = self._get_action_dist_from_latent(samples[-1])
        actions = distribution.get_actions()
        log_prob = distribution.log_prob(actions)
        values = self.value_net(self.mlp_extractor.forward_critic(vf_features))
        return PolicyStep(
            actions.reshape((-1, *self.action_space.shape)), values, log_prob, self.bsn.pack_samples(samples)
        )

    def evaluate_hidden(
        self, obs: PyTorchObs, actions: torch.Tensor, hidden: torch.Tensor, with_entropy: bool = True
    ) -> HiddenEvaluation:
        """Score stored hidden samples (packed, as from :meth:`act`) and actions under the current parameters.

        ``with_entropy=False`` skips the action entropy (``entropy`` is then ``None``), for an update
        whose entropy bonus is off.
        """
        pi_features, vf_features = self._split_features(obs)
        output = self.bsn(pi_features, given_samples=self.bsn.unpack_samples(hidden, pi_features.dtype))
        distribution = self._get_action_dist_from_latent(output.output)
        values = self.value_net(self.mlp_extractor.forward_critic(vf_features))
        entropy = distribution.entropy() if with_entropy else None
        return HiddenEvaluation(values, distribution.log_prob(actions), entropy, output, pi_features)

    def unit_posteriors(self, output: BSNOutput, actions: torch.Tensor) -> list[torch.Tensor]:
        """Each unit's firing probability given its Markov blanket, ``q_i = P(h_i = 1 | h_{-i}, children, s)``.

        The children of a layer are the samples of the layer above; those of the top layer are the
        actions. ``q_i = sigmoid(a_i + log P(children | h_i = 1) - log P(children | h_i = 0))`` (see
        :mod:`policies.posterior`), one (batch, units) tensor per layer, without gradient.

        Args:
            output: the network's output for the stored samples (as :meth:`evaluate_hidden` returns it).
            actions: the actions the samples chose, as stored in the rollout.

        Memory: below the top, rows are processed in chunks of at most :data:`FLIP_CHUNK_ELEMENTS` flipped
        children (units x units above per row); the top layer's batch x units x the action head's outputs floats
        at once.
        """
        with torch.no_grad():
            ratios = self._children_log_ratios(output)
            ratios.append(self._action_log_ratio(output.output, actions))
            return [torch.sigmoid(pre + ratio) for pre, ratio in zip(output.pre_activations, ratios, strict=True)]

    def _children_log_ratios(self, output: BSNOutput) -> list[torch.Tensor]:
        """``log P(children | h_i = 1) - log P(children | h_i = 0)`` of every layer below the top, whose children
        are the samples of the layer above (:func:`~policies.posterior.bernoulli_children_log_ratio`), in row
        chunks of at most :data:`FLIP_CHUNK_ELEMENTS` flipped children; one (batch, units) tensor per layer.
        Under ``torch.compile`` in one piece: the compiler fuses the flipped children into their sum, and a
        chunk loop would be unrolled into the graph."""
        ratios = []
        for index, samples in enumerate(output.samples[:-1]):
            weight = bit_affine(self.bsn.layers[index + 1])[0]  # a flip of unit i moves child j by W'[j, i]
            parts = [slice(None)] if torch.compiler.is_compiling() else _row_chunks(len(samples), weight.numel())
            children_pre, children = output.pre_activations[index + 1], output.samples[index + 1]
            ratios.append(torch.cat([
                bernoulli_children_log_ratio(children_pre[part], children[part], weight, samples[part])
                for part in parts
            ]))
        return ratios

    def coupled_posteriors(
        self, output: BSNOutput, actions: torch.Tensor, uniform: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Each unit's firing probability given the action and the noise of the layers above,
        ``q_i = P(h_i = 1 | h_{-i}, u, a, s) = sigmoid(a_i + log pi(a | h_i = 1, u) - log pi(a | h_i = 0, u))``
        (coupled posterior credit, :func:`policies.posterior.coupled_noise`): one (batch, units) tensor per
        layer, without gradient. The top layer's equals :meth:`unit_posteriors`'.

        Args:
            output: the network's output for the stored samples (as :meth:`evaluate_hidden` returns it).
            actions: the actions the samples chose, as stored in the rollout.
            uniform: per layer, (batch, units_l) independent uniform noise on [0, 1), turned into the noise
                that draws the stored samples again (:func:`~policies.posterior.coupled_noise`); the bottom
                layer's is not read.

        Cost: for layer ``l``, batch x units_l flipped copies of each layer above it, one product by a weight
        for every layer above the first (:meth:`flipped_action_log_probs`).
        """
        with torch.no_grad():
            noise = [
                coupled_noise(h, p, v) for h, p, v in zip(output.samples, output.firing_probs, uniform, strict=True)
            ]
            stored = self._get_action_dist_from_latent(output.output).log_prob(actions)
            ratios = []
            for index, samples in enumerate(output.samples[:-1]):
                units = torch.arange(samples.shape[-1], device=samples.device)
                flipped, _reached = self.flipped_action_log_probs(output, actions, index, units, noise)
                ratios.append(flip_log_ratio(samples, stored, flipped))
            ratios.append(self._action_log_ratio(output.output, actions))  # the top layer's, as without coupling
            return [torch.sigmoid(pre + ratio) for pre, ratio in zip(output.pre_activations, ratios, strict=True)]

    @torch.compiler.disable  # eager under compile_update: the row-chunk loop would be unrolled into the graph
    def flipped_action_log_probs(
        self,
        output: BSNOutput,
        actions: torch.Tensor,
        layer: int,
        units: torch.Tensor,
        noise: Sequence[torch.Tensor],
        with_reach: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``log pi(a | h with unit i of ``layer`` flipped)``, the layers above redrawn with held noise.

        For each row and each unit ``i`` in ``units``, ``h_i`` is flipped and every layer above is drawn again
        as ``h_j = 1[u_j < p_j]`` from ``noise`` (with :func:`~policies.posterior.coupled_noise`'s noise the
        stored samples come back where nothing changed). Each pre-activation above is the stored one moved by
        what changed below it: ``W' (h' - h)``, a column of ``W'`` for the flip itself, so the stored samples'
        pre-activations are never recomputed. Rows are processed in chunks of at most
        :data:`FLIP_CHUNK_ELEMENTS` flipped activations. Without gradient.

        Args:
            output: the network's output for the stored samples.
            actions: the stored actions, (batch, ...) as the rollout stores them.
            layer: the index of the flipped layer (0 = bottom).
            units: indices of the units of that layer to flip, (count,).
            noise: per layer, (batch, units_l) noise in [0, 1) of the layers above ``layer``.
            with_reach: also say which flips changed the top layer's sample.

        Returns:
            ``(log_probs, reached)``: (batch, count) log-likelihoods of the actions, and with ``with_reach``
            (batch, count) booleans, true where the flip changed the top layer's sample (always, for the top
            layer); else ``None``.
        """
        samples = output.samples[layer]
        count = len(units)
        widest = max(h.shape[-1] for h in output.samples[layer:])
        above = range(layer + 1, len(output.samples))
        # The weight by which each layer from ``layer`` up moves what reads it: the next BSN layer, then the head.
        weights = [bit_affine(self.bsn.layers[index])[0] for index in above] + [bit_affine(self.action_net)[0]]
        log_probs, reached = [], []
        with torch.no_grad():
            head_params = self.action_net(output.output)
            for part in _row_chunks(len(samples), count * widest):
                flip = (1.0 - 2.0 * samples[part][:, units]).unsqueeze(-1)  # (n, count, 1): the change of h_i
                shift = flip * weights[0].t()[units]  # (n, count, outputs): W'[:, i] (h_i' - h_i)
                # A flip of the top layer itself always changes it.
                changed = torch.ones(flip.shape[:2], dtype=torch.bool, device=flip.device) if with_reach else None
                for index, weight in zip(above, weights[1:], strict=True):
                    pre_activation = output.pre_activations[index][part].unsqueeze(1) + shift
                    redrawn = self.bsn.estimators[index].sample(pre_activation, noise[index][part].unsqueeze(1))
                    difference = redrawn - output.samples[index][part].unsqueeze(1)
                    if with_reach and index == above[-1]:
                        changed = difference.ne(0).any(-1)
                    shift = difference @ weight.t()
                n = len(flip)
                params = (head_params[part].unsqueeze(1) + shift).reshape(n * count, -1)
                distribution = self._distribution_from_params(params)
                log_probs.append(distribution.log_prob(actions[part].repeat_interleave(count, 0)).reshape(n, count))
                if with_reach:
                    reached.append(changed)
        return torch.cat(log_probs), torch.cat(reached) if with_reach else None

    def _action_log_ratio(self, top_samples: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``log pi(a | h_i = 1) - log pi(a | h_i = 0)`` for each unit of the top layer, (batch, units).

        The action head is affine in the units (``action_net``), so flipping one unit moves its output by a column
        of its weight on the raw bits (:func:`~policies.bsn.bit_affine`: twice the weight for a signed head); the
        log-likelihoods come from the head's own distribution class.
        """
        rows, units = top_samples.shape
        params = self.action_net(top_samples)
        flipped_params = params.unsqueeze(1) + flip_shifts(top_samples, bit_affine(self.action_net)[0])
        stored = self._distribution_from_params(params).log_prob(actions)
        flipped = self._distribution_from_params(flipped_params.reshape(rows * units, -1)).log_prob(
            actions.repeat_interleave(units, dim=0)
        )
        return flip_log_ratio(top_samples, stored, flipped.reshape(rows, units))

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> Distribution:
        """SB3's action distribution of the top layer's samples (no gSDE: ``use_sde`` is refused)."""
        return self._distribution_from_params(self.action_net(latent_pi))

    def _distribution_from_params(self, params: torch.Tensor) -> Distribution:
        """The action distribution whose parameters are ``params``, the output of ``action_net``."""
        if isinstance(self.action_dist, DiagGaussianDistribution):
            if self.state_dependent_std:
                mean, log_std = params.chunk(2, dim=-1)
                return self.action_dist.proba_distribution(mean, log_std.clamp(*LOG_STD_RANGE))
            return self.action_dist.proba_distribution(params, self.log_std)
        # Categorical, MultiCategorical, Bernoulli: the head's output is the logits
        return self.action_dist.proba_distribution(action_logits=params)
