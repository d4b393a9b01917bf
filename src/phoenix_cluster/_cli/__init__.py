"""L9: the ``phx`` command line."""
