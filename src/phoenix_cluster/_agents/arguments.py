"""What a message may carry, checked at the API boundary: arguments and results.

Every annotated parameter and return type of an agent method is checked with msgspec:
at the caller before anything is queued or sent (so a cast with a wrong argument fails
at its sender, not in a log), at the owner before it queues what a peer sent
(:func:`check_payload`), and again at the agent, which converts what msgpack
cannot represent exactly (a Struct arrives as a dict, a tuple as a list). A value that
msgpack cannot encode is named, and one size limit, ``max_message_bytes``, applies to
the encoded arguments and to the result, on an embedded node as on a cluster. Every
failure is a :class:`~phoenix_cluster.errors.SerializationError` naming the kind, the
method and the argument.

The checks of a method are built once, with its :class:`~.agent.MethodSpec`; a value
whose type is exactly its annotation's class (``int`` for ``by: int``) passes with one
identity test, so the local call path stays fast.

Must not import the runtime.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import SerializationError

__all__ = [
    "DECODED_EXACTLY",
    "ENCODE_ERRORS",
    "ValueCheck",
    "check_arguments",
    "check_payload",
    "convert_arguments",
    "encode_arguments",
    "encode_result",
    "exact_signature",
    "parameter_checks",
    "value_check",
]

ENCODE_ERRORS = (msgspec.EncodeError, TypeError, ValueError, OverflowError)
"""What msgspec's encoder raises for a value msgpack cannot carry."""

KEYWORD_ONLY = 1 << 30
"""The ``position`` of a keyword-only parameter: never matched by a positional argument."""

# Annotations that accept whatever msgpack decodes: nothing to check.
_ANYTHING: tuple[object, ...] = (Any, object, inspect.Parameter.empty)
# Classes a value can be tested against with ``type(v) is cls`` before asking msgspec.
_EXACT: tuple[type, ...] = (int, str, bool, bytes, float, list, dict, type(None))


class ValueCheck:
    """How one parameter (or the return value) is checked and converted.

    Attributes:
        name: the parameter's name, or ``"return value"``.
        position: its index among positional arguments (:data:`KEYWORD_ONLY` if none).
        type: the annotation msgspec checks against.
        exact: a class whose instances pass without asking msgspec, or ``None``.
    """

    __slots__ = ("exact", "name", "position", "type")

    def __init__(self, name: str, position: int, tp: Any) -> None:
        self.name = name
        self.position = position
        self.type = tp
        self.exact: type | None = None
        if isinstance(tp, type) and (tp in _EXACT or issubclass(tp, msgspec.Struct)):
            # (list and dict only when bare: ``list[int]`` is not a class.)
            self.exact = tp

    def convert(self, value: Any) -> Any:
        """The value as its annotation's type.

        Raises:
            msgspec.ValidationError: it does not match.
        """
        if type(value) is self.exact:
            return value
        return msgspec.convert(value, self.type)

    def __repr__(self) -> str:
        return f"<ValueCheck {self.name}: {self.type!r}>"


def value_check(name: str, position: int, tp: Any) -> ValueCheck | None:
    """The check of one annotation, or ``None`` if it accepts anything or msgspec cannot
    check it (a class msgspec does not know: such values travel as plain msgpack)."""
    if tp in _ANYTHING:
        return None
    try:
        msgspec.msgpack.Decoder(tp)
    except TypeError:
        return None
    return ValueCheck(name, position, tp)


def parameter_checks(fn: Callable[..., Any], hints: dict[str, Any]
                     ) -> tuple[tuple[str, ...], tuple[ValueCheck, ...]]:
    """``(positional parameter names, checks of the annotated ones)`` of a method."""
    names: list[str] = []
    checks: list[ValueCheck] = []
    positional = True
    for p in list(inspect.signature(fn).parameters.values())[1:]:  # drop self
        if p.kind is p.VAR_POSITIONAL:
            positional = False
            continue
        if p.kind is p.VAR_KEYWORD:
            continue
        position = KEYWORD_ONLY
        if positional and p.kind is not p.KEYWORD_ONLY:
            position = len(names)
            names.append(p.name)
        if p.name in hints:
            check = value_check(p.name, position, hints[p.name])
            if check is not None:
                checks.append(check)
    return tuple(names), tuple(checks)


DECODED_EXACTLY: tuple[type | None, ...] = (int, str, bool, bytes, list, dict, type(None))
"""Classes msgpack decodes to exactly: arguments of these need no conversion at the agent
(they were checked at the caller)."""


def exact_signature(names: tuple[str, ...], checks: tuple[ValueCheck, ...]
                    ) -> tuple[type, ...] | None:
    """The argument classes of a call that passes every check at a glance: each positional
    parameter's exact class, when every one has one (else ``None``: always check)."""
    exact = {c.name: c.exact for c in checks if c.position < KEYWORD_ONLY}
    if len(exact) != len(names) or any(exact[n] is None for n in names):
        return None
    return tuple(t for n in names if (t := exact[n]) is not None)


def _wrong(kind: str, method: str, name: str, exc: Exception) -> SerializationError:
    what = name if name == "return value" else f"argument {name!r}"
    return SerializationError(f"{what} of {kind}.{method}: {exc}", kind=kind, method=method,
                              argument=name)


def check_arguments(kind: str, method: str, checks: tuple[ValueCheck, ...],
                    args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> None:
    """Check the arguments given against the method's annotations (caller side).

    Raises:
        SerializationError: an argument does not match its annotation.
    """
    for check in checks:
        position = check.position
        if position < len(args):
            value = args[position]
        elif check.name in kwargs:
            value = kwargs[check.name]
        else:
            continue  # left to its default (or to the call's TypeError)
        if type(value) is msgspec.Raw:
            continue  # already encoded (pub/sub splices messages in): the agent checks it
        try:
            check.convert(value)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            raise _wrong(kind, method, check.name, exc) from None


def check_payload(kind: str, method: str, checks: tuple[ValueCheck, ...], payload: bytes,
                  decode: Callable[[bytes], Any]) -> None:
    """Check arguments that arrived from another node, before they are queued: they
    must decode as msgpack ``[args, kwargs]`` and match the method's annotations. A
    well-behaved caller checked them already (:func:`check_arguments`); this catches a
    peer that did not (another version, a hand-made frame), so a mistyped argument is a
    :class:`SerializationError` at the caller, not a surprise in the handler.

    Raises:
        SerializationError: not msgpack, not ``[args, kwargs]``, or an argument does not
            match its annotation; nothing was queued.
    """
    try:
        decoded = decode(payload)
    except (msgspec.DecodeError, ValueError) as exc:
        raise SerializationError(f"the arguments of {kind}.{method} are not msgpack: {exc}",
                                 kind=kind, method=method) from None
    if not (isinstance(decoded, list) and len(decoded) == 2
            and isinstance(decoded[0], list) and isinstance(decoded[1], dict)):
        raise SerializationError(f"the arguments of {kind}.{method} are not [args, kwargs]",
                                 kind=kind, method=method)
    if checks:
        check_arguments(kind, method, checks, decoded[0], decoded[1])


def convert_arguments(kind: str, method: str, checks: tuple[ValueCheck, ...],
                      args: list[Any], kwargs: dict[str, Any]) -> None:
    """Turn decoded msgpack values into the annotated types, in place (agent side).

    Raises:
        SerializationError: an argument does not match its annotation.
    """
    for check in checks:
        position = check.position
        try:
            if position < len(args):
                args[position] = check.convert(args[position])
            elif check.name in kwargs:
                kwargs[check.name] = check.convert(kwargs[check.name])
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            raise _wrong(kind, method, check.name, exc) from None


def encode_arguments(kind: str, method: str, names: tuple[str, ...],
                     args: tuple[Any, ...], kwargs: dict[str, Any],
                     encode: Callable[[Any], bytes], limit: int) -> bytes:
    """``[args, kwargs]`` as msgpack, at most ``limit`` bytes.

    Raises:
        SerializationError: an argument cannot be encoded (it is named), or the
            encoded arguments are larger than ``limit`` (``max_message_bytes``).
    """
    try:
        payload = encode((args, kwargs))
    except ENCODE_ERRORS as exc:
        raise _unencodable(kind, method, names, args, kwargs, encode, exc) from None
    if len(payload) > limit:
        raise SerializationError(
            f"arguments of {kind}.{method} are {len(payload):,} bytes encoded, over "
            f"max_message_bytes {limit:,}; nothing was sent",
            kind=kind, method=method)
    return payload


def encode_result(kind: str, method: str, check: ValueCheck | None, result: Any,
                  encode: Callable[[Any], bytes], limit: int) -> bytes:
    """A handler's result as msgpack, checked against its return annotation.

    Raises:
        SerializationError: the result does not match the annotation, cannot be
            encoded, or is larger than ``limit``.
    """
    if check is not None:
        try:
            check.convert(result)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            raise _wrong(kind, method, "return value", exc) from None
    try:
        out = encode(result)
    except ENCODE_ERRORS as exc:
        raise _wrong(kind, method, "return value", exc) from None
    if len(out) > limit:
        raise SerializationError(
            f"return value of {kind}.{method} is {len(out):,} bytes encoded, over "
            f"max_message_bytes {limit:,}",
            kind=kind, method=method, argument="return value")
    return out


def _unencodable(kind: str, method: str, names: tuple[str, ...], args: tuple[Any, ...],
                 kwargs: dict[str, Any], encode: Callable[[Any], bytes],
                 exc: Exception) -> SerializationError:
    """Find the argument that cannot be encoded (only on the failure path)."""
    named = [(names[i] if i < len(names) else f"#{i}", v) for i, v in enumerate(args)]
    for name, value in [*named, *kwargs.items()]:
        try:
            encode(value)
        except ENCODE_ERRORS as inner:
            return SerializationError(
                f"argument {name!r} of {kind}.{method} cannot be encoded as msgpack: "
                f"{inner} (send plain data or msgspec Structs); nothing was sent",
                kind=kind, method=method, argument=name)
    return SerializationError(f"arguments of {kind}.{method} cannot be encoded: {exc}",
                              kind=kind, method=method)
