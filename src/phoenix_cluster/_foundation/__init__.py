"""L0: stdlib-and-msgspec-only building blocks shared by every layer."""
