"""CounterNoise: uniform noise that is a pure function of (observation, key, layer, unit)."""

from __future__ import annotations

import math

import pytest
import torch

from policies.bsn import BinaryStochasticNetwork
from policies.noise import CounterNoise, hash_rows, mix32


def observations(rows: int = 2000, features: int = 4) -> torch.Tensor:
    return torch.randn(rows, features, generator=torch.Generator().manual_seed(7))


def test_same_rows_and_key_give_identical_noise() -> None:
    rows = observations()
    first, second = CounterNoise(rows, key=11), CounterNoise(rows.clone(), key=11)
    for layer in range(3):
        assert torch.equal(first(layer, torch.Size((2000, 8))), second(layer, torch.Size((2000, 8))))


def test_noise_of_a_row_does_not_depend_on_the_rest_of_the_batch() -> None:
    rows = observations()
    whole = CounterNoise(rows, key=3)(0, torch.Size((2000, 5)))
    part = CounterNoise(rows[100:150].flip(0), key=3)(0, torch.Size((50, 5)))
    assert torch.equal(part, whole[100:150].flip(0))


@pytest.mark.parametrize("change", ["key", "layer", "row"])
def test_noise_is_sensitive_to_key_layer_and_row(change: str) -> None:
    rows = observations()
    shape = torch.Size((2000, 8))
    base = CounterNoise(rows, key=5)(0, shape)
    if change == "key":
        other = CounterNoise(rows, key=6)(0, shape)
    elif change == "layer":
        other = CounterNoise(rows, key=5)(1, shape)
    else:
        nudged = rows.clone()
        nudged[:, 2] = torch.nextafter(nudged[:, 2], torch.tensor(math.inf))
        other = CounterNoise(nudged, key=5)(0, shape)
    # Independent uniforms on a 2^-24 grid coincide with probability 2^-24 per entry.
    assert (base == other).float().mean() < 1e-3
    assert abs(torch.corrcoef(torch.stack([base.flatten(), other.flatten()]))[0, 1]) < 0.02


def test_negative_zero_hashes_like_zero() -> None:
    rows = torch.tensor([[0.0, 1.0], [-0.0, 1.0]])
    hashes = hash_rows(rows, key=9)
    assert hashes[0] == hashes[1]


def kolmogorov_smirnov(values: torch.Tensor) -> float:
    """Largest distance between the empirical CDF of ``values`` and the U(0, 1) CDF."""
    ordered = values.flatten().double().sort().values
    n = ordered.numel()
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - ordered
    lower = ordered - torch.arange(0, n, dtype=torch.float64) / n
    return float(torch.maximum(upper, lower).max())


@pytest.mark.parametrize("key", [0, 1, 2**31 + 5])
def test_noise_is_uniform_on_the_unit_interval(key: int) -> None:
    """KS statistic below its 0.1% critical value 1.95 / sqrt(n); also for structured (integer) rows."""
    for rows in (observations(), torch.arange(2000.0).reshape(-1, 1).repeat(1, 4)):
        noise = CounterNoise(rows, key=key)(2, torch.Size((2000, 16)))
        assert noise.dtype == torch.float32
        assert noise.min() >= 0.0 and noise.max() < 1.0
        assert kolmogorov_smirnov(noise) < 1.95 / math.sqrt(noise.numel())


def test_units_of_one_row_are_uncorrelated() -> None:
    noise = CounterNoise(observations(), key=4)(0, torch.Size((2000, 6)))
    correlation = torch.corrcoef(noise.T)
    off_diagonal = correlation - torch.eye(6)
    assert off_diagonal.abs().max() < 4 / math.sqrt(2000)


def test_mix32_stays_in_32_bits_and_is_a_bijection_on_a_sample() -> None:
    values = torch.arange(0, 2**20, dtype=torch.int64) * 4099
    mixed = mix32(values)
    assert mixed.min() >= 0 and mixed.max() < 2**32
    assert mixed.unique().numel() == values.numel()


def test_counter_noise_lets_a_network_recreate_its_samples() -> None:
    """The rollout/update round trip of an on-policy algorithm: same observations and key, same samples."""
    net = BinaryStochasticNetwork(4, [8, 3])
    rows = observations(64)
    rollout = net(rows, noise=CounterNoise(rows, key=21))
    update = net(rows.clone(), noise=CounterNoise(rows.clone(), key=21))
    for a, b in zip(rollout.samples, update.samples, strict=True):
        assert torch.equal(a, b)
    other_key = net(rows, noise=CounterNoise(rows, key=22))
    assert not all(torch.equal(a, b) for a, b in zip(rollout.samples, other_key.samples, strict=True))
