"""TensorBoard output of a short run: every documented key is present with finite values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from cli_support import cli_docs, read_events, scalar_steps
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from bsn_zoo.config import validate_config
from bsn_zoo.run import run_training

#: scalar keys documented in the TensorBoard table of docs/tensorboard.md (``<l>`` is a BSN layer index).
SCALARS = [
    "rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps",
    "train/loss", "train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/approx_kl",
    "train/clip_fraction", "train/clip_range", "train/explained_variance", "train/learning_rate",
    "eval/mean_reward", "eval/mean_ep_length",
    "bsn/hidden_loss", "bsn/hidden_entropy", "bsn/unit_clip_fraction", "bsn/predictor_loss",
    "bsn/baseline_explained_variance",
    "bsn/layer<l>/firing_rate", "bsn/layer<l>/frac_always_on", "bsn/layer<l>/frac_never_on",
    "bsn/layer<l>/mean_abs_h_minus_p", "bsn/layer<l>/grad_snr", "bsn/layer<l>/update_norm",
    "bsn/layer<l>/approx_kl", "bsn/layer<l>/flip_influence", "bsn/layer<l>/flip_reach",
]
#: histogram keys documented in the TensorBoard table of docs/tensorboard.md.
HISTOGRAMS = ["bsn/firing_prob_layer<l>"]
LAYERS = 2


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list:
    """TensorBoard events of two 512-step LocalPG runs that together exercise every documented key.

    The first uses the local estimator with the learned per-neuron baseline, the second the learned
    predictor (``bsn/unit_clip_fraction`` belongs to the former, ``bsn/predictor_loss`` to the latter).
    """
    collected = []
    for estimator, baseline in (("local", "learned"), ("learned_predictor", "value")):
        run_dir = tmp_path_factory.mktemp(f"tb_{estimator}")
        config = validate_config({
            "n_timesteps": 512, "n_envs": 2, "seed": 0, "eval_freq": 256, "eval_episodes": 2, "save_freq": 0,
            "n_steps": 64, "batch_size": 64, "n_epochs": 2,
            "policy_kwargs": {"net_arch": [8] * LAYERS, "estimator": estimator, "baseline": baseline},
        })
        result = run_training(config, run_dir)
        assert Path(result["tensorboard_dir"]) == run_dir / "tb" / "LocalPG_1"
        collected += read_events(result["tensorboard_dir"])
    return collected


def _expand(keys: list[str]) -> list[str]:
    return [key.replace("<l>", str(layer)) for key in keys for layer in range(LAYERS if "<l>" in key else 1)]


def test_every_documented_scalar_is_logged_with_finite_values(events: list) -> None:
    scalars = scalar_steps(events)
    assert [key for key in _expand(SCALARS) if key not in scalars] == []
    not_finite = {key: values for key, values in scalars.items() if not all(math.isfinite(v) for _, v in values)}
    assert not_finite == {}
    assert all(step > 0 for values in scalars.values() for step, _ in values)


def test_every_logged_scalar_is_documented(events: list) -> None:
    assert sorted(set(scalar_steps(events)) - set(_expand(SCALARS))) == []


def test_firing_probability_histograms_are_logged(events: list) -> None:
    histograms: dict[str, list] = {}
    for event in events:
        for value in event.summary.value:
            if value.WhichOneof("value") == "histo":
                histograms.setdefault(value.tag, []).append(value.histo)
    assert sorted(histograms) == sorted(_expand(HISTOGRAMS))
    for histos in histograms.values():
        assert all(0.0 <= histo.min <= histo.max <= 1.0 and histo.num > 0 for histo in histos)


def test_hyperparameters_are_logged(events: list) -> None:
    plugin = [value for event in events for value in event.summary.value
              if value.metadata.plugin_data.plugin_name == "hparams"]
    experiment = next(value for value in plugin if value.tag == "_hparams_/experiment")
    content = experiment.metadata.plugin_data.content
    for name in (b"algo", b"env", b"learning_rate", b"n_steps", b"policy_kwargs", b"rollout/ep_rew_mean"):
        assert name in content
    start = next(value for value in plugin if value.tag == "_hparams_/session_start_info")
    hparams = HParamsPluginData.FromString(start.metadata.plugin_data.content).session_start_info.hparams
    # integers and booleans read as written, not as floats ("64.000"); floats stay numbers
    assert (hparams["n_steps"].string_value, hparams["normalize"].string_value) == ("64", "False")
    assert hparams["gamma"].number_value == pytest.approx(0.99)


def test_every_key_is_documented() -> None:
    text = cli_docs("tensorboard.md", "| TensorBoard key |")
    assert [key for key in SCALARS + HISTOGRAMS if f"| `{key}`" not in text] == []
