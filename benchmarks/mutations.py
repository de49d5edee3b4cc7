"""Mutation check of the update tests: break the update on purpose, one mutation at a time, and record
which tests go red.

Each mutation replaces one exact snippet of the source (a sign flip, a dropped term, a wrong detach,
one layer at a time) in a scratch copy of the repository, then runs the tests that must catch it. A
mutation that no test catches is a hole in the tests; the table says so and the script exits with 1.

Usage (the committed table's command is written at its top)::

    python -m benchmarks.mutations                 # every mutation
    python -m benchmarks.mutations --only layer_above_sign_flip
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXACT_TESTS = ("tests/test_localpg_exact.py",)


@dataclass(frozen=True)
class Mutation:
    """One deliberate bug.

    Attributes:
        name: short label.
        description: what the bug does, in words.
        path: the source file it edits, relative to the repository root.
        original: the exact snippet replaced (must occur once in ``path``).
        mutated: what replaces it.
        tests: the test files (or node ids) that must catch it.
    """

    name: str
    description: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...] = EXACT_TESTS


LOSS = "agents/localpg/localpg.py"
CLIPPED = "agents/localpg/losses.py"
BSN = "policies/bsn.py"
POLICY = "policies/policy.py"
POSTERIOR = "policies/posterior.py"
COUPLED_TESTS = ("tests/test_posterior_coupled.py",)

MUTATIONS = [
    Mutation(
        "layer_above_sign_flip",
        "the local loss of every layer above the first enters with the wrong sign",
        CLIPPED,
        "        losses.append(loss)\n",
        "        losses.append(loss if index == 0 else -loss)\n",
    ),
    Mutation(
        "first_layer_sign_flip",
        "the first layer's local loss enters with the wrong sign",
        CLIPPED,
        "        losses.append(loss)\n",
        "        losses.append(-loss if index == 0 else loss)\n",
    ),
    Mutation(
        "top_layer_dropped",
        "the top BSN layer's local loss is left out",
        CLIPPED,
        "        losses.append(loss)\n",
        "        losses.append(loss * 0 if index == len(sizes) - 1 else loss)\n",
    ),
    Mutation(
        "middle_layer_weighted_differently",
        "the middle layer's local loss is weighted unlike the others' (half of it)",
        CLIPPED,
        "        losses.append(loss)\n",
        "        losses.append(loss * 0.5 if index == 1 else loss)\n",
    ),
    Mutation(
        "firing_prob_dropped",
        "the estimate is h * s instead of (h - p) * s: the centring term is dropped",
        CLIPPED,
        "gradient = torch.where(active, unclipped * (value - firing_prob), 0.0)",
        "gradient = torch.where(active, unclipped * value, 0.0)",
    ),
    Mutation(
        "centred_at_half",
        "the estimate is (h - 1/2) * s instead of (h - p) * s",
        CLIPPED,
        "gradient = torch.where(active, unclipped * (value - firing_prob), 0.0)",
        "gradient = torch.where(active, unclipped * (value - 0.5), 0.0)",
    ),
    Mutation(
        "sample_leaks_gradient_down",
        "wrong detach: a stored sample carries the derivative of its pre-activation to the layer below",
        BSN,
        "                sample = given_samples[index].to(pre_activation.dtype)\n",
        "                sample = given_samples[index].to(pre_activation.dtype)\n"
        "                sample = sample + pre_activation - pre_activation.detach()\n",
    ),
    Mutation(
        "baseline_not_subtracted",
        "the per-neuron baseline is added to the signal instead of subtracted",
        LOSS,
        "return [signal - c for signal, c in zip(signals, corrections, strict=True)]",
        "return [signal + c for signal, c in zip(signals, corrections, strict=True)]",
        ("tests/test_localpg_exact.py::test_each_row_is_credited_against_its_own_layers_baseline",),
    ),
    Mutation(
        "baseline_of_the_wrong_layer",
        "each layer subtracts the per-neuron baseline of another layer",
        LOSS,
        "return [signal - c for signal, c in zip(signals, corrections, strict=True)]",
        "return [signal - c for signal, c in zip(signals, corrections[::-1], strict=True)]",
        ("tests/test_localpg_exact.py::test_each_row_is_credited_against_its_own_layers_baseline",),
    ),
    Mutation(
        "posterior_weights_swapped",
        "posterior credit: the two branches' weights q and 1 - q are swapped",
        CLIPPED,
        "weight_of_sample = torch.where(samples > 0.5, posterior, 1.0 - posterior)",
        "weight_of_sample = torch.where(samples > 0.5, 1.0 - posterior, posterior)",
    ),
    Mutation(
        "posterior_other_branch_old_prob",
        "posterior credit: the other branch's old probability is the stored sample's",
        CLIPPED,
        "other_old_log_prob = torch.log(-torch.expm1(old_log_prob))",
        "other_old_log_prob = old_log_prob",
    ),
    Mutation(
        "posterior_ignores_children",
        "posterior credit: a hidden layer's posterior ignores the layer above (q = p)",
        POLICY,
        "            ratios.append(self._action_log_ratio(output.output, actions))\n",
        "            ratios = [ratio * 0 for ratio in ratios]\n"
        "            ratios.append(self._action_log_ratio(output.output, actions))\n",
    ),
    Mutation(
        "posterior_ignores_action",
        "posterior credit: the top layer's posterior ignores the action (q = p)",
        POLICY,
        "            ratios.append(self._action_log_ratio(output.output, actions))\n",
        "            ratios.append(self._action_log_ratio(output.output, actions) * 0)\n",
    ),
    Mutation(
        "coupled_flip_sign",
        "coupled posterior credit: a lower unit's log-likelihood ratio of the action enters with the wrong sign",
        POLICY,
        "ratios.append(flip_log_ratio(samples, stored, flipped))",
        "ratios.append(-flip_log_ratio(samples, stored, flipped))",
        COUPLED_TESTS,
    ),
    Mutation(
        "coupled_noise_not_conditioned",
        "coupled posterior credit: the noise of the layers above is fresh, not drawn given the stored samples",
        POSTERIOR,
        "return torch.where(samples > 0.5, firing_prob * uniform, firing_prob + (1.0 - firing_prob) * uniform)",
        "return uniform",
        COUPLED_TESTS,
    ),
    Mutation(
        "coupled_layers_above_not_redrawn",
        "coupled posterior credit: a flip leaves the layers above at their stored samples",
        POLICY,
        "redrawn = self.bsn.estimators[index].sample(pre_activation, noise[index][part].unsqueeze(1))",
        "redrawn = output.samples[index][part].unsqueeze(1).expand_as(pre_activation)",
        COUPLED_TESTS,
    ),
    Mutation(
        "coupled_change_not_passed_up",
        "coupled posterior credit: a change of the layer above the flip does not move the layers above it",
        POLICY,
        "                    shift = difference @ weight.t()\n",
        "                    shift = 0.0 * (difference @ weight.t())\n",
        COUPLED_TESTS,
    ),
    Mutation(
        "coupled_signed_inputs_read_as_bits",
        "coupled posterior credit: a flip moves the layer above by its raw weight, also where it reads signed inputs",
        POLICY,
        "weights = [bit_affine(self.bsn.layers[index])[0] for index in above]",
        "weights = [self.bsn.layers[index].weight for index in above]",
        COUPLED_TESTS,
    ),
    Mutation(
        "signed_head_read_as_bits",
        "posterior credit of the top layer: a flip moves the action head by its raw weight, also where it reads signs",
        POLICY,
        "flip_shifts(top_samples, bit_affine(self.action_net)[0])",
        "flip_shifts(top_samples, self.action_net.weight)",
        EXACT_TESTS,
    ),
    Mutation(
        "coupled_signed_head_read_as_bits",
        "coupled posterior credit: a flip reaching the top moves the action head by its raw weight, also where it "
        "reads signs",
        POLICY,
        "for index in above] + [bit_affine(self.action_net)[0]]",
        "for index in above] + [self.action_net.weight]",
        COUPLED_TESTS,
    ),
    Mutation(
        "coupled_option_ignored",
        "LocalPG(coupled_posterior=True) credits the Markov-blanket posterior",
        LOSS,
        "        if not self.coupled_posterior:\n",
        "        if True:\n",
        COUPLED_TESTS,
    ),
    Mutation(
        "action_head_sign_flip",
        "the action head's surrogate enters with the wrong sign",
        LOSS,
        "action_loss = -torch.min(advantages * ratio, advantages * ratio.clamp(1 - clip_range, 1 + clip_range)).mean()",
        "action_loss = torch.min(advantages * ratio, advantages * ratio.clamp(1 - clip_range, 1 + clip_range)).mean()",
    ),
    Mutation(
        "stock_ppo_scores_with_current_parameters",
        "stock PPO/A2C re-draw the hidden samples with the current parameters instead of the behaviour copy",
        POLICY,
        "            output = self.bsn(pi_features, given_samples=self.behaviour_samples(obs, noise))\n",
        "            output = self.bsn(pi_features, noise=noise)\n",
        ("tests/test_policy.py::test_stock_algorithms_score_the_samples_that_acted_in_every_minibatch_and_epoch",),
    ),
    Mutation(
        "stock_log_prob_without_hidden_units",
        "stock PPO/A2C: the returned log-probability leaves out the hidden units' (action head only)",
        POLICY,
        "        return output.log_prob if self.bsn.is_local else 0.0\n",
        "        return 0.0\n",
        ("tests/test_policy.py::test_stock_algorithms_apply_the_local_estimator_in_every_layer",),
    ),
]


def scratch_copy(destination: Path) -> None:
    """The working tree's tracked and untracked (not ignored) files, copied to ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    for relative in filter(None, listed):
        source = ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def apply(mutation: Mutation, tree: Path) -> None:
    path = tree / mutation.path
    text = path.read_text()
    count = text.count(mutation.original)
    if count != 1:
        raise SystemExit(f"mutation {mutation.name}: its snippet occurs {count} times in {mutation.path}; expected 1")
    path.write_text(text.replace(mutation.original, mutation.mutated))


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[list[str], int]:
    """(failed test ids, tests run) of ``pytest -x tests`` in ``tree``: it stops at the first failure."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *tests],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    failed = re.findall(r"^FAILED (\S+)", result.stdout, flags=re.MULTILINE)
    counts = re.findall(r"(\d+) (passed|failed)", result.stdout.strip().splitlines()[-1] if result.stdout else "")
    return failed, sum(int(n) for n, _kind in counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=[m.name for m in MUTATIONS], help="run these mutations only")
    parser.add_argument("--out", default="benchmarks/results/mutations.md", help="markdown table written here")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.only is None or m.name in args.only]
    command = " ".join(["python -m benchmarks.mutations", *(sys.argv[1:] if argv is None else argv)])
    rows, missed = [], []
    start = time.perf_counter()
    for mutation in chosen:
        with tempfile.TemporaryDirectory() as scratch:
            tree = Path(scratch)
            scratch_copy(tree)
            apply(mutation, tree)
            failed, total = run_tests(tree, mutation.tests)
        caught = bool(failed)
        if not caught:
            missed.append(mutation.name)
        examples = ", ".join(f"`{name.split('::', 1)[-1]}`" for name in failed)
        targets = ", ".join(f"`{test}`" for test in mutation.tests)
        rows.append(
            f"| {mutation.name} | {mutation.description} | `{mutation.path}` | {targets} | "
            f"{'caught' if caught else '**not caught**'} | {total} | {examples} |"
        )
        print(f"{mutation.name}: {'caught by ' + failed[0] if failed else 'NOT CAUGHT'} ({total} run)", flush=True)
    minutes = (time.perf_counter() - start) / 60
    text = "\n".join(
        [
            "# Mutation check of the update tests",
            "",
            f"Command: `{command}` ({minutes:.0f} min on a 2-core machine). Each row breaks the code in one "
            "place, in a scratch copy of the repository, and runs the tests that must catch it, stopping at the "
            "first failure (`pytest -x`): a caught mutation names the first test that failed, after how many "
            "tests ran.",
            "",
            "| mutation | what it breaks | file | tests | result | tests run | first failing test |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
