"""DataFrames (PROTOCOL.md §6): one MessagePack array of typed values.

Integers are written with fixed-width markers so that their type survives the round trip.
Wrap a value to choose its type (``I32(5)``, ``U64(2**64 - 1)``, ``F32(1.5)``); plain
``int`` is i64, plain ``float`` f64, ``str`` str, ``bytes``/``bytearray`` bin, ``None`` nil,
``bool`` bool, ``list``/``tuple`` array, ``dict`` (or :class:`Pairs`) map.

Decoding returns the wrappers (``I8`` ... ``U64``, ``F32``, ``F64``): they are ``int`` and
``float`` subclasses, so they compare and compute like plain numbers, and encoding them
again keeps their width. Maps decode to ``dict``, or to :class:`Pairs` when a key cannot be
a dict key (an array or map) or appears twice.
"""

from __future__ import annotations

import struct

from .errors import WireError

MAX_DEPTH = 32
MAX_ELEMENTS = 1 << 20


class _Int(int):
    bits = 64
    signed = True
    marker = 0xD3
    fmt = ">q"

    def __new__(cls, value=0):
        v = int.__new__(cls, value)
        if cls.signed:
            lo, hi = -(1 << (cls.bits - 1)), (1 << (cls.bits - 1)) - 1
        else:
            lo, hi = 0, (1 << cls.bits) - 1
        if not lo <= v <= hi:
            raise OverflowError(f"{int(v)} does not fit {cls.__name__} ({lo}..{hi})")
        return v

    def __repr__(self):
        return f"{type(self).__name__}({int(self)})"


class I8(_Int):
    bits, signed, marker, fmt = 8, True, 0xD0, ">b"


class I16(_Int):
    bits, signed, marker, fmt = 16, True, 0xD1, ">h"


class I32(_Int):
    bits, signed, marker, fmt = 32, True, 0xD2, ">i"


class I64(_Int):
    bits, signed, marker, fmt = 64, True, 0xD3, ">q"


class U8(_Int):
    bits, signed, marker, fmt = 8, False, 0xCC, ">B"


class U16(_Int):
    bits, signed, marker, fmt = 16, False, 0xCD, ">H"


class U32(_Int):
    bits, signed, marker, fmt = 32, False, 0xCE, ">I"


class U64(_Int):
    bits, signed, marker, fmt = 64, False, 0xCF, ">Q"


class F32(float):
    """A 32-bit float (written as MessagePack float 32; the value is rounded to f32)."""

    def __repr__(self):
        return f"F32({float(self)!r})"


class F64(float):
    """A 64-bit float (plain ``float`` is f64 too)."""

    def __repr__(self):
        return f"F64({float(self)!r})"


class Pairs(list):
    """A map as an ordered list of ``(key, value)`` pairs: keeps any key and duplicates."""

    def __repr__(self):
        return f"Pairs({list.__repr__(self)})"


def type_name(v) -> str:
    """The DataFrame type a Python value encodes as (``i64`` for plain ``int`` ...)."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, _Int):
        return type(v).__name__.lower()
    if isinstance(v, int):
        return "i64"
    if isinstance(v, F32):
        return "f32"
    if isinstance(v, float):
        return "f64"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(v, (Pairs, dict)):
        return "map"
    if isinstance(v, (list, tuple)):
        return "array"
    raise TypeError(f"{type(v).__name__} cannot be a DataFrame value")


def _len_header(out: bytearray, n: int, fix_base: int | None, fix_max: int, m8, m16, m32):
    if fix_base is not None and n <= fix_max:
        out.append(fix_base | n)
    elif m8 is not None and n <= 0xFF:
        out += bytes((m8, n))
    elif n <= 0xFFFF:
        out.append(m16)
        out += n.to_bytes(2, "big")
    elif n <= 0xFFFFFFFF:
        out.append(m32)
        out += n.to_bytes(4, "big")
    else:
        raise OverflowError(f"length {n} does not fit MessagePack")


def _encode(v, out: bytearray, depth: int) -> None:
    if v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif isinstance(v, _Int):
        out.append(v.marker)
        out += struct.pack(v.fmt, int(v))
    elif isinstance(v, int):
        if not -(1 << 63) <= v < (1 << 63):
            raise OverflowError(f"{v} does not fit i64 (a plain int); wrap it, e.g. U64({v})")
        out.append(0xD3)
        out += struct.pack(">q", v)
    elif isinstance(v, F32):
        out.append(0xCA)
        out += struct.pack(">f", float(v))
    elif isinstance(v, float):
        out.append(0xCB)
        out += struct.pack(">d", v)
    elif isinstance(v, str):
        b = v.encode("utf-8")
        _len_header(out, len(b), 0xA0, 31, 0xD9, 0xDA, 0xDB)
        out += b
    elif isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        _len_header(out, len(b), None, 0, 0xC4, 0xC5, 0xC6)
        out += b
    elif isinstance(v, (Pairs, dict, list, tuple)) and depth > MAX_DEPTH:
        # The reader's depth of a value is one less than this count (top-level values are 0).
        raise WireError("TooDeep", f"nesting deeper than {MAX_DEPTH} levels")
    elif isinstance(v, (Pairs, dict)):
        items = list(v.items()) if isinstance(v, dict) else list(v)
        _len_header(out, len(items), 0x80, 15, None, 0xDE, 0xDF)
        for k, x in items:
            _encode(k, out, depth + 1)
            _encode(x, out, depth + 1)
    elif isinstance(v, (list, tuple)):
        _len_header(out, len(v), 0x90, 15, None, 0xDC, 0xDD)
        for x in v:
            _encode(x, out, depth + 1)
    else:
        raise TypeError(f"{type(v).__name__} cannot be a DataFrame value")


def encode(values) -> bytes:
    """Encodes a sequence of values as one DataFrame (a MessagePack array)."""
    if not isinstance(values, (list, tuple)):
        raise TypeError("a DataFrame is a list (or tuple) of values")
    out = bytearray()
    _len_header(out, len(values), 0x90, 15, None, 0xDC, 0xDD)
    for v in values:
        _encode(v, out, 1)
    return bytes(out)


_FIXED = {
    0xCC: (U8, ">B", 1),
    0xCD: (U16, ">H", 2),
    0xCE: (U32, ">I", 4),
    0xCF: (U64, ">Q", 8),
    0xD0: (I8, ">b", 1),
    0xD1: (I16, ">h", 2),
    0xD2: (I32, ">i", 4),
    0xD3: (I64, ">q", 8),
    0xCA: (F32, ">f", 4),
    0xCB: (F64, ">d", 8),
}


class _Decoder:
    __slots__ = ("data", "pos", "elements", "max_depth", "max_elements")

    def __init__(self, data: bytes, max_depth: int, max_elements: int):
        self.data = data
        self.pos = 0
        self.elements = 0
        self.max_depth = max_depth
        self.max_elements = max_elements

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise WireError("Malformed", "malformed DataFrame: value runs past the end")
        s = self.data[self.pos : end]
        self.pos = end
        return s

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise WireError("Malformed", "malformed DataFrame: value runs past the end")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def length(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def count(self, n: int) -> None:
        self.elements += n
        if self.elements > self.max_elements:
            raise WireError("TooManyElements", f"more than {self.max_elements} values")

    def string(self, n: int) -> str:
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("InvalidUtf8", "DataFrame string is not valid UTF-8") from None

    def array(self, n: int, depth: int) -> list:
        self.count(n)
        return [self.value(depth) for _ in range(n)]

    def map(self, n: int, depth: int):
        self.count(2 * n)
        pairs = [(self.value(depth), self.value(depth)) for _ in range(n)]
        try:
            d = dict(pairs)
        except TypeError:  # an unhashable key (an array or a map)
            return Pairs(pairs)
        return d if len(d) == n else Pairs(pairs)

    def nested(self, depth: int) -> int:
        if depth >= self.max_depth:
            raise WireError("TooDeep", f"nesting deeper than {self.max_depth} levels")
        return depth + 1

    def value(self, depth: int):
        m = self.byte()
        if m <= 0x7F:
            return U8(m)
        if m >= 0xE0:
            return I8(m - 0x100)
        if 0xA0 <= m <= 0xBF:
            return self.string(m & 0x1F)
        if 0x90 <= m <= 0x9F:
            return self.array(m & 0x0F, self.nested(depth))
        if 0x80 <= m <= 0x8F:
            return self.map(m & 0x0F, self.nested(depth))
        if m == 0xC0:
            return None
        if m == 0xC2:
            return False
        if m == 0xC3:
            return True
        fixed = _FIXED.get(m)
        if fixed is not None:
            cls, fmt, size = fixed
            return cls(struct.unpack(fmt, self.take(size))[0])
        if m in (0xD9, 0xDA, 0xDB):
            return self.string(self.length(1 << (m - 0xD9)))
        if m in (0xC4, 0xC5, 0xC6):
            return self.take(self.length(1 << (m - 0xC4)))
        if m in (0xDC, 0xDD):
            n = self.length(2 if m == 0xDC else 4)
            return self.array(n, self.nested(depth))
        if m in (0xDE, 0xDF):
            n = self.length(2 if m == 0xDE else 4)
            return self.map(n, self.nested(depth))
        raise WireError("UnsupportedMarker", f"unsupported MessagePack marker 0x{m:02x}")


def decode(data: bytes, *, max_depth: int = MAX_DEPTH, max_elements: int = MAX_ELEMENTS) -> list:
    """Decodes one DataFrame; raises :class:`WireError` as the Rust decoder would refuse it."""
    d = _Decoder(bytes(data), max_depth, max_elements)
    m = d.byte()
    if 0x90 <= m <= 0x9F:
        n = m & 0x0F
    elif m == 0xDC:
        n = d.length(2)
    elif m == 0xDD:
        n = d.length(4)
    else:
        raise WireError("Malformed", "malformed DataFrame: does not start with an array")
    values = d.array(n, 0)
    if d.pos != len(d.data):
        raise WireError("Malformed", "malformed DataFrame: bytes after the value array")
    return values
