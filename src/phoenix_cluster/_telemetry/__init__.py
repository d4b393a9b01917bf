"""L0: the telemetry event bus every layer reports to."""
