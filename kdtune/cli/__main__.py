"""``python -m kdtune.cli``: the ``kdtune`` command."""

from kdtune.cli import main

main()
