"""The experiment kit: run folders, hyperparameter files, callbacks, evaluation, sweeps and tuning.

In the spirit of RL Baselines3 Zoo: ``bsn_zoo`` turns the algorithms of :mod:`agents` and the policies of
:mod:`policies` into reproducible command-line experiments. Its commands are ``bsn-train``, ``bsn-evaluate``
and ``bsn-export`` (``train.py``, ``evaluate.py`` and ``export.py`` at the repository root are thin shims).
"""
