"""Binary stochastic neurons, their gradient estimators and baselines, and SB3-compatible policies."""

from policies.baselines import (
    BASELINES,
    Baseline,
    LearnedBaseline,
    NoBaseline,
    OptimalBaseline,
    RunningMeanBaseline,
    make_baseline,
)
from policies.bsn import DETERMINISTIC_UNITS, BinaryStochasticNetwork, BSNOutput, SignedInputLinear, bit_affine
from policies.estimators import (
    ESTIMATORS,
    Estimator,
    LearnedPredictorEstimator,
    LocalEstimator,
    NoisyRectifierEstimator,
    StochasticTimesSmoothEstimator,
    StraightThroughEstimator,
    bernoulli_log_prob,
    local_gradient,
    make_estimator,
)
from policies.noise import CounterNoise
from policies.policy import BinaryStochasticPolicy
from policies.posterior import bernoulli_children_log_ratio

__all__ = [
    "BASELINES",
    "DETERMINISTIC_UNITS",
    "ESTIMATORS",
    "BSNOutput",
    "Baseline",
    "BinaryStochasticNetwork",
    "BinaryStochasticPolicy",
    "CounterNoise",
    "Estimator",
    "LearnedBaseline",
    "LearnedPredictorEstimator",
    "LocalEstimator",
    "NoBaseline",
    "NoisyRectifierEstimator",
    "OptimalBaseline",
    "RunningMeanBaseline",
    "SignedInputLinear",
    "StochasticTimesSmoothEstimator",
    "StraightThroughEstimator",
    "bernoulli_children_log_ratio",
    "bernoulli_log_prob",
    "bit_affine",
    "local_gradient",
    "make_baseline",
    "make_estimator",
]
