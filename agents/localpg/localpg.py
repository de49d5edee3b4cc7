"""LocalPG: policy gradient for binary-stochastic-neuron policies with purely local updates.

Every hidden unit of the policy's BSN network learns with the paper's local estimator
``(h_i - p_i) * (A - c_i)`` (docs/method.md §1): ``A`` is the GAE(lambda) advantage of the delayed
reward (``lambda = 1``: Monte-Carlo return minus the learned value baseline), ``c_i`` an optional
per-neuron baseline (section 2). The action head learns from ``log pi(a | h_top)`` with the top layer's
samples as its input; nothing is back-propagated from one layer into the layer below.

Like PPO, a rollout may be reused for several epochs; each *neuron* then has its own clipped
probability ratio ``r_i = P_new(h_i | x_i) / P_old(h_i | x_i)`` (a per-neuron trust region), and
the action head has PPO's clipped ratio on ``pi(a | h)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from agents.localpg.buffer import HiddenRolloutBuffer, HiddenRolloutSamples, TensorObs, take_obs_rows, take_rows
from agents.localpg.diagnostics import (
    FLIP_ROWS,
    RolloutDiagnostics,
    UpdateStats,
    evenly_spaced,
    flip_effects,
    hidden_entropy,
    layer_kls,
    log_update,
    rollout_diagnostics,
)
from agents.localpg.hyperparameters import check_hyperparameters
from agents.localpg.losses import hidden_loss
from agents.localpg.optim import GroupGradientClipper, gradient_groups, layerwise_optimizer
from agents.localpg.tensor_rollouts import collect_tensor_rollouts, distribution_checks, is_tensor_env
from policies.bsn import BSNOutput
from policies.policy import SUPPORTED_ACTION_SPACES, BinaryStochasticPolicy, check_spaces

__all__ = ["LocalPG"]

SelfLocalPG = TypeVar("SelfLocalPG", bound="LocalPG")
_Result = TypeVar("_Result")

class LocalPG(OnPolicyAlgorithm):
    """Local policy gradient for binary-stochastic-neuron policies (Bengio et al. 2013, docs/method.md).

    Args:
        policy: ``"BsnPolicy"`` / ``"MlpPolicy"`` (both :class:`~policies.BinaryStochasticPolicy`) or
            a subclass of it.
        env: the environment (Gymnasium env, its id, or an SB3 ``VecEnv``).
        learning_rate: Adam's learning rate (> 0), or a schedule of the progress remaining (1 -> 0).
        n_steps: steps per environment per rollout (> 0); the rollout has ``n_steps * n_envs`` rows.
        batch_size: minibatch size (> 1; rollout rows if ``None``).
        n_epochs: passes over each rollout (>= 1). With 1 epoch and one minibatch (``batch_size`` of the
            whole rollout or ``None``) every ratio is 1 and the update is exactly the local estimator; later
            minibatches and epochs reuse data collected under older parameters inside per-neuron trust
            regions (clipped ratios), a biased estimate as in PPO.
        gamma: discount factor in [0, 1].
        gae_lambda: GAE's lambda in [0, 1]; 1 gives Monte-Carlo returns from the delayed reward.
        clip_range: half-width ``eps`` of the clipped ratios ``[1 - eps, 1 + eps]`` (> 0), applied to
            the action head and to every hidden unit; or a schedule.
        normalize_advantage: standardise advantages per minibatch.
        ent_coef: weight of the action distribution's entropy bonus (>= 0).
        hidden_ent_coef: weight of the hidden units' Bernoulli entropy bonus (>= 0); keeps units
            from saturating at p = 0 or 1.
        hidden_coef: weight of the hidden units' local loss relative to the action head's (> 0).
        vf_coef: weight of the value (baseline) loss (>= 0).
        max_grad_norm: gradient-norm clipping threshold (> 0).
        target_kl: stop an update's epochs early when the action head's approximate KL exceeds
            ``1.5 * target_kl`` (SB3's rule); ``None`` never stops.
        hidden_target_kl: the same rule for the hidden layers: stop an update's epochs early when any BSN
            layer's approximate joint KL (``bsn/layer<l>/approx_kl``) exceeds ``1.5 * hidden_target_kl``
            (> 0, or ``None``, the default, to never stop on it). A layer's joint KL is that of all its
            units given the layer's stored inputs, ``E[sum_i ((r_i - 1) - log r_i)]`` with the per-unit
            ratios ``r_i = P_new(h_i) / P_old(h_i)``: the per-neuron clip bounds each ``r_i``, not their
            product, which grows with the layer's width.
        hidden_lr_scale: learning-rate multiplier of the BSN layers relative to ``learning_rate`` (> 0):
            one float for every layer, or one per layer, bottom to top (default 1.0). The local
            estimate of a unit is far noisier than the action head's gradient, and Adam normalises
            its scale away, so the step size of each layer is the lever that sets how fast units
            become deterministic. Each layer's update stays local; only its step size changes.
        hidden_clip_range: half-width of the per-neuron clipped ratios (> 0), or ``None`` (default)
            to use ``clip_range``; the per-neuron trust region of the hidden units.
        compile_update: compile each minibatch's loss (forward pass and its backward) and the pass
            that scores the rollout with ``torch.compile`` (default ``False``). The first update then
            takes longer (compilation; on CPU, inductor needs a C++ compiler) and later ones are faster,
            most where element-wise work or per-op overhead dominates: small minibatches on CPU, and
            GPUs (measured in ``benchmarks/results/throughput.md``). Results equal the eager update's
            up to float rounding. With ``coupled_posterior`` the flipped networks are scored eagerly
            (their row-chunk loop would be unrolled into the graph).
        rao_blackwell: credit each hidden unit with ``(q_i - p_i)(A - c_i)`` instead of
            ``(h_i - p_i)(A - c_i)``, where ``q_i`` is the probability that the unit fired given its Markov
            blanket (its inputs, the other units' samples and what its children did: the layer above,
            or the action), computed at the start of each update (:mod:`policies.posterior`). Unbiased,
            with a variance never larger (Rao-Blackwell); no derivative passes between layers, but a unit's
            credit reads the layer above (its children's samples and pre-activations through its outgoing
            weights, or the action head's output): one layer's reach, not the paper's strictly local rule,
            which ``False`` keeps (each unit reads its inputs, its sample and probability, and the
            broadcast advantage). With the ``optimal`` per-neuron baseline, that baseline keeps its
            ``(h_i - p_i)^2`` weights: unbiased, but no longer variance-optimal for this credit. Costs
            a pass over rows x units x (children) per update. With ``estimator="learned_predictor"``
            the predictor's regression target becomes ``(q_i - p_i)(A - c_i)``, which has the same
            expectation (default ``False``; numbers in ``benchmarks/results/ablation.md``).
        coupled_posterior: with ``rao_blackwell``, condition each unit below the top layer on the action
            instead of on the layer above's samples: ``q_i = sigmoid(a_i + log pi(a | h_i = 1, u) -
            log pi(a | h_i = 0, u))``, where the layers above are drawn again with their noise ``u`` held
            (drawn given the stored samples at the start of each update; :mod:`policies.posterior`,
            "Coupled variant"). Unbiased, with a variance never larger than the sample's; a flip that
            changes nothing above earns no credit. The top layer's credit is unchanged, so a one-layer
            policy trains exactly as without it. No derivative passes between layers, but a unit's credit
            reads every layer above it by forward passes: costs rows x units flipped copies of the layers
            above each layer per update (:meth:`~policies.BinaryStochasticPolicy.flipped_action_log_probs`;
            default ``False``; numbers in docs/deep-policies.md).
        stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device, _init_setup_model:
            as in SB3.

    Logged keys: SB3's ``rollout/``, ``time/`` and ``train/`` keys (as PPO's) and ``bsn/`` keys,
    documented in docs/tensorboard.md.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "BsnPolicy": BinaryStochasticPolicy,
        "MlpPolicy": BinaryStochasticPolicy,
        "MultiInputPolicy": BinaryStochasticPolicy,
        "CnnPolicy": BinaryStochasticPolicy,
    }
    #: Action spaces LocalPG accepts (SB3 convention); observation spaces: those of the policy.
    supported_action_spaces = SUPPORTED_ACTION_SPACES
    policy: BinaryStochasticPolicy
    rollout_buffer: HiddenRolloutBuffer  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[BinaryStochasticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 128,
        batch_size: int | None = 256,
        n_epochs: int = 4,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        hidden_ent_coef: float = 0.0,
        hidden_coef: float = 1.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        target_kl: float | None = None,
        hidden_target_kl: float | None = None,
        hidden_lr_scale: float | Sequence[float] = 1.0,
        hidden_clip_range: float | None = None,
        compile_update: bool = False,
        rao_blackwell: bool = False,
        coupled_posterior: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        # Check before SB3 wraps the env, which fails on some spaces with an error of its own.
        if env is not None and not isinstance(env, str):
            check_spaces(env.observation_space, env.action_space)
        check_hyperparameters(
            learning_rate=learning_rate, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs, gamma=gamma,
            gae_lambda=gae_lambda, clip_range=clip_range, ent_coef=ent_coef, hidden_ent_coef=hidden_ent_coef,
            hidden_coef=hidden_coef, vf_coef=vf_coef, max_grad_norm=max_grad_norm, target_kl=target_kl,
            hidden_target_kl=hidden_target_kl, hidden_clip_range=hidden_clip_range,
        )
        scales = [hidden_lr_scale] if isinstance(hidden_lr_scale, (int, float)) else list(hidden_lr_scale)
        if not scales or any(not float(scale) > 0 for scale in scales):
            raise ValueError(f"hidden_lr_scale must be > 0 (a float or one per BSN layer), got {hidden_lr_scale}")
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            # Validated below by check_spaces, which raises a ValueError naming both spaces.
            supported_action_spaces=None,
        )
        if env is not None:  # load() builds the model without an env and sets the spaces afterwards
            check_spaces(self.observation_space, self.action_space)
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.normalize_advantage = normalize_advantage
        self.hidden_ent_coef = hidden_ent_coef
        self.hidden_coef = hidden_coef
        self.target_kl = target_kl
        self.hidden_target_kl = hidden_target_kl
        self.hidden_lr_scale = hidden_lr_scale
        self.hidden_clip_range = hidden_clip_range
        if not isinstance(compile_update, bool):
            raise ValueError(f"compile_update must be True or False, got {compile_update!r}")
        self.compile_update = compile_update
        if not isinstance(rao_blackwell, bool):
            raise ValueError(f"rao_blackwell must be True or False, got {rao_blackwell!r}")
        self.rao_blackwell = rao_blackwell
        if not isinstance(coupled_posterior, bool):
            raise ValueError(f"coupled_posterior must be True or False, got {coupled_posterior!r}")
        if coupled_posterior and not rao_blackwell:
            raise ValueError("coupled_posterior=True needs rao_blackwell=True (it changes the posterior credit)")
        self.coupled_posterior = coupled_posterior
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        if not isinstance(self.policy, BinaryStochasticPolicy):
            raise ValueError(f"LocalPG needs a BinaryStochasticPolicy, got {type(self.policy).__name__}")
        if self.policy.bsn.propagates:
            raise ValueError(
                f"LocalPG trains with local estimators ('local', 'learned_predictor'); estimator "
                f"{self.policy.estimator_name!r} back-propagates: use PPO or A2C with BinaryStochasticPolicy"
            )
        if any(getattr(estimator, "use_straight_through", False) for estimator in self.policy.bsn.estimators):
            raise ValueError(
                "LocalPG cannot train a learned predictor with use_straight_through=True: that feature is the "
                "back-propagated dL/dh, which LocalPG never computes; drop it, or use the predictor on a "
                "differentiable loss with BinaryStochasticNetwork directly (as benchmarks/estimators.py does)"
            )
        self.policy = self.policy.to(self.device)
        self.rollout_buffer = HiddenRolloutBuffer(
            self.n_steps, self.n_envs, self.policy.bsn.total_units, self.device, self.gamma, self.gae_lambda
        )
        self.clip_range = FloatSchedule(self.clip_range)
        groups = gradient_groups(self.policy)
        self._clipper = GroupGradientClipper(groups)
        self.policy.optimizer = layerwise_optimizer(self.policy, groups, self._layer_lr_scales(), self.lr_schedule(1))
        # The update's two pure functions, compiled with compile_update (getattr: models saved before the
        # option existed load with the eager update).
        compiled = getattr(self, "compile_update", False)
        self._loss_fn = torch.compile(self._minibatch_loss) if compiled else self._minibatch_loss
        self._unit_scores_fn = torch.compile(self._unit_scores) if compiled else self._unit_scores

    def _layer_lr_scales(self) -> list[float]:
        """The learning-rate multiplier of each BSN layer, bottom to top."""
        n_layers = len(self.policy.bsn.layers)
        scales = self.hidden_lr_scale
        if isinstance(scales, (int, float)):
            return [float(scales)] * n_layers
        if len(scales) != n_layers:
            raise ValueError(
                f"hidden_lr_scale gives {len(scales)} values for {n_layers} BSN layers; pass one float or one per layer"
            )
        return [float(scale) for scale in scales]

    def _update_learning_rate(self, optimizers: list[torch.optim.Optimizer] | torch.optim.Optimizer) -> None:
        """SB3's schedule update, times each parameter group's ``lr_scale`` (layer-wise learning rates)."""
        learning_rate = self.lr_schedule(self._current_progress_remaining)
        self.logger.record("train/learning_rate", learning_rate)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * group.get("lr_scale", 1.0)

    # ------------------------------------------------------------------ rollouts
    def collect_rollouts(  # type: ignore[override]
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: HiddenRolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Fill the buffer with ``n_rollout_steps`` steps of every env, storing the hidden samples.

        An env with the tensor API of :class:`envs.TorchVecEnv` (``step_tensor``, ``final_obs``,
        ``episodes``), not wrapped, is stepped with tensors: rollout, buffer and update stay on the
        device, with no per-step copy to the host.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        if is_tensor_env(env):
            return collect_tensor_rollouts(self, env, callback, rollout_buffer, n_rollout_steps)
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        callback.on_rollout_start()
        n_steps = 0
        dones = self._last_episode_starts
        while n_steps < n_rollout_steps:
            # No argument checks on a distribution built from finite logits (each reads a tensor on the host).
            with torch.no_grad(), distribution_checks(False):
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                step = self.policy.act(obs_tensor)
            actions = step.actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            rewards = rewards.astype(np.float32, copy=True)
            self._bootstrap_truncated(rewards, dones, infos)
            rollout_buffer.add(
                obs_tensor,
                step.actions,
                torch.as_tensor(rewards, device=self.device),
                torch.as_tensor(self._last_episode_starts, dtype=torch.float32, device=self.device),
                step.values,
                step.log_prob,
                step.hidden,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
        with torch.no_grad():
            last_values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(
            last_values, torch.as_tensor(dones, dtype=torch.float32, device=self.device)
        )
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _bootstrap_truncated(self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict]) -> None:
        """Add ``gamma * V(terminal obs)`` to rewards of episodes cut by a time limit (as SB3 does)."""
        cut = [
            i
            for i, done in enumerate(dones)
            if done and infos[i].get("terminal_observation") is not None and infos[i].get("TimeLimit.truncated", False)
        ]
        if not cut:
            return
        terminal = [infos[i]["terminal_observation"] for i in cut]
        if isinstance(terminal[0], dict):
            stacked: Any = {key: np.stack([obs[key] for obs in terminal]) for key in terminal[0]}
        else:
            stacked = np.stack(terminal)
        with torch.no_grad():
            values = self.policy.predict_values(obs_as_tensor(stacked, self.device)).reshape(-1).cpu().numpy()
        rewards[cut] += self.gamma * values

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def _score_rollout(self, stats: UpdateStats | None = None) -> None:
        """Per-unit log-probs of the stored hidden samples under the collecting parameters (``P_old``).

        With ``stats``, also record the rollout-level diagnostics of this one pass (before any
        gradient step, where every ratio is 1 and the update is the plain local estimate): the
        action and hidden entropies, ``mean |h - p|`` and the signal-to-noise ratio of each layer's
        local estimates, and how much of the advantage a per-neuron baseline explains. Computing
        them here costs one forward pass per update instead of work in every minibatch.
        """
        buffer = self.rollout_buffer
        rows = buffer.buffer_size * buffer.n_envs
        hidden, advantages = buffer.hidden.reshape(rows, -1), buffer.tensors.advantages.reshape(-1)
        unit_log_probs, posteriors, diagnostics = self._call_update_fn(
            self._unit_scores_fn, buffer.flat_observations(), buffer.flat_actions(), hidden, advantages,
            stats is not None,
        )
        buffer.unit_log_probs = unit_log_probs.reshape(buffer.buffer_size, buffer.n_envs, -1)
        if posteriors is not None:
            buffer.posteriors = posteriors.reshape(buffer.buffer_size, buffer.n_envs, -1)
        if stats is None or diagnostics is None:
            return
        stats.add_rollout(diagnostics)
        stats.add_layers(self._flip_effects(hidden))

    def _flip_effects(self, hidden: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """:func:`~agents.localpg.diagnostics.flip_effects` on up to ``FLIP_ROWS`` evenly spaced rows of the
        rollout (packed ``hidden`` samples), with noise from a generator seeded by the update count: the
        diagnostic leaves the global random state, and so the training run, as it was."""
        policy, buffer = self.policy, self.rollout_buffer
        index = evenly_spaced(len(hidden), FLIP_ROWS).to(hidden.device)
        features = policy.actor_features(take_obs_rows(buffer.flat_observations(), index))
        output = policy.bsn(features, given_samples=policy.bsn.unpack_samples(take_rows(hidden, index), features.dtype))
        generator = torch.Generator(device=features.device).manual_seed(self._n_updates)
        uniform = [
            torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype)
            for probs in output.firing_probs
        ]
        return flip_effects(policy, output, take_rows(buffer.flat_actions(), index), uniform)

    def _unit_scores(
        self,
        observations: TensorObs,
        actions: torch.Tensor,
        hidden: torch.Tensor,
        advantages: torch.Tensor,
        with_diagnostics: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, RolloutDiagnostics | None]:
        """The whole rollout's per-unit log-probs (rows, total_units), with ``rao_blackwell`` its per-unit
        posteriors (same shape; else ``None``), and, if asked, its diagnostics (:mod:`agents.localpg.diagnostics`).

        A function of its arguments and the parameters only, so that ``compile_update`` can compile it.
        """
        policy = self.policy
        features = policy.actor_features(observations)
        output = policy.bsn(features, given_samples=policy.bsn.unpack_samples(hidden, features.dtype))
        unit_log_probs = torch.cat(output.unit_log_probs, -1)
        # What each unit is credited with: its sample, or (Rao-Blackwellised) its posterior firing probability.
        credits = self._credits(output, actions)
        posteriors = torch.cat(credits, -1) if self.rao_blackwell else None
        if not with_diagnostics:
            return unit_log_probs, posteriors, None
        advantages = self._prepared_advantages(advantages)
        diagnostics = rollout_diagnostics(policy, output, credits, advantages, self._learning_signals)
        return unit_log_probs, posteriors, diagnostics

    def _credits(self, output: BSNOutput, actions: torch.Tensor) -> list[torch.Tensor]:
        """Per layer, what each unit is credited with: its sample, its posterior given its Markov blanket
        (``rao_blackwell``), or given the action and the noise above (``coupled_posterior``)."""
        if not self.rao_blackwell:
            return output.samples
        if not self.coupled_posterior:
            return self.policy.unit_posteriors(output, actions)
        # The bottom layer's noise is never read: a one-layer policy draws nothing and trains as without coupling.
        bottom, *above = output.firing_probs
        uniform = [torch.zeros_like(bottom), *(torch.rand_like(probs) for probs in above)]
        return self.policy.coupled_posteriors(output, actions, uniform)

    def _prepared_advantages(self, advantages: torch.Tensor) -> torch.Tensor:
        """The advantages standardised (zero mean, unit std) if ``normalize_advantage`` and there are 2+ rows."""
        if self.normalize_advantage and len(advantages) > 1:
            return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        return advantages

    def _learning_signals(
        self, features: torch.Tensor, output: BSNOutput, advantages: torch.Tensor
    ) -> list[torch.Tensor]:
        """Each layer's learning signal ``A - c_i``: (batch, 1) without a per-neuron baseline, else (batch, units)."""
        signals = [advantages.unsqueeze(-1)] * len(output.samples)
        baseline = self.policy.neuron_baseline
        if baseline is None:
            return signals
        corrections = baseline(features.detach(), output)
        return [signal - c for signal, c in zip(signals, corrections, strict=True)]

    def train(self) -> None:
        """Update the policy from the rollout with local, per-neuron clipped estimates."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = float(self.clip_range(self._current_progress_remaining))  # type: ignore[operator]
        # A tensor, so that a clip_range schedule does not recompile a compiled loss at every update.
        clip_tensor = torch.tensor(clip_range, device=self.device)
        stats = UpdateStats()
        before = [layer.weight.detach().clone() for layer in self.policy.bsn.layers]
        continue_training = True
        # Stored actions need no argument checks (each one reads a tensor on the host).
        with distribution_checks(False):
            self._score_rollout(stats)
            for _epoch in range(self.n_epochs):
                for batch in self.rollout_buffer.get(self.batch_size):
                    loss, step_stats = self._call_update_fn(self._loss_fn, batch, clip_tensor)
                    stats.add(**step_stats)
                    reason = self._kl_stop_reason(step_stats)
                    if reason is not None:
                        continue_training = False
                        if self.verbose >= 1:
                            print(f"Early stopping at epoch {_epoch} due to reaching max kl: {reason}")
                        break
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"LocalPG update diverged: non-finite loss at update {self._n_updates} "
                            f"(timestep {self.num_timesteps}); lower the learning rate or check the rewards"
                        )
                    self.policy.optimizer.zero_grad()
                    loss.backward()
                    self._clipper.clip(self.max_grad_norm)
                    self.policy.optimizer.step()
                self._n_updates += 1
                if not continue_training:
                    break
        log_update(self, stats, clip_range, before)

    def _kl_stop_reason(self, step_stats: dict[str, torch.Tensor]) -> str | None:
        """Why the update's epochs stop here (``target_kl`` or ``hidden_target_kl`` passed), else ``None``."""
        if self.target_kl is not None and float(step_stats["approx_kl"]) > 1.5 * self.target_kl:
            return f"action head {float(step_stats['approx_kl']):.2f}"
        hidden_target = getattr(self, "hidden_target_kl", None)  # models saved before the option existed
        if hidden_target is None:
            return None
        for index in range(len(self.policy.bsn.layers)):
            layer_kl = float(step_stats[f"layer_kl_{index}"])
            if layer_kl > 1.5 * hidden_target:
                return f"BSN layer {index} {layer_kl:.2f}"
        return None

    @staticmethod
    def _call_update_fn(function: Callable[..., _Result], *args: Any) -> _Result:
        """``function(*args)`` (``_loss_fn`` or ``_unit_scores_fn``); a failed compilation names the fix."""
        try:
            return function(*args)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            cause = error.inner_exception
            first_line = (str(cause).strip().splitlines() or [""])[0]
            raise RuntimeError(
                f"compile_update=True, but torch.compile failed on this machine ({type(cause).__name__}: "
                f"{first_line}); on CPU, inductor needs a C++ compiler (e.g. apt install g++). "
                "Train with compile_update=False instead."
            ) from error

    def _minibatch_loss(
        self, batch: HiddenRolloutSamples, clip_range: float | torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The minibatch's total loss and its statistics (0-dim tensors, no gradient; ``approx_kl`` among them).

        A function of its arguments and the parameters only (statistics are returned, not recorded),
        so that ``compile_update`` can compile it into one graph.
        """
        policy = self.policy
        evaluation = policy.evaluate_hidden(
            batch.observations, batch.actions, batch.hidden, with_entropy=self.ent_coef > 0
        )
        bsn_out = evaluation.bsn
        advantages = self._prepared_advantages(batch.advantages)

        # Action head: PPO's clipped surrogate on pi(a | h_top).
        log_ratio = evaluation.action_log_prob - batch.old_log_prob
        ratio = torch.exp(log_ratio)
        action_loss = -torch.min(advantages * ratio, advantages * ratio.clamp(1 - clip_range, 1 + clip_range)).mean()

        # Hidden units: local signal A - c_i, per-neuron clipped ratio.
        signals = self._learning_signals(evaluation.features, bsn_out, advantages)
        hidden_clip = clip_range if self.hidden_clip_range is None else self.hidden_clip_range
        hidden, predictor_loss, unit_clip_fraction = hidden_loss(
            bsn_out, policy.bsn.estimators, batch.old_unit_log_prob, batch.old_posterior, signals, hidden_clip
        )
        loss = action_loss + self.hidden_coef * hidden + predictor_loss
        baseline = policy.neuron_baseline
        if baseline is not None:
            learned = baseline.loss(evaluation.features.detach(), bsn_out, advantages)
            if learned is not None:
                loss = loss + learned
            baseline.observe(bsn_out, advantages)

        value_loss = F.mse_loss(batch.returns, evaluation.values.flatten())
        loss = loss + self.vf_coef * value_loss
        if self.ent_coef > 0:
            entropy = evaluation.entropy if evaluation.entropy is not None else -evaluation.action_log_prob
            loss = loss - self.ent_coef * entropy.mean()
        if self.hidden_ent_coef > 0:
            loss = loss - self.hidden_ent_coef * hidden_entropy(bsn_out)
        with torch.no_grad():
            step_stats = {
                "action_loss": action_loss.detach(),
                "value_loss": value_loss.detach(),
                "hidden_loss": hidden.detach(),
                "approx_kl": ((ratio - 1) - log_ratio).mean(),
                **layer_kls(batch.old_unit_log_prob, bsn_out.unit_log_probs, policy.bsn.hidden_sizes),
                "clip_fraction": ((ratio - 1).abs() > clip_range).float().mean(),
                "loss": loss.detach(),
            }
            if unit_clip_fraction is not None:
                step_stats["unit_clip_fraction"] = unit_clip_fraction
            if predictor_loss.requires_grad:
                step_stats["predictor_loss"] = predictor_loss.detach()
        return loss, step_stats

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "rollout_buffer", "_clipper", "_loss_fn", "_unit_scores_fn"]

    def learn(
        self: SelfLocalPG,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "LocalPG",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfLocalPG:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
