"""L0: the classes of ``phoenix_cluster.errors``, by family (imported from there)."""
