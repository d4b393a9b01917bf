"""Placement: which member hosts an agent whose kind is not placed by hash (pure policies)."""
