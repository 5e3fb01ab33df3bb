"""zserver: an asyncio client for zserver (PROTOCOL.md), plaintext or TLS 1.3 with a pinned
certificate fingerprint."""

from .dataframe import F32, F64, I8, I16, I32, I64, U8, U16, U32, U64, Pairs
from .errors import (
    CallError,
    CallTimeout,
    ConnectionClosed,
    ErrorCode,
    FingerprintMismatch,
    GoAway,
    GoAwayCode,
    ProtocolError,
    WireError,
    ZServerError,
)

__all__ = [
    "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "F32", "F64", "Pairs",
    "CallError", "CallTimeout", "ConnectionClosed", "ErrorCode", "FingerprintMismatch",
    "GoAway", "GoAwayCode", "ProtocolError", "WireError", "ZServerError",
]
__version__ = "0.1.0"

from .client import Client, connect, fingerprint_of  # noqa: E402

__all__ += ["Client", "connect", "fingerprint_of"]
