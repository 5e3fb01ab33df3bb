"""The client against a real `zs serve` (see conftest.py)."""

from __future__ import annotations

import asyncio
import json
import ssl
import struct

import pytest

import zserver
from zserver import (
    F32, F64, I8, I16, I32, I64, U8, U16, U32, U64, CallError, ConnectionClosed, ErrorCode,
    FingerprintMismatch, GoAway, GoAwayCode,
)
from zserver.dataframe import type_name

from conftest import ADMIN_PASSWORD, run

WAIT = 60.0  # generous: the machine may be loaded


async def plain(server, **kw):
    return await zserver.connect(server.host, server.port, plaintext=True, **kw)


async def admin(server):
    c = await plain(server)
    await c.login("admin", ADMIN_PASSWORD)
    return c


async def add_user(adm, user, password, roles=None):
    req = {"user": user, "password": password}
    if roles is not None:
        req["roles"] = roles
    return await adm.call_json("account.add", req)


def test_console_calls(server):
    async def main():
        async with await plain(server) as c:
            assert await c.call_console("echo", "hi") == "hi"
            assert await c.call_console("ECHO", "héllo 文 🙂") == "héllo 文 🙂"
            assert await c.call_console("echo", "") == ""
            stats = json.loads(await c.call_console("stats", ""))
            assert stats["console_in"] >= 3
    run(main())


def test_every_dataframe_type_round_trips(server):
    values = [
        True, False, None,
        I8(-128), I8(127), I16(-32768), I16(300), I32(-2**31), I32(7), I64(-2**63), I64(2**63 - 1),
        U8(0), U8(255), U16(65535), U32(2**32 - 1), U64(2**64 - 1), U64(1),
        F32(1.5), F32(-0.25), F64(3.141592653589793), -1e300,
        5,  # a plain int: i64
        "", "héllo", "x" * 40, "y" * 300, "z" * 70000,
        b"", b"\x00\x01\xff", b"\x07" * 300, b"\x08" * 70000,
        [], [I32(1), "two", [None, [U8(3)]]],
        {"name": "zserver", "port": U16(9818), "tags": ["a", "b"], "nested": {"k": F32(0.5)}},
        list(range(20)),
    ]

    async def main():
        async with await plain(server) as c:
            back = await c.call_stream("echo_stream", values)
            assert len(back) == len(values)
            for sent, got in zip(values, back):
                assert type_name(got) == type_name(sent), (sent, got)
                if isinstance(sent, F32):
                    assert struct.pack(">f", got) == struct.pack(">f", sent)
                else:
                    assert got == sent
            # A map whose key is an array comes back as Pairs.
            weird = [zserver.Pairs([([I32(1)], "array key"), ("k", 1), ("k", 2)])]
            assert await c.call_stream("echo_stream", weird) == weird
            assert await c.call_stream("echo_stream", []) == []
    run(main())


def test_many_calls_in_flight(server):
    async def main():
        async with await plain(server) as c:
            n = 600

            async def one(i):
                if i % 2:
                    return await c.call_console("echo", f"text {i}")
                return await c.call_stream("echo_stream", [I32(i), f"v{i}"])

            tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
            peak = 0
            while not all(t.done() for t in tasks):
                peak = max(peak, len(c._pending))
                await asyncio.sleep(0)  # a yield to the loop, not a timed wait
            results = [t.result() for t in tasks]
            for i, r in enumerate(results):
                assert r == (f"text {i}" if i % 2 else [i, f"v{i}"])
            assert peak > 1, "calls were not pipelined"
    run(main())


def test_large_reply_comes_compressed(server):
    async def main():
        async with await plain(server) as c:
            text = "zserver compresses replies of 1 KiB or more. " * 20000  # ~900 KiB
            before = dict(c.stats)
            assert await c.call_console("echo", text) == text
            assert c.stats["compressed_out"] == before["compressed_out"] + 1
            assert c.stats["compressed_in"] == before["compressed_in"] + 1
            values = ["q" * 5000, b"\x00" * 100000, list(range(1000))]
            assert await c.call_stream("echo_stream", values) == values
            assert c.stats["compressed_in"] == before["compressed_in"] + 2
            # Incompressible data goes as it is.
            import os
            noise = os.urandom(50000)
            assert await c.call_stream("echo_stream", [noise]) == [noise]
            assert c.stats["compressed_in"] == before["compressed_in"] + 2
    run(main())


def test_unknown_command(server):
    async def main():
        async with await plain(server) as c:
            with pytest.raises(CallError) as e:
                await c.call_console("no.such.command", "x")
            assert e.value.code == 1 and e.value.code is ErrorCode.UnknownCommand
            assert e.value.name == "UnknownCommand"
            assert "no.such.command" in e.value.message
            # The connection goes on.
            assert await c.call_console("echo", "still here") == "still here"
    run(main())


def test_wrong_payload_form_is_bad_payload(server):
    async def main():
        async with await plain(server) as c:
            with pytest.raises(CallError) as e:
                await c.call("echo_stream", "text to a stream command")
            assert e.value.code == ErrorCode.BadPayload
    run(main())


def test_send_one_way(server):
    async def main():
        async with await plain(server) as c:
            # The built-in commands all reply, so the server counts these one-way sends and
            # refuses them quietly (a log line at debug): the counts show they arrived.
            await c.send("echo", "one-way text")
            await c.send("echo_stream", [1, "x"])
            # Frames are handled in order: after this reply the sends have been read; the
            # server publishes its per-connection counts once per read, so the stats call
            # (read after this reply) sees them.
            assert await c.call_console("echo", "after") == "after"
            stats = json.loads(await c.call_console("stats", ""))
            assert stats["direct_console_in"] == 1
            assert stats["direct_stream_in"] == 1
    run(main())


def test_login_logout_whoami(server):
    async def main():
        async with await plain(server) as c:
            with pytest.raises(CallError) as e:
                await c.whoami()
            assert e.value.code == ErrorCode.NotLoggedIn
            with pytest.raises(CallError) as e:
                await c.login("admin", "wrong password")
            assert e.value.code == ErrorCode.AuthFailed and e.value.code == 15
            with pytest.raises(CallError) as e:
                await c.login("nobody", "some password")
            assert e.value.code == ErrorCode.AuthFailed
            me = await c.login("admin", ADMIN_PASSWORD, issue_token=True)
            assert me["user"] == "admin" and "admin" in me["roles"]
            assert me["token"].startswith("zst_")
            assert (await c.whoami())["user"] == "admin"
            await c.logout()
            with pytest.raises(CallError) as e:
                await c.whoami()
            assert e.value.code == ErrorCode.NotLoggedIn
            token = me["token"]
        async with await plain(server) as c2:
            assert (await c2.login(token=token))["user"] == "admin"
            assert (await c2.whoami())["user"] == "admin"
            with pytest.raises(CallError) as e:
                await c2.login(token="zst_" + "A" * 43)
            assert e.value.code == ErrorCode.AuthFailed
    run(main())


def test_push_to_another_users_connection(server):
    async def main():
        async with await admin(server) as adm:
            await add_user(adm, "bob", "bob-password")
            async with await plain(server) as bob:
                await bob.login("bob", "bob-password")
                got: asyncio.Future = asyncio.get_running_loop().create_future()
                seen_sync = []

                async def on_chat(text):
                    got.set_result(text)

                bob.on("Chat.Say", on_chat)  # names match case-insensitively
                bob.on("sync.push", seen_sync.append)
                r = await adm.push_send("bob", "sync.push", "first")
                assert r["live"] == 1
                r = await adm.push_send("bob", "chat.say", "hello bob")
                assert r["live"] == 1
                assert await asyncio.wait_for(got, WAIT) == "hello bob"
                assert seen_sync == ["first"]  # handlers run in arrival order
                # Bob may not push: only admin and push roles.
                with pytest.raises(CallError) as e:
                    await bob.push_send("admin", "x", "y")
                assert e.value.code == ErrorCode.Forbidden
    run(main())


def test_publish_subscribe(server):
    async def main():
        async with await admin(server) as adm:
            await add_user(adm, "dora", "dora-password")
            async with await plain(server) as dora:
                await dora.login("dora", "dora-password")
                got = asyncio.get_running_loop().create_future()
                dora.on("news.item", lambda text: got.set_result(text))
                assert (await dora.subscribe("news"))["topic"] == "news"
                r = await adm.publish("news", "news.item", "extra!")
                assert r["delivered"] == 1
                assert await asyncio.wait_for(got, WAIT) == "extra!"
                assert (await dora.unsubscribe("news"))["was_subscribed"] is True
    run(main())


def test_offline_inbox_after_login(server):
    async def main():
        async with await admin(server) as adm:
            await add_user(adm, "carol", "carol-password")
            r = await adm.push_send("carol", "mail.new", "you have mail", id="m-1")
            assert r["live"] == 0 and r["stored"]
            again = await adm.push_send("carol", "mail.new", "you have mail", id="m-1")
            assert again["duplicate"] is True
        async with await plain(server) as carol:
            waiting = asyncio.get_running_loop().create_future()
            carol.on("inbox.waiting", lambda text: waiting.set_result(json.loads(text)))
            with pytest.raises(CallError) as e:
                await carol.inbox_list()
            assert e.value.code == ErrorCode.NotLoggedIn
            await carol.login("carol", "carol-password")
            assert (await asyncio.wait_for(waiting, WAIT))["count"] == 1
            listed = await carol.inbox_list()
            msgs = listed["messages"]
            assert [(m["command"], m["text"], m["id"]) for m in msgs] == [
                ("mail.new", "you have mail", "m-1")]
            assert msgs[0]["seq"] == r["stored"]
            assert (await carol.inbox_ack([msgs[0]["seq"]]))["removed"] == 1
            assert (await carol.inbox_list())["messages"] == []
    run(main())


def test_tls_with_pinned_fingerprint(zs):
    s = zs(tls=True)
    assert s.fingerprint and len(s.fingerprint) == 43

    async def main():
        # The pin is the certificate's: check it against the file the server made.
        der = ssl.PEM_cert_to_DER_cert((s.data_dir / "cert.pem").read_text())
        assert zserver.fingerprint_of(der) == s.fingerprint
        async with await zserver.connect(s.host, s.port, fingerprint=s.fingerprint) as c:
            assert await c.call_console("echo", "over tls") == "over tls"
            big = "tls " * 100000
            assert await c.call_console("echo", big) == big
            assert await c.call_stream("echo_stream", [U64(1), "x"]) == [1, "x"]
        wrong = ("A" if s.fingerprint[0] != "A" else "B") + s.fingerprint[1:]
        with pytest.raises(FingerprintMismatch) as e:
            await zserver.connect(s.host, s.port, fingerprint=wrong)
        assert e.value.actual == s.fingerprint and e.value.expected == wrong
        assert "mismatch" in str(e.value)
        with pytest.raises(ValueError):
            await zserver.connect(s.host, s.port)  # TLS without a pin
        with pytest.raises(ValueError):
            await zserver.connect(s.host, s.port, fingerprint="too-short")
        # A plaintext client at a TLS listener is told so.
        c = await plain(s)
        with pytest.raises(ConnectionClosed):
            await c.call_console("echo", "x", timeout=WAIT)
        why = await asyncio.wait_for(c.wait_closed(), WAIT)
        assert isinstance(why, GoAway) and why.code == GoAwayCode.EncryptionRequired
        await c.close()
    run(main())


def test_goaway_server_full(zs):
    s = zs("--max-connections", "1")

    async def main():
        async with await plain(s) as first:
            assert await first.call_console("echo", "a") == "a"
            second = await plain(s)
            with pytest.raises(GoAway) as e:
                await second.call_console("echo", "b", timeout=WAIT)
            assert e.value.code == GoAwayCode.ServerFull
            assert second.closed and second.close_reason.code == GoAwayCode.ServerFull
            with pytest.raises(GoAway):  # a closed client refuses further calls at once
                await second.call_console("echo", "c")
            await second.close()
            assert await first.call_console("echo", "a") == "a"
    run(main())


def test_goaway_on_shutdown(server):
    async def main():
        c = await plain(server)
        assert await c.call_console("echo", "x") == "x"
        server.interrupt()
        why = await asyncio.wait_for(c.wait_closed(), WAIT)
        rc = await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, WAIT)
        assert isinstance(why, GoAway), (why, rc, server.log())
        assert why.code == GoAwayCode.ShuttingDown
        assert rc == 0
        with pytest.raises(GoAway):
            await c.call_console("echo", "y")
        await c.close()
    run(main())


def test_killed_server_fails_pending_calls(server):
    async def main():
        c = await plain(server)
        server.stop()  # the calls below stay unanswered
        calls = [asyncio.ensure_future(c.call_console("echo", f"x{i}", timeout=None))
                 for i in range(5)]
        while len(c._pending) < 5:
            await asyncio.sleep(0)  # a yield: until the calls are written
        assert not any(t.done() for t in calls)
        server.proc.kill()
        for t in calls:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(t, WAIT)
        assert c.closed
        await c.close()
    run(main())


def test_idle_timeout_and_keepalive(zs):
    s = zs("--idle-timeout", "2")

    async def main():
        kept = await plain(s, keepalive=0.5)
        # Two quiet clients in turn: each is closed for idling, and `kept` (as quiet, but
        # pinging) lives through both, twice the idle timeout at least.
        for _ in range(2):
            quiet = await plain(s, keepalive=None)
            why = await asyncio.wait_for(quiet.wait_closed(), WAIT)
            assert isinstance(why, GoAway) and why.code == GoAwayCode.IdleTimeout
            await quiet.close()
        assert not kept.closed
        assert await kept.call_console("echo", "alive") == "alive"
        assert await kept.ping() >= 0
        await kept.close()
    run(main())


def test_call_timeout(server):
    async def main():
        async with await plain(server) as c:
            server.stop()
            try:
                with pytest.raises(zserver.CallTimeout):
                    await c.call_console("echo", "x", timeout=0.5)
                assert not c._pending
            finally:
                server.resume()
            assert await c.call_console("echo", "after", timeout=WAIT) == "after"
    run(main())


def test_tls_refusals_are_clear_errors(zs):
    full = zs("--max-connections", "1", tls=True)
    plain_server = zs()

    async def main():
        async with await zserver.connect(full.host, full.port, fingerprint=full.fingerprint) as a:
            assert await a.call_console("echo", "a") == "a"
            # The full server refuses in plaintext, before any TLS.
            with pytest.raises(ConnectionClosed) as e:
                await zserver.connect(full.host, full.port, fingerprint=full.fingerprint)
            assert "TLS handshake" in str(e.value)
        # A TLS client at a plaintext server.
        with pytest.raises(ConnectionClosed) as e:
            await zserver.connect(plain_server.host, plain_server.port,
                                  fingerprint=full.fingerprint)
        assert "TLS handshake" in str(e.value)
    run(main())
