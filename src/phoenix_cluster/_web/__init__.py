"""L7: the node's read-only HTTP endpoint: metrics, health, JSON API, live dashboard.

Only the light handle is imported here; the HTTP stack loads when an endpoint starts.
"""

from .endpoint import HttpEndpoint, check_http_address, check_web_extra, is_loopback

__all__ = ["HttpEndpoint", "check_http_address", "check_web_extra", "is_loopback"]
