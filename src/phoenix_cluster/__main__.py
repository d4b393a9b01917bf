"""``python -m phoenix_cluster`` runs the ``phx`` command."""

from ._cli.main import main

main()
