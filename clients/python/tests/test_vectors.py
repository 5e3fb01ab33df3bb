"""The shared wire vectors, spec/vectors.json: every one encodes to its bytes and decodes
back; every bad one is refused with the Rust decoder's error name."""

import json
import math
import os
import pathlib
import struct

import pytest

from zserver import dataframe, wire
from zserver.dataframe import F32, F64, I8, I16, I32, I64, U8, U16, U32, U64, Pairs
from zserver.errors import WireError

ROOT = pathlib.Path(__file__).resolve().parents[3]
FILE = pathlib.Path(os.environ.get("ZS_VECTORS", ROOT / "spec" / "vectors.json"))
VECTORS = json.loads(FILE.read_text())

INTS = {"i8": I8, "i16": I16, "i32": I32, "i64": I64, "u8": U8, "u16": U16, "u32": U32, "u64": U64}


def from_typed(t):
    """A vector's TYPED value as the Python value that encodes to it."""
    ty = t["type"]
    if ty == "nil":
        return None
    v = t["value"]
    if ty == "bool":
        return bool(v)
    if ty in INTS:
        return INTS[ty](int(v))
    if ty == "f32":
        return F32(float(v))
    if ty == "f64":
        return F64(float(v))
    if ty == "str":
        return v
    if ty == "bytes":
        return bytes.fromhex(v)
    if ty == "array":
        return [from_typed(x) for x in v]
    if ty == "map":
        return Pairs((from_typed(k), from_typed(x)) for k, x in v)
    raise AssertionError(f"unknown type {ty}")


def to_typed(v):
    """A decoded Python value in the vectors' TYPED form (what the Rust test writes)."""
    ty = dataframe.type_name(v)
    if ty == "nil":
        return {"type": "nil"}
    if ty in ("i64", "u64"):
        return {"type": ty, "value": str(int(v))}
    if ty in INTS:
        return {"type": ty, "value": int(v)}
    if ty == "f32":  # compare as f32 bits: the file prints the f32's shortest form
        return {"type": ty, "value": struct.unpack(">f", struct.pack(">f", v))[0]}
    if ty == "f64":
        return {"type": ty, "value": float(v)}
    if ty == "bytes":
        return {"type": ty, "value": bytes(v).hex()}
    if ty == "array":
        return {"type": ty, "value": [to_typed(x) for x in v]}
    if ty == "map":
        items = v.items() if isinstance(v, dict) else v
        return {"type": ty, "value": [[to_typed(k), to_typed(x)] for k, x in items]}
    return {"type": ty, "value": v}


def norm(typed_list):
    """Normalises f32 values in a vector to their f32 value, for comparison."""
    def one(t):
        t = dict(t)
        if t["type"] == "f32":
            t["value"] = struct.unpack(">f", struct.pack(">f", float(t["value"])))[0]
        elif t["type"] == "array":
            t["value"] = [one(x) for x in t["value"]]
        elif t["type"] == "map":
            t["value"] = [[one(k), one(x)] for k, x in t["value"]]
        elif t["type"] in ("i8", "i16", "i32", "u8", "u16", "u32"):
            t["value"] = int(t["value"])
        return t
    return [one(t) for t in typed_list]


def ids(entries):
    return [e["name"] for e in entries]


def test_file_is_version_1_and_not_empty():
    assert VECTORS["version"] == 1
    for k in ("frames", "dataframes", "dataframe_reads", "calls", "bad"):
        assert VECTORS[k], k


@pytest.mark.parametrize("v", VECTORS["frames"], ids=ids(VECTORS["frames"]))
def test_frame(v):
    body = bytes.fromhex(v["body"])
    raw = bytes.fromhex(v["bytes"])
    assert wire.encode_frame(v["kind"], v["flags"], v["channel"], v["request"], body) == raw
    h = wire.decode_header(raw[:16])
    assert (h.kind, h.flags, h.channel, h.request, h.length) == (
        v["kind"], v["flags"], v["channel"], v["request"], len(body))
    assert raw[16:] == body
    if h.kind in (wire.Kind.Error, wire.Kind.GoAway):
        code, msg = wire.parse_code_message(body)
        assert wire.encode_code_message(code, msg) == body


@pytest.mark.parametrize("v", VECTORS["dataframes"], ids=ids(VECTORS["dataframes"]))
def test_dataframe(v):
    raw = bytes.fromhex(v["bytes"])
    values = [from_typed(t) for t in v["values"]]
    assert dataframe.encode(values) == raw
    assert [to_typed(x) for x in dataframe.decode(raw)] == norm(v["values"])


@pytest.mark.parametrize("v", VECTORS["dataframe_reads"], ids=ids(VECTORS["dataframe_reads"]))
def test_dataframe_read(v):
    raw = bytes.fromhex(v["bytes"])
    assert [to_typed(x) for x in dataframe.decode(raw)] == norm(v["values"])


def _payload(v):
    if v["values"] is not None:
        return [from_typed(t) for t in v["values"]]
    return v["text"]


@pytest.mark.parametrize("v", VECTORS["calls"], ids=ids(VECTORS["calls"]))
def test_call(v):
    raw = bytes.fromhex(v["bytes"])
    payload = _payload(v)
    kind = {"call": wire.Kind.Call, "send": wire.Kind.Send, "reply": wire.Kind.Reply}[v["frame"]]
    if kind == wire.Kind.Reply:
        mine = wire.encode_reply(v["request"], payload)
    else:
        mine = wire.encode_call(kind, v["request"], v["command"], payload)
    h = wire.decode_header(raw[:16])
    assert h.kind == kind and h.request == v["request"] and h.length == len(raw) - 16
    assert bool(h.flags & wire.COMPRESSED) == v["compressed"]
    assert bool(h.flags & wire.DATAFRAME) == (v["values"] is not None)
    if v["compressed"]:
        # lz4 encoders differ: the header must agree and both payloads decode the same.
        mh = wire.decode_header(mine[:16])
        assert (mh.kind, mh.flags, mh.request) == (h.kind, h.flags, h.request)
    else:
        assert mine == raw
    for frame in (raw, mine):
        body = frame[16:]
        fh = wire.decode_header(frame[:16])
        if kind == wire.Kind.Reply:
            data = body
        else:
            name, data = wire.parse_call_body(body)
            assert name == v["command"]
        got = wire.decode_payload(fh.flags, data)
        if v["values"] is not None:
            assert [to_typed(x) for x in got] == norm(v["values"])
        else:
            assert got == v["text"]


@pytest.mark.parametrize("v", VECTORS["bad"], ids=ids(VECTORS["bad"]))
def test_bad(v):
    raw = bytes.fromhex(v["bytes"])
    with pytest.raises(WireError) as e:
        if v["what"] == "dataframe":
            dataframe.decode(raw)
        else:
            h = wire.decode_header(raw[:16])
            wire.check_channel(h)
            assert v["what"] == "call", "a header vector must fail at the header"
            assert len(raw) - 16 == h.length
            wire.parse_call_body(raw[16:])
    assert e.value.kind == v["error"]


def test_plain_python_values_take_default_types():
    raw = dataframe.encode([5, 2.5, "s", b"b", None, True, [1], {"k": 1}])
    back = dataframe.decode(raw)
    assert [dataframe.type_name(x) for x in back] == [
        "i64", "f64", "str", "bytes", "nil", "bool", "array", "map"]
    assert back == [5, 2.5, "s", b"b", None, True, [1], {"k": 1}]
    assert dataframe.encode(back) == raw


def test_out_of_range_and_limits():
    with pytest.raises(OverflowError):
        U8(256)
    with pytest.raises(OverflowError):
        I8(-129)
    with pytest.raises(OverflowError):
        dataframe.encode([1 << 63])
    assert dataframe.encode([U64((1 << 64) - 1)]) == bytes.fromhex("91cfffffffffffffffff")
    nested = []
    for _ in range(32):
        nested = [nested]
    dataframe.decode(dataframe.encode(nested))  # 32 levels below the top: allowed
    with pytest.raises(WireError) as e:
        dataframe.encode([nested])
    assert e.value.kind == "TooDeep"
    with pytest.raises(WireError) as e:
        dataframe.decode(bytes.fromhex("dd00100001") + b"\xc0" * 10)
    assert e.value.kind == "TooManyElements"
    assert math.isnan(dataframe.decode(dataframe.encode([float("nan")]))[0])


def test_decompression_is_bounded():
    big = b"\0" * 100_000
    c = wire.compress(big)
    assert c is not None and wire.decompress(c) == big
    with pytest.raises(WireError) as e:
        wire.decompress(c, max_len=1000)
    assert e.value.kind == "FrameTooLarge"
    lie = (len(c) * 300).to_bytes(4, "little") + c[4:]
    with pytest.raises(WireError) as e:
        wire.decompress(lie)
    assert e.value.kind == "Malformed"
    with pytest.raises(WireError):
        wire.decompress(b"\x09\0\0\0\x01")
    with pytest.raises(WireError):
        wire.decompress(b"\x01\0")
    assert wire.compress(b"short") is None
    assert wire.compress(os.urandom(4096)) is None
