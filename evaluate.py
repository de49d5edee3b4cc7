"""``python evaluate.py ...``: the ``bsn-evaluate`` command (:mod:`bsn_zoo.evaluate`), run from a checkout."""

from bsn_zoo.evaluate import cli

if __name__ == "__main__":
    cli()
