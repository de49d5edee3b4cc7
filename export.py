"""``python export.py ...``: the ``bsn-export`` command (:mod:`bsn_zoo.export`), run from a checkout."""

from bsn_zoo.export import cli

if __name__ == "__main__":
    cli()
