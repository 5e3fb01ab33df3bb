"""The client against a scripted server (asyncio, in this process): what a real server
rarely or never does: pings, pushes of DataFrames, compressed pushes, calls to the client,
unknown commands, and bad frames."""

from __future__ import annotations

import asyncio
import logging

import pytest

import zserver
from zserver import I32, CallError, ConnectionClosed, ErrorCode, ProtocolError, wire
from zserver.wire import Kind

from conftest import run

WAIT = 60.0


class Fake:
    """One scripted connection: the test reads the client's frames and writes its own."""

    def __init__(self):
        self.conn: asyncio.Future = asyncio.get_running_loop().create_future()

    async def start(self):
        async def on_conn(reader, writer):
            self.conn.set_result((reader, writer))
        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def accept(self):
        self.reader, self.writer = await asyncio.wait_for(self.conn, WAIT)

    async def read_frame(self):
        h = wire.decode_header(await asyncio.wait_for(self.reader.readexactly(16), WAIT))
        body = await self.reader.readexactly(h.length)
        return h, body

    def write(self, data: bytes):
        self.writer.write(data)

    async def close(self):
        self.writer.close()
        self.server.close()


async def pair():
    fake = await Fake().start()
    client = await zserver.connect("127.0.0.1", fake.port, plaintext=True, keepalive=None)
    await fake.accept()
    return fake, client


async def answer_call(fake, payload=None):
    """Reads one Call and answers it with its own payload (or ``payload``)."""
    h, body = await fake.read_frame()
    assert h.kind == Kind.Call and h.request != 0
    name, data = wire.parse_call_body(body)
    reply = payload if payload is not None else wire.decode_payload(h.flags, data)
    fake.write(wire.encode_reply(h.request, reply))
    return h, name


def test_answers_ping_with_pong_and_takes_pushes():
    async def main():
        fake, c = await pair()
        got = []
        done = asyncio.get_running_loop().create_future()

        async def on_df(values):
            got.append(values)

        def on_text(text):
            got.append(text)
            done.set_result(None)

        c.on("push.df", on_df)
        c.on("PUSH.TEXT", on_text)
        fake.write(wire.encode_frame(Kind.Ping, 0, 0, 77, b""))
        h, body = await fake.read_frame()
        assert (h.kind, h.request, body) == (Kind.Pong, 77, b"")
        big = ["x" * 10000, I32(-5)]
        fake.write(wire.encode_call(Kind.Send, 0, "mystery.command", "nobody listens"))
        fake.write(wire.encode_call(Kind.Send, 0, "push.df", big))  # compressed: > 1 KiB
        fake.write(wire.encode_call(Kind.Send, 0, "push.text", "t" * 5000))
        await asyncio.wait_for(done, WAIT)
        assert got == [big, "t" * 5000]
        assert c.stats["compressed_in"] == 2
        assert not c.closed
        # The connection goes on after the unknown command.
        task = asyncio.ensure_future(c.call_console("echo", "hi"))
        await answer_call(fake)
        assert await task == "hi"
        await c.close()
        h, body = await fake.read_frame()
        assert h.kind == Kind.GoAway and wire.parse_code_message(body)[0] == 0
        await fake.close()
    run(main())


def test_unknown_push_is_logged(caplog):
    async def main():
        fake, c = await pair()
        fake.write(wire.encode_call(Kind.Send, 0, "mystery.command", "x"))
        task = asyncio.ensure_future(c.call_console("echo", "after"))
        await answer_call(fake)
        assert await task == "after"
        # The dispatcher handles the push before any later one: wait on a marker push.
        marker = asyncio.get_running_loop().create_future()
        c.on("marker", lambda _: marker.set_result(None))
        fake.write(wire.encode_call(Kind.Send, 0, "marker", ""))
        await asyncio.wait_for(marker, WAIT)
        await c.close()
        await fake.close()

    with caplog.at_level(logging.INFO, logger="zserver"):
        run(main())
    assert any("mystery.command" in r.getMessage() for r in caplog.records)


def test_server_calls_the_client():
    async def main():
        fake, c = await pair()
        c.on("client.add", lambda values: [I32(sum(values))])
        c.on("client.upper", lambda text: text.upper())

        async def fails(_):
            raise RuntimeError("no way")

        c.on("client.fails", fails)
        fake.write(wire.encode_call(Kind.Call, 5, "client.add", [I32(2), I32(3)]))
        fake.write(wire.encode_call(Kind.Call, 6, "client.upper", "abc"))
        fake.write(wire.encode_call(Kind.Call, 7, "client.missing", "x"))
        fake.write(wire.encode_call(Kind.Call, 8, "client.fails", "x"))
        seen = {}
        for _ in range(4):
            h, body = await fake.read_frame()
            seen[h.request] = (h.kind, body, h.flags)
        assert seen[5][0] == Kind.Reply and wire.decode_payload(seen[5][2], seen[5][1]) == [5]
        assert seen[6][0] == Kind.Reply and seen[6][1] == b"ABC"
        assert seen[7][0] == Kind.Error
        assert wire.parse_code_message(seen[7][1]) == (1, "unknown command: client.missing")
        assert seen[8][0] == Kind.Error
        code, msg = wire.parse_code_message(seen[8][1])
        assert code == ErrorCode.Application and "no way" in msg
        await c.close()
        await fake.close()
    run(main())


def test_error_frames_and_replies_in_any_order():
    async def main():
        fake, c = await pair()
        t1 = asyncio.ensure_future(c.call_console("one", "a"))
        t2 = asyncio.ensure_future(c.call_stream("two", [1]))
        h1, _ = await fake.read_frame()
        h2, _ = await fake.read_frame()
        assert h1.request != h2.request
        fake.write(wire.encode_reply(h2.request, ["second"]))
        fake.write(wire.encode_frame(Kind.Error, 0, 0, h1.request,
                                     wire.encode_code_message(99, "from the future")))
        assert await t2 == ["second"]
        with pytest.raises(CallError) as e:
            await t1
        assert e.value.code == 99 and e.value.name == "Other(99)"
        assert e.value.message == "from the future" and e.value.command == "one"
        # A reply nobody waits for is dropped; a reply of the wrong form fails its call.
        fake.write(wire.encode_reply(12345, "stray"))
        t3 = asyncio.ensure_future(c.call_console("three", "x"))
        h3, _ = await fake.read_frame()
        fake.write(wire.encode_reply(h3.request, ["not text"]))
        with pytest.raises(CallError) as e:
            await t3
        assert e.value.code == ErrorCode.BadPayload
        assert not c.closed
        await c.close()
        await fake.close()
    run(main())


def test_goaway_fails_pending_calls():
    async def main():
        fake, c = await pair()
        tasks = [asyncio.ensure_future(c.call_console("echo", str(i), timeout=None)) for i in range(3)]
        for _ in range(3):
            await fake.read_frame()
        fake.write(wire.encode_frame(Kind.GoAway, 0, 0, 0,
                                     wire.encode_code_message(10, "kicked by admin")))
        for t in tasks:
            with pytest.raises(zserver.GoAway) as e:
                await asyncio.wait_for(t, WAIT)
            assert e.value.code == zserver.GoAwayCode.Kicked and e.value.reason == "kicked by admin"
        assert c.closed
        await c.close()
        await fake.close()
    run(main())


BAD_FRAMES = [
    ("BadMagic", b"HTTP/1.1 400 Bad Request\r\n\r\n"),
    ("UnsupportedVersion", bytes.fromhex("5a020300000000000100000000000000")),
    ("UnknownKind", bytes.fromhex("5a010900000000000100000000000000")),
    ("InvalidFlags", bytes.fromhex("5a010501000000000100000000000000")),
    ("FrameTooLarge", bytes.fromhex("5a010300000000000100000001000001")),
    ("UnexpectedChannel", bytes.fromhex("5a010300070000000100000000000000")),
    ("Malformed", bytes.fromhex("5a01020000000000000000000100000000")),  # empty name
    ("InvalidUtf8", bytes.fromhex("5a01020000000000000000000300000002fffe")),
    ("Malformed", bytes.fromhex("5a010400000000000100000001000000ff")),  # short error body
]


@pytest.mark.parametrize("kind,data", BAD_FRAMES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD_FRAMES)])
def test_bad_frame_closes_with_protocol_error(kind, data):
    async def main():
        fake, c = await pair()
        task = asyncio.ensure_future(c.call_console("echo", "x", timeout=None))
        await fake.read_frame()
        fake.write(data)
        with pytest.raises(ProtocolError) as e:
            await asyncio.wait_for(task, WAIT)
        assert e.value.wire_error is not None and e.value.wire_error.kind == kind
        assert c.closed and c.close_reason is e.value
        # The client told the server why before closing.
        h, body = await fake.read_frame()
        assert h.kind == Kind.GoAway
        code, _ = wire.parse_code_message(body)
        assert code == (2 if kind == "FrameTooLarge" else 1)
        with pytest.raises(ProtocolError):
            await c.call_console("echo", "y")
        await c.close()
        await fake.close()
    run(main())


def test_bad_compressed_push_is_dropped_and_connection_lives(caplog):
    async def main():
        fake, c = await pair()
        seen = []
        c.on("p", seen.append)
        payload = wire.compress(b"z" * 5000)
        lying = (17 << 20).to_bytes(4, "little") + payload[4:]  # claims 17 MiB
        frame = wire.encode_frame(Kind.Send, wire.COMPRESSED, 0, 0, wire.encode_name("p") + lying)
        fake.write(frame)
        task = asyncio.ensure_future(c.call_console("echo", "alive"))
        await answer_call(fake)
        assert await task == "alive"
        assert seen == [] and not c.closed
        await c.close()
        await fake.close()

    with caplog.at_level(logging.WARNING, logger="zserver"):
        run(main())
    assert any("FrameTooLarge" in r.getMessage() for r in caplog.records)


def test_connection_cut_mid_frame_and_eof():
    async def main():
        fake, c = await pair()
        task = asyncio.ensure_future(c.call_console("echo", "x", timeout=None))
        await fake.read_frame()
        fake.write(bytes.fromhex("5a01030000000000010000000a000000") + b"abc")  # 3 of 10 bytes
        await fake.writer.drain()
        fake.writer.close()
        with pytest.raises(ConnectionClosed) as e:
            await asyncio.wait_for(task, WAIT)
        assert "inside a Reply frame" in str(e.value)
        await c.close()
        fake.server.close()

        fake, c = await pair()
        task = asyncio.ensure_future(c.call_console("echo", "x", timeout=None))
        await fake.read_frame()
        fake.writer.close()
        with pytest.raises(ConnectionClosed) as e:
            await asyncio.wait_for(task, WAIT)
        assert "closed the connection" in str(e.value)
        await c.close()
        fake.server.close()
    run(main())


def test_payloads_are_checked_before_sending():
    async def main():
        fake, c = await pair()
        with pytest.raises(TypeError):
            await c.call_console("echo", ["not", "text"])
        with pytest.raises(TypeError):
            await c.call_stream("echo_stream", "not values")
        with pytest.raises(ValueError):
            await c.call_console("x" * 256, "")
        with pytest.raises(OverflowError):
            await c.call_stream("echo_stream", [1 << 64])
        import os
        with pytest.raises(zserver.WireError) as e:
            await c.call_console("echo", os.urandom(9 << 20).hex())  # 18 MiB of text
        assert e.value.kind == "FrameTooLarge"
        assert not c._pending and not c.closed
        await c.close()
        await fake.close()
    run(main())


def test_keepalive_closes_a_silent_connection():
    async def main():
        fake = await Fake().start()
        c = await zserver.connect("127.0.0.1", fake.port, plaintext=True, keepalive=0.2, timeout=1.0)
        await fake.accept()
        h, _ = await fake.read_frame()  # the keepalive Ping, never answered
        assert h.kind == Kind.Ping
        why = await asyncio.wait_for(c.wait_closed(), WAIT)
        assert "keepalive" in str(why)
        with pytest.raises(ConnectionClosed):
            await c.call_console("echo", "x")
        await c.close()
        await fake.close()
    run(main())


def test_handler_names_match_in_ascii_only():
    async def main():
        fake, c = await pair()
        got = []
        done = asyncio.get_running_loop().create_future()
        c.on("Über.X", got.append)  # "Ü" is not ASCII: it must match exactly
        c.on("end", lambda _: done.set_result(None))
        fake.write(wire.encode_call(Kind.Send, 0, "über.x", "lower"))
        fake.write(wire.encode_call(Kind.Send, 0, "Über.x", "upper"))
        fake.write(wire.encode_call(Kind.Send, 0, "END", ""))
        await asyncio.wait_for(done, WAIT)
        assert got == ["upper"]
        await c.close()
        await fake.close()
    run(main())


def test_calls_in_flight_are_bounded():
    async def main():
        fake = await Fake().start()
        c = await zserver.connect("127.0.0.1", fake.port, plaintext=True, keepalive=None,
                                  max_in_flight=2)
        await fake.accept()
        tasks = [asyncio.ensure_future(c.call_console("echo", str(i))) for i in range(10)]
        answered = 0
        while answered < 10:
            h, body = await fake.read_frame()
            assert len(c._pending) <= 2
            fake.write(wire.encode_reply(h.request, wire.parse_call_body(body)[1].decode()))
            answered += 1
        assert [await t for t in tasks] == [str(i) for i in range(10)]
        await c.close()
        await fake.close()
    run(main())


def test_close_from_a_handler():
    async def main():
        fake, c = await pair()

        async def bye(_):
            await c.close()

        c.on("bye", bye)
        fake.write(wire.encode_call(Kind.Send, 0, "bye", ""))
        why = await asyncio.wait_for(c.wait_closed(), WAIT)
        assert "client closed" in str(why)
        h, body = await fake.read_frame()
        assert h.kind == Kind.GoAway and wire.parse_code_message(body)[0] == 0
        await c.close()  # twice is fine
        await fake.close()
    run(main())
