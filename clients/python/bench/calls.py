"""Calls per second on one connection: `python bench/calls.py HOST PORT [--tls FP | --plaintext]
[--seconds S] [--depth D]`, D calls in flight (1 = one after another). Prints one JSON line."""

import argparse
import asyncio
import json
import time

import zserver


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--tls", metavar="FINGERPRINT")
    p.add_argument("--plaintext", action="store_true")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--depth", type=int, default=1)
    a = p.parse_args()
    if a.plaintext:
        c = await zserver.connect(a.host, a.port, plaintext=True)
    else:
        c = await zserver.connect(a.host, a.port, fingerprint=a.tls)
    payload = "x" * 64
    calls = 0
    deadline = time.monotonic() + a.seconds

    async def worker() -> None:
        nonlocal calls
        while time.monotonic() < deadline:
            await c.call_console("echo", payload)
            calls += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(a.depth)))
    elapsed = time.monotonic() - start
    await c.close()
    print(json.dumps({"client": "python", "depth": a.depth, "calls": calls, "seconds": elapsed,
                      "calls_per_s": calls / elapsed, "tls": bool(a.tls)}))


asyncio.run(main())
