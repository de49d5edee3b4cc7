"""Export a trained BSN policy's deterministic actions to ONNX and to a NumPy ``.npz`` file.

Both files compute what ``model.predict(obs, deterministic=True)`` computes (units fire iff ``p > 0.5``, or
output ``p`` for a policy with ``deterministic_units="mean_field"``; the action head's mode; Box actions
clipped to the bounds), with the observation normalisation of a ``VecNormalize`` run folded in: they take
*raw* observations.

ONNX graph (opset 17): input ``obs``, float32, shape ``(batch, *observation_shape)``; output ``action``:
int64 ``(batch,)`` for Discrete, int64 ``(batch, len(nvec))`` for MultiDiscrete, int8
``(batch, *shape)`` for MultiBinary, float32 ``(batch, *shape)`` for Box. Each BSN layer is a ``Gemm``
followed by ``Greater(., 0)`` and a cast of the bits to float (mean field: by a ``Sigmoid``).

Supported: ``BinaryStochasticPolicy`` (LocalPG, or PPO / A2C with the BSN policy) with binary units (the
local, learned-predictor and straight-through estimators), a ``Box`` observation space and SB3's
``FlattenExtractor``; anything else raises a ``ValueError`` naming what is not supported. Image observations
(images too small for ``NatureCNN`` are flattened) are taken channel-first, as SB3's ``VecTransposeImage``
gives them to the policy, with raw pixel values: SB3's scaling of pixels to [0, 1] is folded into the first
layer's weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.vec_env import VecNormalize

from policies.bsn import bit_affine
from policies.estimators import NoisyRectifierEstimator, StochasticTimesSmoothEstimator
from policies.policy import BinaryStochasticPolicy

try:  # optional: the deploy extra (pip install "bsn-rl[deploy]")
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # pragma: no cover - exercised only without the extra
    onnx = None

__all__ = ["OPSET", "export_numpy", "export_onnx", "policy_arrays"]

#: ONNX opset of the exported graph.
OPSET = 17


def policy_arrays(model: BaseAlgorithm, vec_normalize: VecNormalize | None = None) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` format (:mod:`deploy.numpy_policy` documents each key).

    Args:
        model: a trained model whose policy is a :class:`~policies.BinaryStochasticPolicy`.
        vec_normalize: the run's ``VecNormalize`` (its observation statistics are folded in), or ``None``.

    Raises:
        ValueError: for a policy, observation space, features extractor or estimator that export does not
            support, naming it.
    """
    policy = model.policy
    if not isinstance(policy, BinaryStochasticPolicy):
        raise ValueError(f"export needs a BinaryStochasticPolicy, got {type(policy).__name__}")
    observation_space, action_space = policy.observation_space, policy.action_space
    if not isinstance(observation_space, spaces.Box):
        raise ValueError(f"export supports Box observation spaces, got {observation_space}")
    if not isinstance(policy.pi_features_extractor, FlattenExtractor):
        raise ValueError(
            f"export supports SB3's FlattenExtractor, got {type(policy.pi_features_extractor).__name__}"
        )
    if isinstance(policy.bsn.estimator, (StochasticTimesSmoothEstimator, NoisyRectifierEstimator)):
        raise ValueError(f"export needs binary units; the {policy.estimator_name!r} estimator's are not")

    def array(tensor: Any) -> np.ndarray:
        return tensor.detach().cpu().numpy().astype(np.float32)

    arrays: dict[str, np.ndarray] = {
        "obs_shape": np.asarray(observation_space.shape, dtype=np.int64),
        "units": np.asarray(policy.deterministic_units),
    }
    for index, layer in enumerate(policy.bsn.layers):  # each as a map of the raw 0/1 bits it reads
        weight, bias = bit_affine(layer)
        arrays[f"weight_{index}"], arrays[f"bias_{index}"] = array(weight), array(bias)
    head_weight, head_bias = bit_affine(policy.action_net)  # as a map of the top layer's raw 0/1 bits
    if policy.state_dependent_std:  # the mode needs the mean rows only, not the log-std rows
        mean_rows = int(np.prod(action_space.shape))
        head_weight, head_bias = head_weight[:mean_rows], head_bias[:mean_rows]
    arrays["head_weight"], arrays["head_bias"] = array(head_weight), array(head_bias)
    if isinstance(action_space, spaces.Discrete):
        arrays["kind"] = np.asarray("discrete")
    elif isinstance(action_space, spaces.MultiDiscrete):
        arrays["kind"] = np.asarray("multidiscrete")
        arrays["nvec"] = np.asarray(action_space.nvec, dtype=np.int64).reshape(-1)
    elif isinstance(action_space, spaces.MultiBinary):
        arrays["kind"] = np.asarray("multibinary")
        arrays["action_shape"] = np.asarray(action_space.shape, dtype=np.int64)
    else:
        if policy.squash_output:
            raise ValueError("export does not support squash_output=True")
        arrays["kind"] = np.asarray("box")
        arrays["action_shape"] = np.asarray(action_space.shape, dtype=np.int64)
        arrays["action_low"] = action_space.low.astype(np.float32)
        arrays["action_high"] = action_space.high.astype(np.float32)
    if policy.normalize_images and is_image_space(observation_space):  # SB3's preprocess_obs: pixels / 255
        arrays["weight_0"] = (arrays["weight_0"] / 255.0).astype(np.float32)
    if vec_normalize is not None and vec_normalize.norm_obs:
        statistics = vec_normalize.obs_rms
        arrays["obs_mean"] = np.asarray(statistics.mean, dtype=np.float32).reshape(-1)
        arrays["obs_var"] = np.asarray(statistics.var, dtype=np.float32).reshape(-1)
        arrays["obs_eps"] = np.asarray(vec_normalize.epsilon, dtype=np.float32)
        arrays["obs_clip"] = np.asarray(vec_normalize.clip_obs, dtype=np.float32)
    return arrays


def export_numpy(model: BaseAlgorithm, path: str | Path, vec_normalize: VecNormalize | None = None) -> Path:
    """Write the policy's arrays to ``path`` (``.npz``), for :class:`deploy.numpy_policy.NumpyPolicy`."""
    path = Path(path)
    np.savez(path, **policy_arrays(model, vec_normalize))
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def export_onnx(model: BaseAlgorithm, path: str | Path, vec_normalize: VecNormalize | None = None) -> Path:
    """Write the policy's deterministic actions as an ONNX graph to ``path`` (module docstring: inputs, outputs)."""
    if onnx is None:
        raise ImportError('export to ONNX needs the onnx package; install it with: pip install "bsn-rl[deploy]"')
    arrays = policy_arrays(model, vec_normalize)
    obs_shape = [int(n) for n in arrays["obs_shape"]]
    features = int(np.prod(obs_shape))
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def constant(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    x = node("Reshape", ["obs", constant("flat_shape", np.asarray([-1, features], dtype=np.int64))], "x")
    if "obs_mean" in arrays:
        std = np.sqrt(arrays["obs_var"] + arrays["obs_eps"]).astype(np.float32)
        centred = node("Sub", [x, constant("obs_mean", arrays["obs_mean"])], "x_centred")
        scaled = node("Div", [centred, constant("obs_std", std)], "x_scaled")
        clip = arrays["obs_clip"]
        x = node("Clip", [scaled, constant("clip_low", -clip), constant("clip_high", clip)], "x_normalised")
    layers = sum(key.startswith("weight_") for key in arrays)
    zero = constant("zero", np.asarray(0.0, dtype=np.float32))
    for index in range(layers):
        weight = constant(f"weight_{index}", arrays[f"weight_{index}"])
        pre = node("Gemm", [x, weight, constant(f"bias_{index}", arrays[f"bias_{index}"])], f"pre_{index}", transB=1)
        if str(arrays["units"]) == "mean_field":
            x = node("Sigmoid", [pre], f"hidden_{index}")
        else:
            fired = node("Greater", [pre, zero], f"fired_{index}")
            x = node("Cast", [fired], f"hidden_{index}", to=TensorProto.FLOAT)
    head = node(
        "Gemm", [x, constant("head_weight", arrays["head_weight"]), constant("head_bias", arrays["head_bias"])],
        "head", transB=1,
    )
    kind = str(arrays["kind"])
    if kind == "discrete":
        node("ArgMax", [head], "action", axis=1, keepdims=0)
        output = helper.make_tensor_value_info("action", TensorProto.INT64, ["batch"])
    elif kind == "multidiscrete":
        nvec = arrays["nvec"]
        groups = [f"group_{index}" for index in range(len(nvec))]
        nodes.append(helper.make_node("Split", [head, constant("nvec", nvec)], groups, axis=1))
        picks = [node("ArgMax", [group], f"pick_{index}", axis=1, keepdims=1) for index, group in enumerate(groups)]
        node("Concat", picks, "action", axis=1)
        output = helper.make_tensor_value_info("action", TensorProto.INT64, ["batch", len(nvec)])
    else:
        shape = [int(n) for n in arrays["action_shape"]]
        reshaped = node("Reshape", [head, constant("action_shape", np.asarray([-1, *shape], dtype=np.int64))], "mode")
        if kind == "multibinary":
            bits = node("Greater", [reshaped, zero], "action_bits")
            node("Cast", [bits], "action", to=TensorProto.INT8)
            output = helper.make_tensor_value_info("action", TensorProto.INT8, ["batch", *shape])
        else:
            low = node("Max", [reshaped, constant("action_low", arrays["action_low"])], "action_low_clipped")
            node("Min", [low, constant("action_high", arrays["action_high"])], "action")
            output = helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", *shape])
    graph = helper.make_graph(
        nodes,
        "bsn_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", *obs_shape])],
        [output],
        initializers,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bsn-rl")
    onnx.checker.check_model(onnx_model)
    path = Path(path)
    onnx.save(onnx_model, path)
    return path
