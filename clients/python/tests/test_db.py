"""The data store from Python against a real `zs serve`: records and compare-and-set,
queries streamed under credit (small windows, resume tokens), counts, watches."""

from __future__ import annotations

import pytest

import zserver
from zserver import CallError, ErrorCode

from conftest import ADMIN_PASSWORD, run


async def admin(server):
    c = await zserver.connect(server.host, server.port, plaintext=True)
    await c.login("admin", ADMIN_PASSWORD)
    return c


async def people(c, n=60):
    await c.db_create("people", indexes=["city"])
    for i in range(n):
        await c.db_insert("people", {"name": f"p{i}", "age": i, "city": "Oslo" if i % 2 else "Lima"})


def test_records_and_compare_and_set(zs):
    server = zs("--services", "accounts,db")

    async def body():
        c = await admin(server)
        await c.db_create("cards")
        r = await c.db_insert("cards", {"name": "Ada"})
        assert r["version"] == 1
        assert (await c.db_get("cards", r["id"])).json == {"name": "Ada"}
        assert (await c.db_update("cards", r["id"], {"name": "Ada L."}, version=1))["version"] == 2
        with pytest.raises(CallError) as e:
            await c.db_update("cards", r["id"], {"name": "?"}, version=1)
        assert e.value.code == ErrorCode.VersionMismatch
        assert (await c.db_delete("cards", r["id"]))["deleted"] is True
        with pytest.raises(CallError) as e:
            await c.db_get("cards", r["id"])
        assert e.value.code == ErrorCode.NotFound
        await c.close()

    run(body())


def test_queries_stream_under_a_small_window_and_resume_elsewhere(zs):
    server = zs("--services", "accounts,db")

    async def body():
        c = await admin(server)
        await people(c)
        rows = await c.db_query("people", "city == $c and age >= 10", params={"c": "Oslo"}, window=3).collect()
        assert [r.json["name"] for r in rows] == [f"p{i}" for i in range(11, 60, 2)]
        assert await c.db_count("people", 'city == "Lima"') == 30
        with pytest.raises(CallError) as e:
            await c.db_query("people", "age >").collect()
        assert e.value.code == ErrorCode.InvalidArgument and "at byte 5" in e.value.message
        q = c.db_query("people", "age < 40", window=4)
        first = []
        while len(first) < 12:
            first += await q.next_batch()
        await q.stop()
        c2 = await admin(server)
        rest = await c2.db_query(resume=q.token).collect()
        assert [r.json["age"] for r in first + rest] == list(range(40))
        await c.close()
        await c2.close()

    run(body())


def test_a_watch_sends_its_snapshot_then_changes(zs):
    server = zs("--services", "accounts,db")

    async def body():
        c = await admin(server)
        await people(c, 4)
        w = c.db_watch("people", 'city == "Oslo"', snapshot=True)
        it = w.__aiter__()
        assert [await it.__anext__() for _ in range(3)][2] == ("synced", None)
        r = await c.db_insert("people", {"name": "o", "city": "Oslo"})
        await c.db_insert("people", {"name": "x", "city": "Rome"})
        await c.db_delete("people", r["id"])
        kind, rec = await it.__anext__()
        assert (kind, rec.id) == ("insert", r["id"])
        kind, rec = await it.__anext__()
        assert (kind, rec.json["name"]) == ("delete", "o")
        await w.stop()
        await c.close()

    run(body())
