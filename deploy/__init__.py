"""Deploying a trained BSN policy: ONNX export and torch-free NumPy inference (:mod:`deploy.numpy_policy`)."""

from deploy.export import OPSET, export_numpy, export_onnx, policy_arrays
from deploy.numpy_policy import NumpyPolicy, layer_from_bits

__all__ = ["OPSET", "NumpyPolicy", "export_numpy", "export_onnx", "layer_from_bits", "policy_arrays"]
