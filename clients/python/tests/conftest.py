"""A real `zs serve` per test: started on a free port, killed at the end.

The binary comes from $ZS_BIN (default: <repo root>/target/debug/zs)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import selectors
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
ZS_BIN = os.environ.get("ZS_BIN", str(ROOT / "target" / "debug" / "zs"))
ADMIN_PASSWORD = "admin-password-1"
START_TIMEOUT = 60.0  # the machine may be loaded
TEST_TIMEOUT = 120.0


def run(coro, timeout: float = TEST_TIMEOUT):
    """Runs a test's coroutine; a hang fails the test instead of blocking the run."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


class Server:
    def __init__(self, tmp: pathlib.Path, *args: str, tls: bool = False):
        self.data_dir = tmp / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.log_path = tmp / "server.log"
        cmd = [ZS_BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir),
               "--insecure-fast-hashing", "--tls" if tls else "--plaintext", *args]
        env = dict(os.environ, ZS_ADMIN_PASSWORD=ADMIN_PASSWORD, RUST_LOG="info")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, env=env)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buf = b""
        first = self._line()
        assert first.startswith("listening on "), first
        addr = first.removeprefix("listening on ").strip()
        host, _, port = addr.rpartition(":")
        self.host, self.port = host, int(port)
        self.fingerprint = None
        if tls:
            second = self._line()
            assert second.startswith("certificate fingerprint: "), second
            self.fingerprint = second.removeprefix("certificate fingerprint: ").split()[0]

    def _line(self) -> str:
        """The next line of the server's stdout, waiting for it (up to START_TIMEOUT)."""
        deadline = time.monotonic() + START_TIMEOUT
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                raise AssertionError(f"zs serve printed no line in {START_TIMEOUT} s; log: {self.log()}")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"zs serve exited ({self.proc.wait()}): {self.log()}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def interrupt(self) -> None:
        """Ctrl-C: a graceful shutdown. `zs serve` prints `listening on` before it installs
        its SIGINT handler, so a SIGINT sent too early kills it outright: wait until the
        kernel shows the signal caught (/proc/PID/status, SigCgt), then send it."""
        deadline = time.monotonic() + START_TIMEOUT
        bit = 1 << (signal.SIGINT - 1)
        while True:
            status = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
            caught = int(next(l for l in status.splitlines() if l.startswith("SigCgt:")).split()[1], 16)
            if caught & bit:
                break
            if time.monotonic() > deadline:
                raise AssertionError("zs serve never installed its SIGINT handler")
            time.sleep(0.01)  # polls a condition; the deadline bounds it
        self.proc.send_signal(signal.SIGINT)

    def stop(self) -> None:
        """SIGSTOP, returning once every thread has stopped: kill() only starts a group
        stop, and a busy thread may still answer a call meanwhile."""
        self.proc.send_signal(signal.SIGSTOP)
        _, status = os.waitpid(self.proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), status

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
            self.proc.kill()
        self.proc.wait(30)
        self._sel.close()
        self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def zs(tmp_path):
    """A factory: zs(*extra_args, tls=False) starts a server; all are killed at the end."""
    if not os.access(ZS_BIN, os.X_OK):
        pytest.fail(f"no zs binary at {ZS_BIN} (set ZS_BIN)")
    servers = []

    def start(*args: str, tls: bool = False) -> Server:
        d = tmp_path / f"s{len(servers)}"
        d.mkdir()
        s = Server(d, *args, tls=tls)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.kill()


@pytest.fixture
def server(zs):
    return zs()
