"""Counter-based noise: uniform random numbers that are a pure function of (observation, key, unit).

Stock SB3 algorithms (PPO, A2C) collect a rollout with ``policy(obs)`` and later score it with
``policy.evaluate_actions(obs, actions)``: the hidden samples that chose each action are not passed
back. If the noise that draws the hidden units is a deterministic hash of the observation's bytes,
a per-rollout key, the layer and the unit index, the update re-creates exactly the samples of the
rollout. The hash is the 32-bit ``lowbias32`` integer mixer (C. Wellons, "Hash Prospector", 2018),
vectorised in torch so it runs on any device without host copies.

Limit (documented in docs/policy.md): two *bit-identical* observations within one rollout get the same
hidden samples. Each rollout draws a fresh key, so estimates stay unbiased across rollouts, but
repeated observations (small discrete observation spaces) do not get independent samples within one.
"""

from __future__ import annotations

import torch

__all__ = ["CounterNoise", "hash_rows", "mix32"]

_MASK32 = 0xFFFFFFFF
# lowbias32 constants (Wellons' hash-prospector, bias 0.17) and the 32-bit golden ratio (Knuth).
_MUL1, _MUL2, _GOLDEN = 0x7FEB352D, 0x846CA68B, 0x9E3779B9


def mix32(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32`` on int64 tensors holding unsigned 32-bit values; returns values in [0, 2^32)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * _MUL1) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MUL2) & _MASK32
    return x ^ (x >> 16)


def hash_rows(rows: torch.Tensor, key: int) -> torch.Tensor:
    """One 32-bit hash per row of a (batch, features) tensor, from its float32 bit pattern and ``key``.

    ``-0.0`` and ``0.0`` hash alike; everything else hashes by exact bits.
    """
    flat = rows.reshape(rows.shape[0], -1).to(torch.float32) + 0.0  # + 0.0 maps -0.0 to 0.0
    bits = flat.contiguous().view(torch.int32).to(torch.int64) & _MASK32
    position = torch.arange(bits.shape[1], device=bits.device, dtype=torch.int64)
    salted = mix32(bits ^ mix32(position * _GOLDEN + key))
    return mix32(salted.sum(dim=1) + key)


class CounterNoise:
    """Uniform noise ``u(row, layer, unit) = hash(row_hash, layer, unit) / 2^24`` in [0, 1).

    Args:
        rows: the (batch, features) tensor the noise is keyed on (preprocessed observations).
        key: a non-negative integer that changes once per rollout.

    Call it as the ``noise`` argument of :meth:`BinaryStochasticNetwork.forward`.
    """

    def __init__(self, rows: torch.Tensor, key: int) -> None:
        self.key = int(key) & _MASK32
        self.row_hash = hash_rows(rows, self.key)

    def __call__(self, layer_index: int, shape: torch.Size) -> torch.Tensor:
        _batch, units = shape
        unit = torch.arange(units, device=self.row_hash.device, dtype=torch.int64)
        counter = mix32(unit + (layer_index + 1) * _GOLDEN + self.key)
        bits = mix32(self.row_hash.unsqueeze(1) ^ counter.unsqueeze(0))
        # The top 24 bits give floats exactly representable in float32, in [0, 1).
        return (bits >> 8).to(torch.float32) * (1.0 / (1 << 24))
