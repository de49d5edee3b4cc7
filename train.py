"""``python train.py ...``: the ``bsn-train`` command (:mod:`bsn_zoo.train`), run from a checkout."""

from bsn_zoo.train import cli

if __name__ == "__main__":
    cli()
