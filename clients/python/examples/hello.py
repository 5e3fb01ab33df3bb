"""Calls a zserver: echo as text, echo_stream as a DataFrame, then (with a user) logs in.

    zs serve --plaintext                   # in another terminal
    python examples/hello.py 127.0.0.1:9818 --plaintext
    python examples/hello.py 127.0.0.1:9818 --fingerprint FP   # zs serve --tls prints FP
    ZS_USER=admin ZS_PASSWORD=... python examples/hello.py 127.0.0.1:9818 --plaintext
"""

import argparse
import asyncio
import os

import zserver
from zserver import I32, U64, F32


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("addr", nargs="?", default="127.0.0.1:9818")
    ap.add_argument("--plaintext", action="store_true")
    ap.add_argument("--fingerprint", help="the TLS server's certificate fingerprint")
    args = ap.parse_args()
    host, _, port = args.addr.rpartition(":")

    async with await zserver.connect(host, int(port), plaintext=args.plaintext,
                                     fingerprint=args.fingerprint) as client:
        print(await client.call_console("echo", "hello"))
        print(await client.call_stream("echo_stream", ["typed", I32(-7), U64(2**64 - 1), F32(1.5)]))
        try:
            await client.call_console("no.such.command", "")
        except zserver.CallError as e:
            print("error:", e.code.name, e.message)

        user = os.environ.get("ZS_USER")
        if user:
            client.on("inbox.waiting", lambda text: print("push: inbox.waiting", text))
            print(await client.login(user, os.environ["ZS_PASSWORD"]))
            print(await client.whoami())
            print(await client.inbox_list())


if __name__ == "__main__":
    asyncio.run(main())
