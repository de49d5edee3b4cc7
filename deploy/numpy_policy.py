"""A trained BSN policy's deterministic actions with NumPy alone (no torch): copy this file to deploy.

The policy is read from the ``.npz`` file that :func:`deploy.export.export_numpy` writes. In deterministic
mode a binary stochastic unit fires iff its firing probability exceeds 1/2, i.e. iff its pre-activation
is positive, so the forward pass is:

* observation normalisation, when the run used ``VecNormalize``: ``clip((obs - mean) / sqrt(var + eps))``
  (observations shaped ``(batch, *obs_shape)`` or ``obs_shape``; images channel-first);
* the first BSN layer: a real matrix product, ``a_0 = W_0 x + b_0``, ``h_0 = 1[a_0 > 0]``;
* every later layer reads bits, so its pre-activation is the sum of the weight columns of the units that
  fired: ``a_l = b_l + sum_{j: h_{l-1, j} = 1} W_l[:, j]``, with no multiplication (:func:`layer_from_bits`);
* the action head, a linear map of the top layer's bits (again a column sum), then the distribution's
  mode: ``argmax`` (Discrete, per group for MultiDiscrete), ``logit > 0`` (MultiBinary), or the Gaussian
  mean clipped to the action bounds (Box).

A policy exported with ``deterministic_units="mean_field"`` (``units`` in the file) passes each layer's firing
probabilities ``p_l = sigmoid(a_l)`` up instead of its bits: every layer above the first and the head are then
real matrix products.

Arrays in the file (float32 unless noted): ``units`` (str: threshold, mean_field; a file without it: threshold);
``weight_<l>``, ``bias_<l>`` for each BSN layer ``l``;
``head_weight``, ``head_bias``; ``kind`` (str: discrete, multidiscrete, multibinary, box); ``nvec``
(int64, MultiDiscrete's group sizes); ``action_low``, ``action_high``, ``action_shape`` (int64, Box);
``obs_shape`` (int64); with normalisation ``obs_mean``, ``obs_var``, ``obs_eps``, ``obs_clip``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["NumpyPolicy", "layer_from_bits"]


def layer_from_bits(weight: np.ndarray, bias: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Pre-activation of a layer whose input is one row of bits: ``bias + sum of weight[:, j]`` over fired ``j``.

    Args:
        weight: (units_out, units_in) float32.
        bias: (units_out,) float32.
        bits: (units_in,) bool, the units of the layer below that fired.
    """
    return bias + weight[:, np.flatnonzero(bits)].sum(axis=1, dtype=np.float32)


class NumpyPolicy:
    """Deterministic actions of an exported BSN policy.

    Args:
        path: the ``.npz`` file written by :func:`deploy.export.export_numpy`.
    """

    def __init__(self, path: str | Path) -> None:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        self.kind = str(arrays["kind"])
        self.units = str(arrays.get("units", "threshold"))
        layers = sum(key.startswith("weight_") for key in arrays)
        self.weights = [arrays[f"weight_{index}"] for index in range(layers)]
        self.biases = [arrays[f"bias_{index}"] for index in range(layers)]
        self.head_weight, self.head_bias = arrays["head_weight"], arrays["head_bias"]
        self.obs_shape = tuple(int(n) for n in arrays["obs_shape"])
        self.nvec = arrays.get("nvec")
        self.action_low, self.action_high = arrays.get("action_low"), arrays.get("action_high")
        self.action_shape = tuple(int(n) for n in arrays.get("action_shape", ()))
        self.obs_mean = arrays.get("obs_mean")
        if self.obs_mean is not None:
            self.obs_std = np.sqrt(arrays["obs_var"] + arrays["obs_eps"]).astype(np.float32)
            self.obs_clip = float(arrays["obs_clip"])

    def _normalised(self, observations: np.ndarray) -> np.ndarray:
        observations = np.asarray(observations, dtype=np.float32)
        if observations.shape[observations.ndim - len(self.obs_shape):] != self.obs_shape:
            raise ValueError(f"observations of shape {observations.shape} do not end in the policy's observation "
                             f"shape {self.obs_shape} (images: channel-first, np.moveaxis(obs, -1, -3))")
        rows = observations.reshape(-1, int(np.prod(self.obs_shape)))
        if self.obs_mean is None:
            return rows
        return np.clip((rows - self.obs_mean) / self.obs_std, -self.obs_clip, self.obs_clip).astype(np.float32)

    def hidden_units(self, observations: np.ndarray) -> list[np.ndarray]:
        """Every BSN layer's deterministic output (float32, (batch, units)) for a batch of observations: its
        bits as 0/1, or with ``units == "mean_field"`` its firing probabilities."""
        units = []
        x = self._normalised(observations)
        for weight, bias in zip(self.weights, self.biases, strict=True):
            # A product with a 0/1 matrix is the column sum of layer_from_bits, for a whole batch at once.
            pre_activation = x @ weight.T + bias
            if self.units == "mean_field":
                x = (0.5 + 0.5 * np.tanh(0.5 * pre_activation)).astype(np.float32)  # sigmoid, without overflow
            else:
                x = (pre_activation > 0).astype(np.float32)
            units.append(x)
        return units

    def predict(self, observations: np.ndarray) -> np.ndarray:
        """Actions for a batch of observations (batch, *obs_shape) or one observation (*obs_shape)."""
        single = np.ndim(observations) == len(self.obs_shape)
        top = self.hidden_units(observations)[-1]
        actions = self._head(top @ self.head_weight.T + self.head_bias)
        return actions[0] if single else actions

    def act(self, observation: np.ndarray) -> np.ndarray:
        """One observation's action, the way a firmware port computes it: every layer above the first adds
        the weight columns of the units that fired below (:func:`layer_from_bits`). Mean field: as
        :meth:`predict` (its layers read probabilities, not bits)."""
        if self.units == "mean_field":
            return self.predict(observation)
        x = self._normalised(observation)[0]
        bits = self.weights[0] @ x + self.biases[0] > 0
        for weight, bias in zip(self.weights[1:], self.biases[1:], strict=True):
            bits = layer_from_bits(weight, bias, bits) > 0
        return self._head(layer_from_bits(self.head_weight, self.head_bias, bits)[None])[0]

    def _head(self, outputs: np.ndarray) -> np.ndarray:
        """The action distribution's mode for each row of the head's outputs (batch, outputs)."""
        if self.kind == "discrete":
            return outputs.argmax(axis=1)
        if self.kind == "multidiscrete":
            groups = np.split(outputs, np.cumsum(self.nvec)[:-1], axis=1)
            return np.stack([group.argmax(axis=1) for group in groups], axis=1)
        if self.kind == "multibinary":
            return (outputs > 0).astype(np.int8).reshape(len(outputs), *self.action_shape)
        clipped = np.clip(outputs.reshape(len(outputs), *self.action_shape), self.action_low, self.action_high)
        return clipped.astype(np.float32)
