"""Typed errors at the API boundary: what a message may carry, checked with msgspec.

Every annotated parameter and return type is validated (and converted where msgpack
cannot represent the type exactly), an unencodable argument is named, and one message
size limit holds on an embedded node as on a cluster.
"""

from __future__ import annotations

import re

import msgspec
import pytest

import phoenix_cluster as phx
from phoenix_cluster import errors


class Point(msgspec.Struct):
    x: int
    y: int


class Typed(phx.Agent, kind="tests.typed"):
    def __init__(self) -> None:
        self.total = 0.0
        self.calls = 0

    async def add(self, by: int, *, scale: float = 1.0) -> float:
        self.calls += 1
        self.total += by * scale
        return self.total

    async def move(self, p: Point, steps: list[int]) -> Point:
        self.calls += 1
        return Point(p.x + sum(steps), p.y)

    async def blob(self, data: bytes) -> int:
        self.calls += 1
        return len(data)

    async def make(self, n: int) -> bytes:
        self.calls += 1
        return b"x" * n

    async def lies(self) -> int:
        self.calls += 1
        return "not an int"  # type: ignore[return-value]

    async def keep(self, first: int, value: object = None) -> None:
        self.calls += 1

    async def count(self) -> int:
        return self.calls


async def test_a_wrong_argument_type_is_a_serialization_error_naming_it() -> None:
    async with phx.Node() as node:
        ref = node.ref(Typed, "t")
        with pytest.raises(phx.SerializationError) as info:
            await ref.add("5")
        err = info.value
        assert isinstance(err, phx.DefiniteError) and err.definite
        assert (err.kind, err.method, err.argument) == ("tests.typed", "add", "by")
        assert str(err) == "argument 'by' of tests.typed.add: Expected `int`, got `str`"
        with pytest.raises(phx.SerializationError, match="argument 'scale'"):
            await ref.add(1, scale="big")
        with pytest.raises(phx.SerializationError, match="argument 'by'"):
            await ref.add(by=True)  # msgspec is strict: a bool is not an int
        with pytest.raises(phx.SerializationError, match=r"argument 'steps'.*\$\[1\]"):
            await ref.move(Point(0, 0), [1, "2"])
        # A cast with a wrong argument fails at its sender too, before anything is queued.
        with pytest.raises(phx.SerializationError, match="argument 'by'"):
            await ref.add.cast("5")
        assert await ref.count() == 0  # none of them ran


async def test_annotated_values_are_converted() -> None:
    async with phx.Node() as node:
        ref = node.ref(Typed, "c")
        assert await ref.add(2, scale=2) == 4.0  # an int is a valid float
        assert await ref.move({"x": 1, "y": 2}, (3, 4)) == Point(8, 2)
        with pytest.raises(phx.SerializationError, match=r"argument 'p'.*y"):
            await ref.move({"x": 1}, [])


async def test_a_result_of_the_wrong_type_fails_the_call_and_rolls_back() -> None:
    async with phx.Node() as node:
        ref = node.ref(Typed, "r")
        with pytest.raises(phx.SerializationError) as info:
            await ref.lies()
        assert info.value.argument == "return value" and info.value.definite
        assert "return value of tests.typed.lies: Expected `int`, got `str`" in str(info.value)
        assert await ref.count() == 0  # the handler's change was rolled back


async def test_an_unencodable_argument_is_named() -> None:
    async with phx.Node() as node:
        ref = node.ref(Typed, "u")
        with pytest.raises(phx.SerializationError,
                           match=r"argument 'value' of tests\.typed\.keep cannot be encoded"):
            await ref.keep(1, {1j})
        with pytest.raises(phx.SerializationError, match="argument 'value'") as info:
            await ref.keep.cast(1, value=object())
        assert info.value.definite and info.value.argument == "value"
        with pytest.raises(phx.SerializationError, match="Expected `bytes`, got `set`"):
            await ref.blob({1, 2})
        assert await ref.count() == 0


async def test_one_message_size_limit_states_size_and_limit() -> None:
    async with phx.Node(max_message_bytes=1_000) as node:
        ref = node.ref(Typed, "s")
        assert await ref.blob(b"x" * 900) == 900
        with pytest.raises(phx.SerializationError) as info:
            await ref.blob(b"x" * 2_000)
        assert re.search(r"arguments of tests\.typed\.blob are 2,0\d\d bytes encoded, over "
                         r"max_message_bytes 1,000; nothing was sent", str(info.value))
        with pytest.raises(phx.SerializationError, match="over max_message_bytes 1,000"):
            await ref.blob.cast(b"x" * 2_000)
        with pytest.raises(phx.SerializationError,
                           match=r"return value of tests\.typed\.make is 2,00\d bytes"):
            await ref.make(2_000)
        assert await ref.count() == 1


async def test_the_default_limit_is_the_clusters() -> None:
    """The embedded node refuses what a cluster's transport would (16 MiB)."""
    assert phx.Settings().max_message_bytes == 16 * 1024 * 1024
    assert phx.Settings().max_frame_bytes >= phx.Settings().max_message_bytes + 64 * 1024
    async with phx.Node() as node:
        with pytest.raises(phx.SerializationError, match="over max_message_bytes 16,777,216"):
            await node.ref(Typed, "big").blob(b"x" * (17 * 1024 * 1024))


def test_every_error_class_agrees_on_code_and_definite() -> None:
    classes = [getattr(errors, name) for name in errors.__all__
               if isinstance(getattr(errors, name), type)]
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        if issubclass(cls, phx.DefiniteError):
            assert cls.default_definite is True, cls
        elif issubclass(cls, phx.IndefiniteError) or cls is phx.PhoenixInternalError:
            assert cls.default_definite is False, cls
        # Every class is drawn in the module's tree and survives the wire.
        assert f" {cls.__name__} " in f"{errors.__doc__}".replace("\n", " "), cls
        back = errors.error_from_code(cls.code, "m", request_id=3)
        assert type(back) is cls, cls
        assert (back.definite, back.request_id) == (cls.default_definite, 3)
        assert errors.error_from_code(cls.code, "m", definite=False).definite is False
