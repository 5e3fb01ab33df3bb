"""Exceptions and the code tables of PROTOCOL.md §4 (Error frames) and §5 (GoAway)."""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Codes of Error frames (PROTOCOL.md §4)."""

    UnknownCommand = 1
    HandlerPanicked = 2
    NoReply = 3
    BadPayload = 4
    Overloaded = 5
    ShuttingDown = 6
    Application = 7
    ReplyTooLarge = 8
    ChecksumMismatch = 9
    Cancelled = 10
    TooLarge = 11
    NotLoggedIn = 12
    Forbidden = 13
    RateLimited = 14
    AuthFailed = 15
    InvalidArgument = 16
    Conflict = 17
    NotFound = 18
    VersionMismatch = 19
    OverBudget = 20


class GoAwayCode(enum.IntEnum):
    """Codes of GoAway frames (PROTOCOL.md §5)."""

    Normal = 0
    ProtocolError = 1
    FrameTooLarge = 2
    IdleTimeout = 3
    ServerFull = 4
    ShuttingDown = 5
    SlowConsumer = 6
    EncryptionRequired = 7
    NotAuthorized = 8
    MemoryBudget = 9
    Kicked = 10
    Draining = 11


def _code(table: type[enum.IntEnum], code: int) -> int:
    """The enum member for a known code, else the plain int (a newer peer's code)."""
    try:
        return table(code)
    except ValueError:
        return int(code)


def _code_name(code: int) -> str:
    return code.name if isinstance(code, enum.IntEnum) else f"Other({int(code)})"


class ZServerError(Exception):
    """Base class of every error this package raises."""


class WireError(ZServerError):
    """Bytes that do not decode. ``kind`` names the Rust decoder's ``WireError`` variant:
    BadMagic, UnsupportedVersion, UnknownKind, InvalidFlags, FrameTooLarge,
    UnexpectedChannel, Malformed, InvalidUtf8, TooDeep, TooManyElements, UnsupportedMarker."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class CallError(ZServerError):
    """The server answered a call with an Error frame."""

    def __init__(self, code: int, message: str, command: str | None = None):
        self.code = _code(ErrorCode, code)
        self.name = _code_name(self.code)
        self.message = message
        self.command = command
        where = f" ({command})" if command else ""
        super().__init__(f"{self.name} [{int(self.code)}]{where}: {message}")


class ConnectionClosed(ZServerError):
    """The connection is closed; calls pending on it fail with this (or a subclass)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class GoAway(ConnectionClosed):
    """The server closed the connection with a GoAway frame."""

    def __init__(self, code: int, reason: str):
        self.code = _code(GoAwayCode, code)
        self.name = _code_name(self.code)
        super().__init__(f"server sent GoAway {self.name} [{int(self.code)}]: {reason}")
        self.reason = reason


class ProtocolError(ConnectionClosed):
    """The server sent something that is not valid zserver protocol; the client closed."""

    def __init__(self, reason: str, wire_error: WireError | None = None):
        super().__init__(f"protocol error from the server: {reason}")
        self.wire_error = wire_error


class FingerprintMismatch(ZServerError):
    """The TLS server's certificate is not the pinned one."""

    def __init__(self, expected: str, actual: str):
        super().__init__(
            f"TLS certificate fingerprint mismatch: pinned {expected}, server presented {actual}"
        )
        self.expected = expected
        self.actual = actual


class CallTimeout(ZServerError, TimeoutError):
    """No reply within the call's timeout (the late reply, if any, is dropped)."""
