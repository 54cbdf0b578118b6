"""A real redis-server for the tests: 127.0.0.1, a free port, a password, its own folder.

It persists every write (appendonly, fsync always), so a test can SIGKILL it and start it
again on the same port with the same data, as a production server configured for llmctl
would come back. It dies with the test process that started it (PR_SET_PDEATHSIG), so it
never outlives a run; the fixture stops it after each test.

Missing redis-server: the tests skip, saying how to install it, except under CI (CI=true),
where .ci/run installs it and a missing server is a failure.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

PASSWORD_ENV = "TEST_REDIS_PASSWORD"  # the variable state.password_env names in the tests


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        message = ("redis-server is not installed: `apt-get install redis-server` (.ci/run installs it); "
                   "the shared-state tests need a real server")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path):
        self.binary = redis_server_binary()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--requirepass", self.password,
             "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "yes", "--loglevel", "warning", "--logfile", str(self.folder / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 30
        while not self.ping():  # ready when it answers (a few ms; bounded)
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.folder / 'redis.log').read_text()[-500:]}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                got = b""
                while got.count(b"\r\n") < 2:
                    chunk = s.recv(100)
                    if not chunk:
                        return False
                    got += chunk
                return b"+PONG" in got
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would; this test's own process, by its PID."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def state(self, **extra) -> dict:
        """A ``state:`` config section for this server."""
        return {"backend": "redis", "url": self.url, "password_env": PASSWORD_ENV,
                "key_prefix": f"t{secrets.token_hex(3)}:", "timeout": 2.0, **extra}
