"""Gymnasium's classic-control tasks as batched torch environments (:class:`~envs.torch_vec_env.TorchVecEnv`).

Each class reproduces the dynamics, rewards, terminations, initial-state distribution, spaces and
time limit of its Gymnasium counterpart (``gymnasium/envs/classic_control``, Gymnasium 1.x), with the
state in Gymnasium's order. With ``dtype=torch.float64`` a step from the same state and action
matches Gymnasium's numpy implementation to rounding (tests/test_envs_torch.py checks 1e-5 over
thousands of random steps); ``float32`` is faster and agrees to float32 precision (1e-5, and 1e-4
relative for Acrobot, whose RK4 step loses ~3e-5 relative precision at high joint velocities).
Random streams differ from Gymnasium's (a torch generator instead of numpy's).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces

from envs.torch_vec_env import TorchVecEnv

__all__ = ["TorchAcrobot", "TorchCartPole", "TorchMountainCar", "TorchPendulum", "wrap_angle"]


def wrap_angle(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Shift ``x`` by whole periods ``high - low`` into ``[low, high]`` (Gymnasium's ``acrobot.wrap``).

    Values already inside are returned unchanged (including the end points), as in Gymnasium.
    """
    period = high - low
    above = torch.where(x > high, x - period * torch.ceil((x - high) / period), x)
    return torch.where(above < low, above + period * torch.ceil((low - above) / period), above)


class TorchCartPole(TorchVecEnv):
    """Batched ``CartPole-v1`` (Barto, Sutton & Anderson 1983), Euler integration.

    State and observation: ``(x, x_dot, theta, theta_dot)``. Actions: 0 pushes the cart left, 1
    right, with force 10. Reward ``+1`` every step including the terminal one. Terminates when
    ``|x| > 2.4`` or ``|theta| > 12`` degrees; truncated after 500 steps (200 for ``CartPole-v0``).
    Initial state uniform in ``[-0.05, 0.05]^4``. Optimal return: 500.
    """

    gym_id = "CartPole-v1"
    state_dim = 4
    gravity = 9.8
    mass_cart = 1.0
    mass_pole = 0.1
    half_length = 0.5
    force_mag = 10.0
    tau = 0.02
    theta_threshold = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def _make_spaces(self) -> tuple[spaces.Box, spaces.Space]:
        high = np.array([self.x_threshold * 2, np.inf, self.theta_threshold * 2, np.inf], dtype=np.float32)
        return spaces.Box(-high, high, dtype=np.float32), spaces.Discrete(2)

    def _initial_state(self, num: int) -> torch.Tensor:
        return self._uniform(-0.05, 0.05, (num, self.state_dim))

    def _transition(
        self, state: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, x_dot, theta, theta_dot = state.unbind(-1)
        total_mass = self.mass_pole + self.mass_cart
        polemass_length = self.mass_pole * self.half_length
        force = (2 * actions - 1).to(state.dtype) * self.force_mag  # action 1 pushes right, 0 left
        cos_theta, sin_theta = torch.cos(theta), torch.sin(theta)
        temp = (force + polemass_length * theta_dot.square() * sin_theta) / total_mass
        theta_acc = (self.gravity * sin_theta - cos_theta * temp) / (
            self.half_length * (4.0 / 3.0 - self.mass_pole * cos_theta.square() / total_mass)
        )
        x_acc = temp - polemass_length * theta_acc * cos_theta / total_mass
        next_state = torch.stack(
            [
                x + self.tau * x_dot,
                x_dot + self.tau * x_acc,
                theta + self.tau * theta_dot,
                theta_dot + self.tau * theta_acc,
            ],
            dim=-1,
        )
        new_x, new_theta = next_state[:, 0], next_state[:, 2]
        terminated = (new_x.abs() > self.x_threshold) | (new_theta.abs() > self.theta_threshold)
        return next_state, torch.ones_like(new_x), terminated

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        return state.clone()


class TorchAcrobot(TorchVecEnv):
    """Batched ``Acrobot-v1`` (Sutton 1996, book dynamics), one RK4 step of ``dt = 0.2``.

    State: ``(theta1, theta2, dtheta1, dtheta2)``; observation
    ``(cos theta1, sin theta1, cos theta2, sin theta2, dtheta1, dtheta2)``. Actions 0, 1, 2 apply
    torque -1, 0, +1 to the second joint. Reward ``-1`` per step, ``0`` on the terminal step, which
    is reached when the tip rises above the bar: ``-cos(theta1) - cos(theta1 + theta2) > 1``.
    Truncated after 500 steps. Initial state uniform in ``[-0.1, 0.1]^4``.
    """

    gym_id = "Acrobot-v1"
    state_dim = 4
    dt = 0.2
    link_length_1 = 1.0
    link_mass_1 = 1.0
    link_mass_2 = 1.0
    link_com_pos_1 = 0.5
    link_com_pos_2 = 0.5
    link_moi = 1.0
    gravity = 9.8
    max_vel_1 = 4 * math.pi
    max_vel_2 = 9 * math.pi

    def _make_spaces(self) -> tuple[spaces.Box, spaces.Space]:
        high = np.array([1.0, 1.0, 1.0, 1.0, self.max_vel_1, self.max_vel_2], dtype=np.float32)
        return spaces.Box(-high, high, dtype=np.float32), spaces.Discrete(3)

    def _initial_state(self, num: int) -> torch.Tensor:
        # Gymnasium draws the initial state in float32.
        return self._uniform(-0.1, 0.1, (num, self.state_dim)).to(torch.float32).to(self.dtype)

    def _derivatives(self, state: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
        """Time derivative of the state under a constant torque (Gymnasium's ``_dsdt``, book variant)."""
        m1, m2, l1 = self.link_mass_1, self.link_mass_2, self.link_length_1
        lc1, lc2, inertia, g = self.link_com_pos_1, self.link_com_pos_2, self.link_moi, self.gravity
        theta1, theta2, dtheta1, dtheta2 = state.unbind(-1)
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * torch.cos(theta2)) + inertia + inertia
        d2 = m2 * (lc2**2 + l1 * lc2 * torch.cos(theta2)) + inertia
        phi2 = m2 * lc2 * g * torch.cos(theta1 + theta2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * torch.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * torch.sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * torch.cos(theta1 - math.pi / 2)
            + phi2
        )
        ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * torch.sin(theta2) - phi2) / (
            m2 * lc2**2 + inertia - d2**2 / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return torch.stack([dtheta1, dtheta2, ddtheta1, ddtheta2], dim=-1)

    def _transition(
        self, state: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Actions 0, 1, 2 -> torques -1, 0, +1 (Gymnasium's AVAIL_TORQUE), without a host-built lookup table.
        torque = actions.to(state.dtype) - 1.0
        half = self.dt / 2.0
        k1 = self._derivatives(state, torque)
        k2 = self._derivatives(state + half * k1, torque)
        k3 = self._derivatives(state + half * k2, torque)
        k4 = self._derivatives(state + self.dt * k3, torque)
        integrated = state + self.dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        theta1, theta2, dtheta1, dtheta2 = integrated.unbind(-1)
        next_state = torch.stack(
            [
                wrap_angle(theta1, -math.pi, math.pi),
                wrap_angle(theta2, -math.pi, math.pi),
                dtheta1.clamp(-self.max_vel_1, self.max_vel_1),
                dtheta2.clamp(-self.max_vel_2, self.max_vel_2),
            ],
            dim=-1,
        )
        terminated = -torch.cos(next_state[:, 0]) - torch.cos(next_state[:, 1] + next_state[:, 0]) > 1.0
        rewards = terminated.to(state.dtype) - 1.0  # -1 per step, 0 on the terminal step
        return next_state, rewards, terminated

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        theta1, theta2, dtheta1, dtheta2 = state.unbind(-1)
        return torch.stack(
            [torch.cos(theta1), torch.sin(theta1), torch.cos(theta2), torch.sin(theta2), dtheta1, dtheta2], dim=-1
        )


class TorchMountainCar(TorchVecEnv):
    """Batched ``MountainCar-v0`` (Moore 1990).

    State and observation: ``(position, velocity)``. Actions 0, 1, 2 accelerate left, not at all,
    right. Reward ``-1`` per step. Terminates when ``position >= 0.5`` with ``velocity >= 0``;
    truncated after 200 steps. Initial position uniform in ``[-0.6, -0.4]``, velocity 0.
    """

    gym_id = "MountainCar-v0"
    state_dim = 2
    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.5
    goal_velocity = 0.0
    force = 0.001
    gravity = 0.0025

    def _make_spaces(self) -> tuple[spaces.Box, spaces.Space]:
        low = np.array([self.min_position, -self.max_speed], dtype=np.float32)
        high = np.array([self.max_position, self.max_speed], dtype=np.float32)
        return spaces.Box(low, high, dtype=np.float32), spaces.Discrete(3)

    def _initial_state(self, num: int) -> torch.Tensor:
        position = self._uniform(-0.6, -0.4, (num,))
        return torch.stack([position, torch.zeros_like(position)], dim=-1)

    def _transition(
        self, state: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position, velocity = state.unbind(-1)
        velocity = velocity + (actions - 1).to(state.dtype) * self.force + torch.cos(3 * position) * (-self.gravity)
        velocity = velocity.clamp(-self.max_speed, self.max_speed)
        position = (position + velocity).clamp(self.min_position, self.max_position)
        velocity = velocity.masked_fill((position == self.min_position) & (velocity < 0), 0.0)
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        return torch.stack([position, velocity], dim=-1), torch.full_like(position, -1.0), terminated

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        return state.clone()


class TorchPendulum(TorchVecEnv):
    """Batched ``Pendulum-v1`` (swing-up with limited torque).

    State: ``(theta, theta_dot)`` (theta not normalised, as in Gymnasium); observation
    ``(cos theta, sin theta, theta_dot)``. Action: torque in ``[-2, 2]`` (clipped), shape (1,).
    Reward ``-(normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2)`` with ``normalize`` mapping angles
    into ``[-pi, pi)``. Never terminates; truncated after 200 steps. Initial state uniform in
    ``[-pi, pi] x [-1, 1]``.
    """

    gym_id = "Pendulum-v1"
    state_dim = 2
    max_speed = 8.0
    max_torque = 2.0
    dt = 0.05
    gravity = 10.0
    mass = 1.0
    length = 1.0

    def _make_spaces(self) -> tuple[spaces.Box, spaces.Space]:
        high = np.array([1.0, 1.0, self.max_speed], dtype=np.float32)
        action_space = spaces.Box(-self.max_torque, self.max_torque, shape=(1,), dtype=np.float32)
        return spaces.Box(-high, high, dtype=np.float32), action_space

    def _initial_state(self, num: int) -> torch.Tensor:
        theta = self._uniform(-math.pi, math.pi, (num,))
        theta_dot = self._uniform(-1.0, 1.0, (num,))
        return torch.stack([theta, theta_dot], dim=-1)

    def _transition(
        self, state: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        theta, theta_dot = state.unbind(-1)
        torque = actions[:, 0].clamp(-self.max_torque, self.max_torque)
        normalized = torch.remainder(theta + math.pi, 2 * math.pi) - math.pi
        costs = normalized.square() + 0.1 * theta_dot.square() + 0.001 * torque.square()
        new_theta_dot = (
            theta_dot
            + (3 * self.gravity / (2 * self.length) * torch.sin(theta) + 3.0 / (self.mass * self.length**2) * torque)
            * self.dt
        )
        new_theta_dot = new_theta_dot.clamp(-self.max_speed, self.max_speed)
        new_theta = theta + new_theta_dot * self.dt
        return torch.stack([new_theta, new_theta_dot], dim=-1), -costs, torch.zeros_like(theta, dtype=torch.bool)

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        theta, theta_dot = state.unbind(-1)
        return torch.stack([torch.cos(theta), torch.sin(theta), theta_dot], dim=-1)
