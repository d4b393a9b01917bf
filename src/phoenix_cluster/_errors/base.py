"""The roots of Phoenix's error tree: split by whether the outcome is known.

:class:`PhoenixError` is the root; :class:`DefiniteError` means nothing happened,
:class:`IndefiniteError` that it may have; :class:`PhoenixInternalError` is a bug in
Phoenix, and :class:`ConfigError` a setting of the wrong form. ``phoenix_cluster.errors``
draws the whole tree and is where every error is imported from.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ConfigError",
    "DefiniteError",
    "IndefiniteError",
    "PhoenixError",
    "PhoenixInternalError",
]


class PhoenixError(Exception):
    """Root of every Phoenix error.

    Attributes:
        definite: ``True`` when the operation certainly had no effect.
        request_id: the call's request id, when the error belongs to a call.
    """

    code: ClassVar[str] = "phoenix_error"
    default_definite: ClassVar[bool] = True

    def __init__(
        self,
        message: str = "",
        *,
        definite: bool | None = None,
        request_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.definite = self.default_definite if definite is None else definite
        self.request_id = request_id


class DefiniteError(PhoenixError):
    """The operation did not happen. Retrying cannot apply it twice."""

    code = "definite"
    default_definite = True


class IndefiniteError(PhoenixError):
    """The operation may or may not have happened.

    Retry with the same request id: Phoenix runs a call at most once per id.
    """

    code = "indefinite"
    default_definite = False


class ConfigError(DefiniteError, ValueError):
    """A configuration value has the wrong form.

    Attributes:
        key: the setting's name, e.g. ``idle_timeout_s``.
    """

    code = "config_error"

    def __init__(self, message: str = "", *, key: str = "", definite: bool | None = None,
                 request_id: int | None = None) -> None:
        super().__init__(message, definite=definite, request_id=request_id)
        self.key = key


class PhoenixInternalError(PhoenixError):
    """An invariant inside Phoenix broke. This is a bug in Phoenix: please report it."""

    code = "internal_error"
    default_definite = False
