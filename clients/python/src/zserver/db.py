"""The data store from Python (PROTOCOL.md §18): records with versions, queries whose rows
come under this end's credit, and watches. Rows arrive as ``db.rows`` / ``db.change``
pushes carrying a packed run: ``[id u64 LE][length u32 LE][record encoding]...``."""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
from dataclasses import dataclass
from typing import Any, AsyncIterator

from .errors import CallError, ErrorCode, ZServerError

_ids = itertools.count(1)


@dataclass
class Record:
    """A stored record: one of ``json``, ``bytes``, ``frame`` (a DataFrame's encoding) is set."""

    id: int
    version: int
    expires_at: int | None
    json: Any = None
    bytes: bytes | None = None
    frame: bytes | None = None


def decode_record(rid: int, raw: bytes) -> Record:
    """A record's encoding (``[1][kind][version u64][expiry u64][value]``) as a ``Record``."""
    if len(raw) < 18:
        raise ZServerError(f"record {rid}: {len(raw)} bytes, shorter than its head")
    if raw[0] != 1:
        raise ZServerError(f"record {rid}: unknown format {raw[0]}")
    version, expires = struct.unpack_from("<QQ", raw, 2)
    r = Record(rid, version, expires or None)
    body = bytes(raw[18:])
    if raw[1] == 1:
        r.json = json.loads(body)
    elif raw[1] == 2:
        r.bytes = body
    elif raw[1] == 3:
        r.frame = body
    else:
        raise ZServerError(f"record {rid}: unknown kind {raw[1]}")
    return r


def unpack_rows(packed: bytes | None) -> list[Record]:
    """The records of a packed run of rows, decoded."""
    data = memoryview(packed or b"")
    out, at = [], 0
    while at < len(data):
        if at + 12 > len(data):
            raise ZServerError(f"a row cut short: {len(data) - at} bytes of its 12-byte head")
        rid, length = struct.unpack_from("<QI", data, at)
        if at + 12 + length > len(data):
            raise ZServerError(f"row {rid} cut short")
        out.append(decode_record(rid, data[at + 12:at + 12 + length]))
        at += 12 + length
    return out


class _Feeds:
    """Routes ``db.rows`` and ``db.change`` pushes of a client to queues by id."""

    def __init__(self, client):
        self.queues: dict[str, asyncio.Queue] = {}
        client.on("db.rows", self._route)
        client.on("db.change", self._route)

    def _route(self, values) -> None:
        if isinstance(values, list) and values and values[0] in self.queues:
            self.queues[values[0]].put_nowait(values)

    def open(self, fid: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self.queues[fid] = q
        return q

    def close(self, fid: str) -> None:
        self.queues.pop(fid, None)


def feeds(client) -> _Feeds:
    f = getattr(client, "_db_feeds", None)
    if f is None:
        f = _Feeds(client)
        client._db_feeds = f
    return f


class Rows:
    """A running query: ``async for record in rows``; ``token`` starts it again after the
    last batch read whole (``client.db_query(db, resume=token)``)."""

    def __init__(self, client, request: dict, window: int, window_bytes: int):
        self.client = client
        self.id = f"pyq{next(_ids)}"
        self.window, self.window_bytes = window, window_bytes
        self.used = [0, 0]
        self.token = ""
        self.examined = 0
        self.done = False
        self._feeds = feeds(client)
        self._queue = self._feeds.open(self.id)
        self._request = dict(request, query=self.id, credit_rows=window, credit_bytes=window_bytes)
        self._started = False

    async def next_batch(self) -> list[Record] | None:
        """The next batch of records, or ``None`` after the last."""
        if self.done:
            return None
        if not self._started:
            self._started = True
            try:
                await self.client.call_json("db.query", self._request)
            except BaseException:
                self._finish()
                raise
        _, kind, token, examined, code, message, packed = await self._queue.get()
        self.examined = int(examined)
        self.token = token
        if kind == "error":
            self._finish()
            raise CallError(int(code), message, "db.query")
        rows = unpack_rows(packed)
        if kind == "end":
            self._finish()
            return rows
        self.used[0] += len(rows)
        self.used[1] += len(packed)
        if self.used[0] * 2 >= self.window or self.used[1] * 2 >= self.window_bytes:
            (r, b), self.used = self.used, [0, 0]
            try:
                await self.client.call_json("db.credit", {"query": self.id, "rows": r, "bytes": b})
            except CallError as e:
                if e.code != ErrorCode.NotFound:  # ended meanwhile: its last push is coming
                    raise
        return rows

    def _finish(self) -> None:
        self.done = True
        self._feeds.close(self.id)

    async def stop(self) -> None:
        """Ends the query on the server."""
        if not self.done and self._started:
            await self.client.call_json("db.stop", {"query": self.id})

    async def __aiter__(self) -> AsyncIterator[Record]:
        while (batch := await self.next_batch()) is not None:
            for r in batch:
                yield r

    async def collect(self) -> list[Record]:
        return [r async for r in self]


class Watch:
    """A running watch: ``async for kind, record in watch`` (``record`` None for 'synced')."""

    def __init__(self, client, request: dict):
        self.client = client
        self.id = f"pyw{next(_ids)}"
        self._feeds = feeds(client)
        self._queue = self._feeds.open(self.id)
        self._request = dict(request, watch=self.id)
        self._started = False
        self.stopped = False

    async def __aiter__(self):
        if not self._started:
            self._started = True
            await self.client.call_json("db.watch", self._request)
        while not self.stopped:
            values = await self._queue.get()
            kind = values[1]
            if kind == "overflow":
                raise ZServerError(f"the watch fell behind by {values[4]} changes: watch again")
            if kind == "error":
                raise CallError(int(values[4]), values[5], "db.watch")
            if kind == "synced":
                yield kind, None
                continue
            for r in unpack_rows(values[3]):
                yield kind, r

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self._feeds.close(self.id)
            await self.client.call_json("db.unwatch", {"watch": self.id})
