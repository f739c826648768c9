"""``python -m vocalatent``: the same as the ``vocalatent`` command."""

from .cli import main

main(prog_name="vocalatent")
