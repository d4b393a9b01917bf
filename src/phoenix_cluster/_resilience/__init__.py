"""Resilience primitives (L0): supervision trees, and later backoff, breakers and bulkheads."""
