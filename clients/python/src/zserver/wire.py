"""Frames (PROTOCOL.md §1-§5): the 16-byte header, call bodies, compressed payloads."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import lz4.block

from . import dataframe
from .errors import WireError

MAGIC = 0x5A
VERSION = 1
HEADER_LEN = 16
MAX_FRAME_LEN = 16 << 20  # the default max_frame_len
MAX_NAME_LEN = 255
COMPRESS_MIN = 1024  # payloads this large or larger are compressed when it pays
LZ4_MAX_RATIO = 256

DATAFRAME = 0x01
COMPRESSED = 0x02

_HEADER = struct.Struct("<BBBBIII")


class Kind(enum.IntEnum):
    Call = 0x01
    Send = 0x02
    Reply = 0x03
    Error = 0x04
    Ping = 0x05
    Pong = 0x06
    GoAway = 0x07
    SessionAck = 0x08
    StreamOpen = 0x10
    StreamData = 0x11
    StreamEnd = 0x12
    StreamCredit = 0x13
    StreamResult = 0x14
    StreamCancel = 0x15
    BatchClear = 0x16
    MuxOpen = 0x30
    MuxAccept = 0x31
    MuxRefuse = 0x32
    MuxData = 0x33
    MuxCredit = 0x34
    MuxClose = 0x35
    MuxReset = 0x36
    MuxGoAway = 0x37


_ALLOWED_FLAGS = {
    Kind.Call: DATAFRAME | COMPRESSED,
    Kind.Send: DATAFRAME | COMPRESSED,
    Kind.Reply: DATAFRAME | COMPRESSED,
    Kind.StreamData: COMPRESSED,
}

MUX_KINDS = frozenset(k for k in Kind if 0x30 <= k <= 0x37)


@dataclass(frozen=True)
class Header:
    kind: Kind
    flags: int
    channel: int
    request: int
    length: int


def encode_header(kind: int, flags: int, channel: int, request: int, length: int) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, int(kind), flags, channel, request, length)


def encode_frame(kind: int, flags: int, channel: int, request: int, body: bytes,
                 max_frame_len: int = MAX_FRAME_LEN) -> bytes:
    if len(body) > max_frame_len:
        raise WireError("FrameTooLarge",
                        f"frame of {len(body)} bytes exceeds the limit of {max_frame_len} bytes")
    return encode_header(kind, flags, channel, request, len(body)) + body


def decode_header(b: bytes, max_frame_len: int = MAX_FRAME_LEN) -> Header:
    """Validates a header as soon as its 16 bytes are in, before the body is read (§1).
    (The channel check, UnexpectedChannel, is the connection's: see check_channel.)"""
    if len(b) != HEADER_LEN:
        raise WireError("Malformed", f"a header is {HEADER_LEN} bytes, got {len(b)}")
    magic, version, kind, flags, channel, request, length = _HEADER.unpack(b)
    if magic != MAGIC:
        raise WireError("BadMagic", f"bad magic byte 0x{magic:02x}: not a zserver peer")
    if version != VERSION:
        raise WireError("UnsupportedVersion", f"unsupported protocol version {version}")
    try:
        k = Kind(kind)
    except ValueError:
        raise WireError("UnknownKind", f"unknown frame kind 0x{kind:02x}") from None
    if flags & ~_ALLOWED_FLAGS.get(k, 0):
        raise WireError("InvalidFlags", f"invalid flags 0x{flags:02x} for {k.name} frame")
    if length > max_frame_len:
        raise WireError("FrameTooLarge",
                        f"frame of {length} bytes exceeds the limit of {max_frame_len} bytes")
    return Header(k, flags, channel, request, length)


def check_channel(h: Header) -> None:
    if h.channel != 0 and h.kind not in MUX_KINDS:
        raise WireError("UnexpectedChannel",
                        f"frame for channel {h.channel} but no multiplexer is active")


def parse_call_body(body: bytes) -> tuple[str, bytes]:
    """Splits a Call/Send body into its command name and payload (§3)."""
    if not body:
        raise WireError("Malformed", "malformed call body: empty")
    n = body[0]
    if n == 0:
        raise WireError("Malformed", "malformed call body: empty command name")
    if len(body) < 1 + n:
        raise WireError("Malformed", "malformed call body: name runs past the end")
    try:
        name = bytes(body[1 : 1 + n]).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("InvalidUtf8", "command name is not valid UTF-8") from None
    return name, bytes(body[1 + n :])


def encode_name(command: str) -> bytes:
    b = command.encode("utf-8")
    if not 1 <= len(b) <= MAX_NAME_LEN:
        raise ValueError(f"a command name is 1 to {MAX_NAME_LEN} bytes of UTF-8, got {len(b)}")
    return bytes((len(b),)) + b


def parse_code_message(body: bytes) -> tuple[int, str]:
    """The body of Error, GoAway, StreamResult, StreamCancel: code u16 LE + UTF-8 text."""
    if len(body) < 2:
        raise WireError("Malformed", "malformed error body: shorter than its 2-byte code")
    try:
        msg = bytes(body[2:]).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("InvalidUtf8", "error message is not valid UTF-8") from None
    return int.from_bytes(body[:2], "little"), msg


def encode_code_message(code: int, message: str) -> bytes:
    return int(code).to_bytes(2, "little") + message.encode("utf-8")


def compress(payload: bytes) -> bytes | None:
    """lz4 "size prepended" (u32 LE size + block), or None when it does not pay (§3.1)."""
    if len(payload) < COMPRESS_MIN:
        return None
    c = lz4.block.compress(payload, store_size=True)
    return c if len(c) * 10 <= len(payload) * 9 else None


def decompress(data: bytes, max_len: int = MAX_FRAME_LEN) -> bytes:
    """Undoes :func:`compress`, checking the declared size before anything is allocated."""
    if len(data) < 4:
        raise WireError("Malformed", "malformed lz4 payload: missing size prefix")
    size = int.from_bytes(data[:4], "little")
    if size > max_len:
        raise WireError("FrameTooLarge",
                        f"lz4 payload of {size} bytes exceeds the limit of {max_len} bytes")
    if size > len(data) * LZ4_MAX_RATIO + 64:
        raise WireError("Malformed",
                        "malformed lz4 payload: declares more than an lz4 block can hold")
    try:
        out = lz4.block.decompress(data)  # reads the u32 LE size prefix itself
    except Exception:
        raise WireError("Malformed", "malformed lz4 payload: corrupt lz4 block") from None
    if len(out) != size:
        raise WireError("Malformed",
                        "malformed lz4 payload: decodes to another size than it declares")
    return out


def encode_payload(payload, *, compress_payload: bool = True) -> tuple[int, bytes]:
    """Flags and bytes for a text (``str``) or DataFrame (list/tuple) payload."""
    if isinstance(payload, str):
        flags, data = 0, payload.encode("utf-8")
    elif isinstance(payload, (list, tuple)):
        flags, data = DATAFRAME, dataframe.encode(payload)
    else:
        raise TypeError("a payload is text (str) or a DataFrame (a list of values), "
                        f"not {type(payload).__name__}")
    if compress_payload:
        c = compress(data)
        if c is not None:
            flags, data = flags | COMPRESSED, c
    return flags, data


def decode_payload(flags: int, data: bytes, max_len: int = MAX_FRAME_LEN):
    """The text (``str``) or DataFrame (``list``) a payload carries."""
    if flags & COMPRESSED:
        data = decompress(data, max_len)
    if flags & DATAFRAME:
        return dataframe.decode(data)
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("InvalidUtf8", "text payload is not valid UTF-8") from None


def encode_call(kind: int, request: int, command: str, payload, *,
                compress_payload: bool = True, max_frame_len: int = MAX_FRAME_LEN) -> bytes:
    """A whole Call or Send frame."""
    if kind == Kind.Call and request == 0:
        raise ValueError("a Call's request id is not 0")
    if kind == Kind.Send and request != 0:
        raise ValueError("a Send's request id is 0")
    flags, data = encode_payload(payload, compress_payload=compress_payload)
    return encode_frame(kind, flags, 0, request, encode_name(command) + data, max_frame_len)


def encode_reply(request: int, payload, *, compress_payload: bool = True,
                 max_frame_len: int = MAX_FRAME_LEN) -> bytes:
    flags, data = encode_payload(payload, compress_payload=compress_payload)
    return encode_frame(Kind.Reply, flags, 0, request, data, max_frame_len)
