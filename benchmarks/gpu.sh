#!/usr/bin/env bash
# Every GPU number the README quotes, in one run: about 5 minutes on one H100 with a cold
# compilation cache. Run from the repository root on a machine with a CUDA device:
#
#     bash benchmarks/gpu.sh                  # every step; PYTHON=... picks the interpreter
#     bash benchmarks/gpu.sh solve tests      # some of them: solve throughput profile tests cli
#
# Writes benchmarks/results/solve_time_cuda.md, throughput_cuda.md and .png and localpg_profile_cuda.md,
# runs every test that exercises CUDA (the ones that skip on a CPU-only machine) and trains and
# evaluates from the command line. Each step has its own time limit, so one that hangs does not cost
# the others; the exit status is 1 if any step failed.
set -u
python=${PYTHON:-python}
export PYTHONUNBUFFERED=1
steps=${*:-solve throughput profile tests cli}
status=0

step() {
    local limit=$1
    shift
    echo "== $(date +%T) $*"
    timeout "$limit" "$@" || { echo "== step failed (exit $?): $*"; status=1; }
}

wanted() { [[ " $steps " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$python" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1

# Target: CartPole-v1 solved (deterministic evaluation >= 475) in < 15 s of training.
wanted solve && step 150 "$python" -m benchmarks.solve_time --device cuda --seeds 0 1 2 3 4 \
    --out benchmarks/results/solve_time_cuda
# Target: >= 10M env-steps/s of training (collection + update), with SB3 PPO
# (RL-zoo settings, 8 envs, CPU) measured in the same run as the reference of the ratios.
wanted throughput && step 240 "$python" -m benchmarks.throughput --methods sb3_ppo_zoo_train \
    torch_cuda_bsn_collect localpg_torch_cuda_train localpg_torch_cuda_train_compiled \
    --num-envs 8 4096 65536 262144 524288 --out benchmarks/results/throughput_cuda
# Where the time of a training iteration goes at the best throughput cell.
wanted profile && step 90 "$python" -m benchmarks.profile_localpg --device cuda --num-envs 524288 \
    --compile-update --out benchmarks/results/localpg_profile_cuda.md
# The tests that skip without CUDA (device equivalence, no host syncs per step, save/load, training).
wanted tests && step 100 "$python" -m pytest -q -k cuda tests/test_envs_torch.py tests/test_envs_localpg.py \
    tests/test_localpg.py tests/test_robust_interrupt.py tests/test_robust_inputs.py tests/test_envs_benchmark.py \
    tests/test_posterior.py
# The command line on the GPU: the README's torch-backend example, then its evaluation.
if wanted cli; then
    runs=$(mktemp -d)
    step 90 bash -c "\"$python\" train.py --backend torch --device cuda -conf hyperparams/localpg_torch.yml \
        --seed 0 -f $runs --no-progress-bar && \"$python\" evaluate.py $runs/localpg/CartPole-v1_1 -n 10"
fi
exit $status
