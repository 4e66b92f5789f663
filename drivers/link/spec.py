"""Construct building blocks of the link's message declarations, and their schema descriptions.

construct's own types do not bound or check enough for untrusted input (``Flag`` reads any
non-zero byte as true, ``Enum`` passes unknown values through, ``PascalString`` reads whatever
length it is given), so the declarations in :mod:`bodycam.drivers.link.messages` use these
instead. construct has no type stubs: everything here is ``Any`` to mypy, and only typed
functions in ``messages`` hand results out. :func:`describe` turns a declaration into the
deterministic text that the schema hash is computed over.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import fields
from enum import IntEnum, IntFlag
from typing import Any

from construct import (
    Adapter,
    Bytes,
    Checksum,
    Const,
    ConstructError,
    FormatField,
    GreedyBytes,
    Int8ul,
    Prefixed,
    PrefixedArray,
    Renamed,
    Struct,
    ValidationError,
)

from bodycam.drivers.link.errors import ErrorCode, ProtocolError


def _show(obj: Any) -> str:
    # Never echo a 64 KiB chunk into an error message.
    return f"{len(obj)} bytes" if isinstance(obj, bytes | bytearray) else repr(obj)


class Checked(Adapter):  # type: ignore[misc]
    """A field whose value must satisfy ``rule``; checked when parsing and when building."""

    def __init__(self, subcon: Any, rule: str, ok: Callable[[Any], bool]) -> None:
        super().__init__(subcon)
        self.rule, self.ok = rule, ok

    def _decode(self, obj: Any, context: Any, path: str) -> Any:
        if not self.ok(obj):
            raise ValidationError(f"{_show(obj)} violates {self.rule}", path=path)
        return obj

    def _encode(self, obj: Any, context: Any, path: str) -> Any:
        return self._decode(obj, context, path)


def at_most(subcon: Any, limit: int) -> Any:
    """``subcon`` (an integer) bounded by ``limit``: a length checked before it is used."""
    return Checked(subcon, f"<= {limit}", lambda v: v <= limit)


def max_len(subcon: Any, limit: int) -> Any:
    """``subcon`` (bytes) of at most ``limit`` bytes."""
    return Checked(subcon, f"len <= {limit}", lambda v: len(v) <= limit)


class Str(Adapter):  # type: ignore[misc]
    """Str(n): UTF-8 behind a u8 byte count that is checked against ``n`` before reading."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(Prefixed(at_most(Int8ul, max_bytes), GreedyBytes))

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValidationError(f"bad UTF-8 at byte {err.start}", path=path) from None

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        return obj.encode("utf-8")


def prefixed_bytes(length_type: Any, limit: int) -> Any:
    """Bytes behind a byte count that is checked against ``limit`` before reading."""
    return Prefixed(at_most(length_type, limit), GreedyBytes)


class EnumField(Adapter):  # type: ignore[misc]
    """An integer that must be a member of ``enum`` (an IntFlag keeps unknown bits)."""

    def __init__(self, subcon: Any, enum: type[IntEnum] | type[IntFlag]) -> None:
        super().__init__(subcon)
        self.enum = enum

    def _decode(self, obj: int, context: Any, path: str) -> Any:
        try:
            return self.enum(obj)
        except ValueError:
            raise ValidationError(f"{obj} is not a {self.enum.__name__}", path=path) from None

    def _encode(self, obj: Any, context: Any, path: str) -> int:
        return int(self._decode(obj, context, path))


class StrictFlag(Adapter):  # type: ignore[misc]
    """Flag: a u8 that is exactly 0 or 1, so every value has one encoding."""

    def __init__(self) -> None:
        super().__init__(Int8ul)

    def _decode(self, obj: int, context: Any, path: str) -> bool:
        if obj not in (0, 1):
            raise ValidationError(f"flag byte {obj} is neither 0 nor 1", path=path)
        return obj == 1

    def _encode(self, obj: Any, context: Any, path: str) -> int:
        if not isinstance(obj, bool):
            raise ValidationError(f"flag {obj!r} is not a bool", path=path)
        return int(obj)


class Record(Adapter):  # type: ignore[misc]
    """A nested struct read into (and written from) the frozen dataclass ``cls``."""

    def __init__(self, cls: Any) -> None:
        super().__init__(cls.SPEC)
        self.cls = cls

    def _decode(self, obj: Any, context: Any, path: str) -> Any:
        return self.cls(**{f.name: obj[f.name] for f in fields(self.cls)})

    def _encode(self, obj: Any, context: Any, path: str) -> dict[str, Any]:
        return field_values(obj)


class BoundedArray(Adapter):  # type: ignore[misc]
    """A count-prefixed array, read as a tuple; the count is checked before any element."""

    def __init__(self, count: Any, limit: int, item: Any) -> None:
        super().__init__(PrefixedArray(at_most(count, limit), item))
        self.count, self.limit, self.item = count, limit, item

    def _decode(self, obj: list[Any], context: Any, path: str) -> tuple[Any, ...]:
        return tuple(obj)

    def _encode(self, obj: Sequence[Any], context: Any, path: str) -> list[Any]:
        return list(obj)


def field_values(obj: Any) -> dict[str, Any]:
    """A dataclass instance's fields by name, as construct builds them."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _where(err: Exception) -> str:
    """``.field.sub: problem`` from a construct error, whose text starts with its path."""
    path = getattr(err, "path", None)
    if not path:
        return f": {err}"
    names = [p.strip() for p in path.split("->")][1:]  # drop "(parsing)" / "(building)"
    return f".{'.'.join(names)}: {str(err).split(chr(10), 1)[-1]}"


def parse_exact(name: str, spec: Any, payload: bytes | bytearray | memoryview) -> Any:
    """Parse ``payload`` with ``spec``, which must use every byte.

    Raises:
        ProtocolError: MALFORMED, naming ``name`` and the field construct points at.
    """
    data = bytes(payload)
    stream = io.BytesIO(data)
    try:
        obj = spec.parse_stream(stream)
    except ConstructError as err:
        raise ProtocolError(ErrorCode.MALFORMED, f"{name}{_where(err)}") from None
    if extra := len(data) - stream.tell():
        raise ProtocolError(ErrorCode.MALFORMED, f"{name}: {extra} trailing bytes")
    return obj


def build(name: str, spec: Any, values: dict[str, Any]) -> bytes:
    """Build ``values`` with ``spec``; a value the spec refuses is the caller's bug.

    Raises:
        ValueError: A field is out of range, too long, of the wrong type or not in its enum.
    """
    try:
        data: bytes = spec.build(values)
    except (ConstructError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"cannot encode {name}{_where(err)}") from err
    return data


def describe_fields(con: Any) -> list[str]:
    """One ``name: description`` line per field of a Struct (any other construct: one line).

    Raises:
        TypeError: As :func:`describe`.
    """
    if isinstance(con, Struct):
        return [f"{sc.name}: {describe(sc)}" for sc in con.subcons]
    return [describe(con)]


def describe(con: Any) -> str:
    """Deterministic one-line description of a declaration: classes, sizes, prefixes, bounds.

    Raises:
        TypeError: ``con`` uses a construct class this function does not know, so that a new
            kind of field cannot slip past the schema hash undescribed.
    """
    if isinstance(con, Renamed):
        return describe(con.subcon)
    if isinstance(con, Struct):
        return "Struct{" + "; ".join(f"{sc.name}: {describe(sc)}" for sc in con.subcons) + "}"
    if isinstance(con, Checked):
        return f"{describe(con.subcon)} where {con.rule}"
    if isinstance(con, Str):
        return f"Utf8({describe(con.subcon)})"
    if isinstance(con, EnumField):
        members = ", ".join(f"{m.name}={m.value}" for m in con.enum)
        return f"{con.enum.__name__}({describe(con.subcon)}: {members})"
    if isinstance(con, StrictFlag):
        return f"Flag({describe(con.subcon)}: 0|1)"
    if isinstance(con, Record):
        return f"Record {con.cls.__name__}"  # described in full on its own schema line
    if isinstance(con, BoundedArray):
        return f"PrefixedArray({describe(con.count)} where <= {con.limit}, {describe(con.item)})"
    if isinstance(con, Prefixed):
        return f"Prefixed({describe(con.lengthfield)}, {describe(con.subcon)})"
    if isinstance(con, Const):
        return f"Const({con.value!r}, {describe(con.subcon)})"
    if isinstance(con, Checksum):
        return f"Checksum({describe(con.checksumfield)}, {con.hashfunc.__name__})"
    if isinstance(con, FormatField):
        return f"FormatField({con.fmtstr})"
    if isinstance(con, Bytes):
        return f"Bytes({con.length})"
    if con is GreedyBytes:
        return "GreedyBytes"
    raise TypeError(f"no schema description for construct {type(con).__name__}")
