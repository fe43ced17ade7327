"""The orchestrator's side of the fork server (:mod:`qbench.worker.forkserver`): cells as forks of a process that
has imported torch and onnxruntime but run nothing, instead of a fresh interpreter each (``suite.fork_server``).

One server per (orchestrator process, cell environment): thread variables such as ``OMP_NUM_THREADS`` are read
by OpenMP/OpenBLAS when the libraries load, i.e. in the server, so setting them in a child would be too late; a
cell whose environment differs gets (or starts) the server of that environment. At most ``MAX_SERVERS`` stay
up. Why not ``multiprocessing``'s forkserver start method: it keeps one server per process whose environment is
the parent's when it started (no per-cell environment without mutating ``os.environ`` of a threaded
orchestrator), and it drops preload import errors silently, so a broken server could not be detected to fall
back to spawned workers with a reason.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from typing import IO

log = logging.getLogger("qbench")

SERVER_MODULE = "qbench.worker.forkserver"
MAX_SERVERS = 2
READY_TIMEOUT_S = 300.0


class ServerUnavailable(RuntimeError):
    """The fork server could not start (the reason is the message); cells fall back to spawned workers."""


def supported() -> str | None:
    """Why this platform cannot fork cells (None: it can)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return f"fork server needs Linux with os.fork (this is {sys.platform})"
    if not hasattr(socket, "send_fds"):
        return "fork server needs socket.send_fds (Python >= 3.9)"
    return None


class ForkedCell:
    """A cell forked by the server, with the part of ``subprocess.Popen`` the runner uses."""

    forked = True

    def __init__(self, server: ForkServer, pid: int, status_r: int) -> None:
        self.server, self.pid, self._status_r = server, pid, status_r
        self.returncode: int | None = None
        self.lost = False  # the server went away before reporting the status

    def poll(self, timeout: float = 0.0) -> int | None:
        if self.returncode is None and select.select([self._status_r], [], [], timeout)[0]:
            data = os.read(self._status_r, 64)
            os.close(self._status_r)
            if data.strip():
                self.returncode = int(data)
            else:  # the server died; the child was SIGKILLed with it (PR_SET_PDEATHSIG)
                self.returncode, self.lost = -signal.SIGKILL, True
            self.server.active -= 1
        return self.returncode

    def wait(self) -> int:
        while self.poll(timeout=1.0) is None:
            pass
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            self.server.kill(self.pid)


class ForkServer:
    """One running server process and its control socket."""

    def __init__(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server; closed in close())
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", SERVER_MODULE, str(theirs.fileno())], env=env,
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
            )
        finally:
            theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.active = 0  # cells running (a server is only retired when idle)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until the imports are done; ServerUnavailable (with the server's last words) if they fail."""
        if self.pid is not None:
            return
        with self.lock:
            if self.pid is not None:
                return
            ready = select.select([self.sock], [], [], timeout)[0]
            data = self.sock.recv(4096) if ready else b""
            if not data:
                reason = self._why(ready, timeout)
                self.close()
                raise ServerUnavailable(reason)
            self.pid = int(json.loads(data)["ready"])

    def _why(self, ready: list, timeout: float) -> str:
        if not ready:
            return f"it was not ready within {timeout:g} s"
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return f"it exited with code {self.proc.returncode}" + (f": {lines[-1].strip()}" if lines else "")

    def fork(self, argv: list[str], env: dict[str, str], log_file: IO) -> ForkedCell:
        """Fork a child that runs ``qbench.worker`` with ``argv``, its stdout and stderr on ``log_file``."""
        self.wait_ready()
        status_r, status_w = os.pipe()
        try:
            with self.lock:
                message = json.dumps({"op": "fork", "argv": argv, "env": env}).encode()
                socket.send_fds(self.sock, [message], [log_file.fileno(), status_w])
                reply = self.sock.recv(4096)
                if reply:
                    self.active += 1
        except OSError as exc:
            os.close(status_r)
            raise ServerUnavailable(f"the fork server stopped answering ({exc})") from None
        finally:
            os.close(status_w)
        if not reply:
            os.close(status_r)
            raise ServerUnavailable("the fork server exited")
        return ForkedCell(self, int(json.loads(reply)["pid"]), status_r)

    def kill(self, pid: int) -> None:
        with self.lock, contextlib.suppress(OSError):  # a dead server took its children with it
            self.sock.send(json.dumps({"op": "kill", "pid": pid}).encode())

    def close(self) -> None:
        """End of the socket = end of the server (it exits on EOF)."""
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


_servers: OrderedDict[str, ForkServer | str] = OrderedDict()  # by environment; a str: why it failed
_registry_lock = threading.Lock()


def _key(env: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()


def server_for(env: dict[str, str]) -> ForkServer:
    """The (started, maybe not yet ready) server of this environment; ServerUnavailable once it failed."""
    reason = supported()
    if reason:
        raise ServerUnavailable(reason)
    key = _key(env)
    with _registry_lock:
        entry = _servers.get(key)
        if isinstance(entry, str):
            raise ServerUnavailable(entry)
        if entry is None:
            idle = [k for k, s in _servers.items() if isinstance(s, ForkServer) and not s.active]
            running = sum(isinstance(s, ForkServer) for s in _servers.values())
            for old_key in idle[:max(0, running - MAX_SERVERS + 1)]:  # least recently used first
                old = _servers.pop(old_key)
                assert isinstance(old, ForkServer)
                old.close()
            entry = _servers[key] = ForkServer(env)
        _servers.move_to_end(key)
        return entry


def prestart(env: dict[str, str]) -> None:
    """Start the server of this environment now (its imports overlap the orchestrator's own work)."""
    with contextlib.suppress(ServerUnavailable, OSError):
        server_for(env)


def fork_cell(argv: list[str], env: dict[str, str], log_file: IO) -> ForkedCell | None:
    """A cell forked by the server of ``env``; None (the reason logged once) when the caller must spawn."""
    try:
        server = server_for(env)
        return server.fork(argv, env, log_file)
    except (ServerUnavailable, OSError) as exc:
        key = _key(env)
        with _registry_lock:
            failed = _servers.get(key)
            _servers[key] = str(exc)
        if not isinstance(failed, str):
            log.warning("fork server unavailable (%s): cells run in spawned workers", exc)
            if isinstance(failed, ForkServer):
                with contextlib.suppress(OSError):
                    failed.close()
        return None


@atexit.register
def shutdown() -> None:
    """Stop every server of this process (they would also exit when it dies)."""
    with _registry_lock:
        servers = [s for s in _servers.values() if isinstance(s, ForkServer)]
        _servers.clear()
    deadline = time.monotonic() + 10
    for server in servers:
        server.sock.close()
        if server.pid is None:  # still importing, never used: not worth waiting for
            server.proc.kill()
    for server in servers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        if server.proc.poll() is None:
            server.proc.kill()
