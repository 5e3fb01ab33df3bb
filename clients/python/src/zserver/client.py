"""The asyncio client: one connection, many calls in flight, pushes to handlers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import json
import logging
import ssl
from typing import Any, Awaitable, Callable

from . import wire
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
)
from .wire import Kind

log = logging.getLogger("zserver")

Payload = Any  # str (text) or list (a DataFrame)
Handler = Callable[[Payload], Any]

_NOT_SET = object()
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _key(command: str) -> str:
    """Command names match case-insensitively in ASCII only, as the server matches them."""
    return command.translate(_ASCII_LOWER)


def fingerprint_of(der: bytes) -> str:
    """A certificate's fingerprint as zserver prints it: SHA-256 of the DER, base64url
    without padding (43 characters)."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def _check_fingerprint(fp: str) -> str:
    fp = fp.strip()
    try:
        raw = base64.urlsafe_b64decode(fp + "=")
    except Exception:
        raw = b""
    if len(fp) != 43 or len(raw) != 32:
        raise ValueError(f"a fingerprint is 43 characters of base64url (no padding), got {fp!r}")
    return fp


async def connect(
    host: str,
    port: int,
    *,
    plaintext: bool = False,
    tls: bool = True,
    fingerprint: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 10.0,
    call_timeout: float | None = 30.0,
    keepalive: float | None = 20.0,
    compress: bool = True,
    max_in_flight: int = 1024,
    push_queue: int = 1024,
    max_frame_len: int = wire.MAX_FRAME_LEN,
) -> "Client":
    """Connects to a zserver.

    ``plaintext=True``: frames from the first byte (trusted networks, loopback). Otherwise
    TLS 1.3 (``tls=True``; Noise is not supported by this client) with the server's
    certificate pinned by ``fingerprint`` (43 characters, as ``zs serve --tls`` prints it),
    or checked by your own ``ssl_context`` (CA verification).

    ``timeout`` bounds the connection and handshake; ``call_timeout`` is the default of each
    call (None: wait forever); ``keepalive`` sends a Ping after that many seconds without
    sending (None: off) and closes the connection when its Pong does not come within
    ``timeout``.
    """
    ctx: ssl.SSLContext | None = None
    if not plaintext:
        if not tls:
            raise ValueError("this client speaks plaintext or TLS; Noise is not supported")
        if ssl_context is not None:
            ctx = ssl_context
        elif fingerprint is not None:
            fingerprint = _check_fingerprint(fingerprint)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            # The certificate is self-signed: no CA check; the pin below is the check (the
            # TLS handshake still proves the server holds the certificate's key).
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            raise ValueError(
                "a TLS connection needs fingerprint= (the server's certificate fingerprint) or "
                "ssl_context=; pass plaintext=True for a plaintext server"
            )

    async def open_():
        if ctx is None:
            return await asyncio.open_connection(host, port)
        return await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname=server_hostname or host,
            ssl_handshake_timeout=timeout,
        )

    try:
        reader, writer = await asyncio.wait_for(open_(), timeout)
    except asyncio.TimeoutError:
        raise ConnectionClosed(f"could not connect to {host}:{port} within {timeout} s") from None
    except ssl.SSLError as e:
        # A zserver refuses a connection it cannot take (full, shutting down) with a
        # plaintext GoAway before any handshake, which TLS reads as a bad record.
        raise ConnectionClosed(
            f"TLS handshake with {host}:{port} failed: {e} (the server may speak plaintext or "
            "Noise, or have refused the connection in plaintext: full or shutting down)"
        ) from e
    if ctx is not None and fingerprint is not None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        actual = fingerprint_of(der or b"")
        if not hmac.compare_digest(actual, fingerprint):
            writer.close()
            raise FingerprintMismatch(fingerprint, actual)
    client = Client(
        reader, writer, call_timeout=call_timeout, keepalive=keepalive, ping_timeout=timeout,
        compress=compress, max_in_flight=max_in_flight, push_queue=push_queue,
        max_frame_len=max_frame_len,
    )
    client._start()
    return client


class Client:
    """A connection to a zserver. Make one with :func:`connect`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 call_timeout: float | None, keepalive: float | None, ping_timeout: float,
                 compress: bool, max_in_flight: int, push_queue: int, max_frame_len: int):
        self._reader = reader
        self._writer = writer
        self._call_timeout = call_timeout
        self._keepalive = keepalive
        self._ping_timeout = ping_timeout
        self._compress = compress
        self._max_frame_len = max_frame_len
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: dict[int, tuple[asyncio.Future, str]] = {}
        self._pings: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._handlers: dict[str, Handler] = {}
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=push_queue)
        self._closed: ConnectionClosed | None = None
        self._closed_event = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._last_sent = 0.0
        #: Counters: frames in and out, and how many of them had compressed payloads.
        self.stats = {"frames_in": 0, "frames_out": 0, "compressed_in": 0, "compressed_out": 0}

    # -- life ------------------------------------------------------------------------------

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_sent = loop.time()
        self._tasks.append(loop.create_task(self._read_loop(), name="zserver-reader"))
        self._tasks.append(loop.create_task(self._dispatch_loop(), name="zserver-dispatch"))
        if self._keepalive:
            self._tasks.append(loop.create_task(self._keepalive_loop(), name="zserver-keepalive"))

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def close_reason(self) -> ConnectionClosed | None:
        """Why the connection closed (a GoAway, a protocol error, ...), or None while open."""
        return self._closed

    async def wait_closed(self) -> ConnectionClosed:
        """Waits until the connection is closed and returns why."""
        await self._closed_event.wait()
        assert self._closed is not None
        return self._closed

    async def close(self) -> None:
        """Closes the connection with a GoAway Normal; pending calls fail."""
        if self._closed is None:
            self._write_raw(wire.encode_frame(
                Kind.GoAway, 0, 0, 0, wire.encode_code_message(GoAwayCode.Normal, "client closed")))
        self._shutdown(ConnectionClosed("the client closed the connection"))
        current = asyncio.current_task()  # close() may run in a handler (the dispatcher)
        others = [t for t in self._tasks if t is not current]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        except Exception:  # already gone, or the peer does not finish TLS's close
            pass

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _shutdown(self, why: ConnectionClosed) -> None:
        """Marks the client closed, fails every pending call with ``why``, drops the socket."""
        if self._closed is not None:
            return
        self._closed = why
        self._closed_event.set()
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(why)
        self._pending.clear()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(why)
        self._pings.clear()
        try:
            self._queue.put_nowait(None)  # wakes the dispatcher
        except asyncio.QueueFull:
            pass
        try:
            self._writer.close()
        except Exception:
            pass

    def _fail_protocol(self, err: WireError | str) -> None:
        """The server broke the protocol: tell it (GoAway ProtocolError) and close."""
        if isinstance(err, WireError):
            why = ProtocolError(str(err), err)
            code = GoAwayCode.FrameTooLarge if err.kind == "FrameTooLarge" else GoAwayCode.ProtocolError
        else:
            why = ProtocolError(err)
            code = GoAwayCode.ProtocolError
        log.error("zserver: %s; closing", why)
        if self._closed is None:
            self._write_raw(wire.encode_frame(
                Kind.GoAway, 0, 0, 0, wire.encode_code_message(code, str(err)[:1024])))
        self._shutdown(why)

    # -- writing ---------------------------------------------------------------------------

    def _write_raw(self, frame: bytes) -> None:
        try:
            self._writer.write(frame)
            self.stats["frames_out"] += 1
            if frame[3] & wire.COMPRESSED:
                self.stats["compressed_out"] += 1
            self._last_sent = asyncio.get_running_loop().time()
        except Exception as e:  # the transport is gone
            self._shutdown(ConnectionClosed(f"connection lost: {e}"))

    async def _write(self, frame: bytes) -> None:
        if self._closed is not None:
            raise self._closed
        self._write_raw(frame)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as e:
            self._shutdown(ConnectionClosed(f"connection lost: {e}"))
        if self._closed is not None:
            raise self._closed

    def _new_id(self) -> int:
        while True:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            i = self._next_id
            if i != 0 and i not in self._pending and i not in self._pings:
                return i

    # -- calls -----------------------------------------------------------------------------

    async def _call(self, command: str, payload: Payload, timeout) -> Payload:
        if timeout is _NOT_SET:
            timeout = self._call_timeout
        async with self._slots:
            if self._closed is not None:
                raise self._closed
            rid = self._new_id()
            frame = wire.encode_call(Kind.Call, rid, command, payload,
                                     compress_payload=self._compress,
                                     max_frame_len=self._max_frame_len)
            fut = asyncio.get_running_loop().create_future()
            self._pending[rid] = (fut, command)
            try:
                await self._write(frame)
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), timeout)
                except asyncio.TimeoutError:
                    if fut.done() and not fut.cancelled():
                        return fut.result()
                    raise CallTimeout(f"{command}: no reply within {timeout} s") from None
            finally:
                entry = self._pending.get(rid)
                if entry is not None and entry[0] is fut:
                    del self._pending[rid]

    async def call_console(self, command: str, text: str = "", *, timeout=_NOT_SET) -> str:
        """Calls a console command with text and returns its text reply."""
        if not isinstance(text, str):
            raise TypeError("call_console takes text (str); use call_stream for values")
        reply = await self._call(command, text, timeout)
        if not isinstance(reply, str):
            raise CallError(ErrorCode.BadPayload, "expected a text reply, got a DataFrame", command)
        return reply

    async def call_stream(self, command: str, values=(), *, timeout=_NOT_SET) -> list:
        """Calls a stream command with a DataFrame (a list of values) and returns the
        reply's values."""
        if not isinstance(values, (list, tuple)):
            raise TypeError("call_stream takes a list of values; use call_console for text")
        reply = await self._call(command, list(values), timeout)
        if not isinstance(reply, list):
            raise CallError(ErrorCode.BadPayload, "expected a DataFrame reply, got text", command)
        return reply

    async def call(self, command: str, payload: Payload = "", *, timeout=_NOT_SET) -> Payload:
        """Calls with text (``str``) or a DataFrame (list); returns whichever form the reply has."""
        return await self._call(command, payload, timeout)

    async def call_json(self, command: str, request: Any = None, *, timeout=_NOT_SET) -> Any:
        """A console call whose text is JSON both ways (the services of PROTOCOL.md §12-§14)."""
        text = "{}" if request is None else json.dumps(request)
        reply = await self.call_console(command, text, timeout=timeout)
        return json.loads(reply) if reply else None

    async def send(self, command: str, payload: Payload = "") -> None:
        """Sends a one-way (direct) command: text (``str``) or a DataFrame (list)."""
        frame = wire.encode_call(Kind.Send, 0, command, payload,
                                 compress_payload=self._compress, max_frame_len=self._max_frame_len)
        await self._write(frame)

    async def ping(self, *, timeout: float | None = None) -> float:
        """Sends a Ping and returns the round trip in seconds."""
        loop = asyncio.get_running_loop()
        if self._closed is not None:
            raise self._closed
        rid = self._new_id()
        fut = loop.create_future()
        self._pings[rid] = fut
        start = loop.time()
        try:
            await self._write(wire.encode_frame(Kind.Ping, 0, 0, rid, b""))
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout or self._ping_timeout)
            except asyncio.TimeoutError:
                raise CallTimeout("no Pong within the timeout") from None
        finally:
            self._pings.pop(rid, None)
        return loop.time() - start

    # -- pushes ----------------------------------------------------------------------------

    def on(self, command: str, handler: Handler | None = None):
        """Registers ``handler(payload)`` (sync or async) for a command the server sends
        (a push: a Send frame; text arrives as ``str``, a DataFrame as ``list``). Names match
        case-insensitively; a new handler replaces the old, ``None`` removes it. If the
        server *calls* the command, the handler's return value (``str`` or list) is the
        reply. Handlers run one at a time, in arrival order; a handler that makes calls on
        this client should start a task for them rather than await them when pushes may
        come faster than it handles them (the push queue is bounded). Usable as a
        decorator: ``@client.on("chat.say")``."""
        if handler is None and not isinstance(command, str):
            raise TypeError("on(command, handler)")

        def register(h: Handler) -> Handler:
            self._handlers[_key(command)] = h
            return h

        if handler is None:
            return register
        register(handler)
        return handler

    def off(self, command: str) -> None:
        self._handlers.pop(_key(command), None)

    async def _dispatch_loop(self) -> None:
        while True:
            if self._closed is not None and self._queue.empty():
                return
            item = await self._queue.get()
            if item is None:
                continue
            kind, rid, name, payload = item
            handler = self._handlers.get(_key(name))
            if handler is None:
                if kind == Kind.Call:
                    self._answer_error(rid, ErrorCode.UnknownCommand, f"unknown command: {name}")
                else:
                    log.info("zserver: ignoring command %r from the server: no handler", name)
                continue
            try:
                result = handler(payload)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as e:
                log.exception("zserver: handler for %r failed", name)
                if kind == Kind.Call:
                    self._answer_error(rid, ErrorCode.Application, f"{type(e).__name__}: {e}")
                continue
            if kind == Kind.Call and self._closed is None:
                if result is None:
                    result = ""
                try:
                    frame = wire.encode_reply(rid, result, compress_payload=self._compress,
                                              max_frame_len=self._max_frame_len)
                except WireError as e:
                    self._answer_error(rid, ErrorCode.ReplyTooLarge, str(e))
                except (TypeError, OverflowError) as e:
                    self._answer_error(rid, ErrorCode.Application, f"bad reply: {e}")
                else:
                    self._write_raw(frame)

    def _answer_error(self, rid: int, code: int, message: str) -> None:
        if self._closed is None:
            self._write_raw(wire.encode_frame(Kind.Error, 0, 0, rid,
                                              wire.encode_code_message(code, message)))

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while self._closed is None:
                try:
                    head = await self._reader.readexactly(wire.HEADER_LEN)
                except asyncio.IncompleteReadError as e:
                    if e.partial:
                        self._fail_protocol("the connection ended inside a frame header")
                    else:
                        self._shutdown(ConnectionClosed("the server closed the connection"))
                    return
                try:
                    h = wire.decode_header(head, self._max_frame_len)
                    wire.check_channel(h)
                except WireError as e:
                    self._fail_protocol(e)
                    return
                try:
                    body = await self._reader.readexactly(h.length) if h.length else b""
                except asyncio.IncompleteReadError:
                    self._fail_protocol(f"the connection ended inside a {h.kind.name} frame")
                    return
                await self._on_frame(h, body)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError, ssl.SSLError) as e:
            self._shutdown(ConnectionClosed(f"connection lost: {e}"))
        except Exception as e:  # a bug here must not leave calls hanging
            log.exception("zserver: reader failed")
            self._shutdown(ConnectionClosed(f"client error: {e!r}"))

    async def _on_frame(self, h: wire.Header, body: bytes) -> None:
        k = h.kind
        self.stats["frames_in"] += 1
        if h.flags & wire.COMPRESSED:
            self.stats["compressed_in"] += 1
        if k in (Kind.Reply, Kind.Error):
            if k == Kind.Error:
                try:
                    code, msg = wire.parse_code_message(body)
                except WireError as e:
                    self._fail_protocol(e)
                    return
            entry = self._pending.pop(h.request, None)
            if entry is None:
                log.debug("zserver: %s for request %d nobody waits for (timed out?)", k.name, h.request)
                return
            fut, command = entry
            if fut.done():
                return
            if k == Kind.Reply:
                try:
                    fut.set_result(wire.decode_payload(h.flags, body, self._max_frame_len))
                except WireError as e:
                    # The frame was sound, its payload was not: this call fails, the
                    # connection goes on (as the server treats a bad payload).
                    fut.set_exception(CallError(ErrorCode.BadPayload, f"bad reply payload: {e}", command))
            else:
                fut.set_exception(CallError(code, msg, command))
        elif k in (Kind.Send, Kind.Call):
            if (k == Kind.Call) == (h.request == 0):
                self._fail_protocol(f"a {k.name} with request id {h.request}")
                return
            try:
                name, data = wire.parse_call_body(body)
            except WireError as e:
                self._fail_protocol(e)
                return
            try:
                payload = wire.decode_payload(h.flags, data, self._max_frame_len)
            except WireError as e:
                log.warning("zserver: dropping %r from the server: %s", name, e)
                if k == Kind.Call:
                    self._answer_error(h.request, ErrorCode.BadPayload, str(e))
                return
            await self._queue.put((k, h.request, name, payload))
        elif k == Kind.Ping:
            self._write_raw(wire.encode_frame(Kind.Pong, 0, 0, h.request, b""))
        elif k == Kind.Pong:
            fut = self._pings.pop(h.request, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif k == Kind.GoAway:
            try:
                code, msg = wire.parse_code_message(body)
            except WireError as e:
                self._fail_protocol(e)
                return
            log.info("zserver: server sent GoAway %s: %s", code, msg)
            self._shutdown(GoAway(code, msg))
        elif k == Kind.StreamOpen:
            # Bulk streams (§7) are not supported: refuse at once, as an unknown command.
            self._write_raw(wire.encode_frame(
                Kind.StreamResult, 0, 0, h.request,
                wire.encode_code_message(ErrorCode.UnknownCommand,
                                         "this client does not take streams")))
        elif k == Kind.MuxOpen:
            # Virtual channels (§11) are not supported: refuse (code 3, refused).
            self._write_raw(wire.encode_frame(Kind.MuxRefuse, 0, h.channel, 0,
                                              b"\x03this client does not take channels"))
        else:
            # Frames of streams we refused, and other layers' frames we do not run.
            log.debug("zserver: ignoring a %s frame", k.name)

    async def _keepalive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = float(self._keepalive)
        while self._closed is None:
            idle = loop.time() - self._last_sent
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            try:
                await self.ping(timeout=self._ping_timeout)
            except CallTimeout:
                self._shutdown(ConnectionClosed(
                    f"keepalive: no Pong within {self._ping_timeout} s; closed"))
                return
            except ConnectionClosed:
                return

    # -- services: accounts (§12) ----------------------------------------------------------

    async def login(self, user: str | None = None, password: str | None = None, *,
                    token: str | None = None, issue_token: bool = False) -> dict:
        """``account.login`` with a user name and password, or a token; returns
        ``{"user", "roles"}`` (plus ``"token"``, ``"expires"`` with ``issue_token``)."""
        if token is not None:
            if user is not None or password is not None:
                raise ValueError("log in with user and password, or with a token, not both")
            req: dict = {"token": token}
        elif user is not None and password is not None:
            req = {"user": user, "password": password}
        else:
            raise ValueError("login needs user and password, or token=")
        if issue_token:
            req["issue_token"] = True
        return await self.call_json("account.login", req)

    async def logout(self) -> dict:
        return await self.call_json("account.logout", {})

    async def whoami(self) -> dict:
        return await self.call_json("account.whoami", {})

    # -- services: push and the inbox (§14) ------------------------------------------------

    async def push_send(self, user: str, command: str, text: str, *, id: str | None = None,
                        ttl: int | None = None, store: bool | None = None) -> dict:
        req: dict = {"user": user, "command": command, "text": text}
        for k, v in (("id", id), ("ttl", ttl), ("store", store)):
            if v is not None:
                req[k] = v
        return await self.call_json("push.send", req)

    async def subscribe(self, topic: str, *, presence: bool | None = None) -> dict:
        req: dict = {"topic": topic}
        if presence is not None:
            req["presence"] = presence
        return await self.call_json("push.subscribe", req)

    async def unsubscribe(self, topic: str) -> dict:
        return await self.call_json("push.unsubscribe", {"topic": topic})

    async def publish(self, topic: str, command: str, text: str) -> dict:
        return await self.call_json("push.publish", {"topic": topic, "command": command, "text": text})

    async def inbox_list(self, *, after: int | None = None, limit: int | None = None) -> dict:
        req: dict = {}
        if after is not None:
            req["after"] = after
        if limit is not None:
            req["limit"] = limit
        return await self.call_json("inbox.list", req)

    async def inbox_ack(self, seqs) -> dict:
        return await self.call_json("inbox.ack", {"seqs": list(seqs)})

    # -- the data store (PROTOCOL.md §18): JSON documents; rows under credit ----------------

    async def db_create(self, db: str, *, indexes=(), readers=(), writers=()) -> dict:
        return await self.call_json("db.create", {"db": db, "indexes": list(indexes),
                                                  "readers": list(readers), "writers": list(writers)})

    async def db_insert(self, db: str, doc: Any, *, ttl: float | None = None) -> dict:
        """Inserts a JSON document; ``{"id", "version"}`` once it is on disk."""
        req = {"db": db, "json": doc}
        if ttl is not None:
            req["ttl"] = ttl
        return await self.call_json("db.insert", req)

    async def db_get(self, db: str, rid: int):
        """The record (``zserver.db.Record``); ``CallError`` NotFound when there is none."""
        from .db import Record
        v = await self.call_json("db.get", {"db": db, "id": rid})
        return Record(v["id"], v["version"], v.get("expires_at"), json=v.get("json"))

    async def db_update(self, db: str, rid: int, doc: Any, *, version: int | None = None) -> dict:
        """Replaces the document, if at ``version`` when given (else VersionMismatch)."""
        req = {"db": db, "id": rid, "json": doc}
        if version is not None:
            req["version"] = version
        return await self.call_json("db.update", req)

    async def db_delete(self, db: str, rid: int, *, version: int | None = None) -> dict:
        req = {"db": db, "id": rid}
        if version is not None:
            req["version"] = version
        return await self.call_json("db.delete", req)

    async def db_count(self, db: str, where: str = "", params: dict | None = None) -> int:
        req = {"db": db, "where": where, "params": params or {}, "count": True}
        return (await self.call_json("db.query", req))["count"]

    def db_query(self, db: str = "", where: str = "", *, params: dict | None = None,
                 reverse: bool = False, limit: int | None = None, window: int = 1000,
                 window_bytes: int = 4 << 20, resume: str | None = None):
        """A query: ``async for record in client.db_query(db, "age > $a", params={"a": 3})``."""
        from .db import Rows
        request = ({"resume": resume} if resume else
                   {"db": db, "where": where, "params": params or {}, "reverse": reverse, "limit": limit})
        return Rows(self, request, window, window_bytes)

    def db_watch(self, db: str, where: str = "", *, params: dict | None = None, snapshot: bool = False):
        """A watch: ``async for kind, record in client.db_watch(db, where, snapshot=True)``."""
        from .db import Watch
        return Watch(self, {"db": db, "where": where, "params": params or {}, "snapshot": snapshot})

