"""The fork server (zygote): ``python -m qbench.worker.forkserver FD``, one per orchestrator and cell environment.

It imports torch, torchvision, onnxruntime and the worker's modules once and then runs nothing: no torch op (GNU
OpenMP children of a process that has started its pool hang), no allocation of a cell. Each cell is a fresh
``os.fork()`` of it that runs exactly what ``python -m qbench.worker CELL_DIR`` runs, so a cell starts in
milliseconds instead of paying the interpreter start and the imports (~2-7 s here).

Protocol on the ``SOCK_SEQPACKET`` socket ``FD`` (one JSON message per packet; the client is
:mod:`qbench.orchestrate.forkserver`):

- server -> client ``{"ready": PID}`` once the imports are done (or the process exits: the client falls back);
- client -> server ``{"op": "fork", "argv": [...], "env": {...}}`` with two file descriptors, the cell's log
  (stdout and stderr of the child) and the write end of a status pipe; reply ``{"pid": PID}``; the exit status
  (a Popen-style return code: negative = killed by that signal) is written to the status pipe once the child
  is reaped here, and the pipe closed;
- client -> server ``{"op": "kill", "pid": PID}``: SIGKILL to a child not yet reaped (no reply; killing through
  the server rules out hitting a reused pid).

The server dies with its orchestrator (``qbench.worker.die_with_parent``) and every child with the server
(``PR_SET_PDEATHSIG``), so a kill -9 of the orchestrator leaves no measuring process behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import select
import signal
import socket
import sys
import traceback

from qbench.config.threads import PRELOAD_ENV

# exactly what a spawned worker imports before its cell (torch, numpy, omegaconf, ...): what a cell imports lazily
# (torchvision, onnxruntime: ~0.2 s each) it imports in the child, so its memory is made of the same pages as a
# spawned worker's; the orchestrator adds (PRELOAD_ENV) what every cell of this server imports anyway
# (transformers, ExecuTorch: seconds each), and gives cells that do not import those another server
PRELOAD = ("qbench.worker.__main__", "qbench.worker.pipeline")
_MAX_FDS = 2
_PAGE = os.sysconf("SC_PAGE_SIZE")


def serve(sock: socket.socket) -> int:
    """Import, report ready, then fork a child per request until the orchestrator closes the socket."""
    from qbench.worker.__main__ import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the orchestrator's to handle (it kills the cell)
    die_with_parent()
    for name in PRELOAD:
        importlib.import_module(name)
    for name in filter(None, os.environ.get(PRELOAD_ENV, "").split(",")):
        with contextlib.suppress(ImportError):  # the cell itself will say what is missing
            importlib.import_module(name)
    gc.collect()
    gc.freeze()  # imported objects stay out of the children's collections (fewer copy-on-write pages)
    file_pages = resident_file_pages()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sock.send(json.dumps({"ready": os.getpid()}).encode())
    children: dict[int, int] = {}  # pid -> write end of its status pipe
    while True:
        readable, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        _reap(children)
        if sock not in readable:
            continue
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, _MAX_FDS)
        if not data:  # the orchestrator is gone or done: children die with this process
            return 0
        request = json.loads(data)
        if request["op"] == "kill":
            if request["pid"] in children:
                os.kill(request["pid"], signal.SIGKILL)
            continue
        log_fd, status_w = fds
        sys.stdout.flush()
        sys.stderr.flush()
        server_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            _child_main(request, sock, log_fd, [status_w, wake_r, wake_w, *children.values()], file_pages, server_pid)
        os.close(log_fd)
        children[pid] = status_w
        sock.send(json.dumps({"pid": pid}).encode())


def _reap(children: dict[int, int]) -> None:
    """Report every exited child's status on its pipe."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = children.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, f"{os.waitstatus_to_exitcode(status)}\n".encode())
            os.close(fd)


def resident_file_pages() -> list[tuple[int, int]] | None:
    """(address, pages) runs of the file-backed pages resident in this process (None: /proc does not say).

    A fork copies the page-table entries of anonymous memory but not of file mappings (they fault in again on
    use), so a child's RSS would miss the library pages the imports touched, which a spawned worker counts:
    the child touches these pages once (:func:`touch_pages`) and its peak RSS is made of what a spawned
    worker's is."""
    runs: list[tuple[int, int]] = []
    try:
        with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
            for line in maps:
                fields = line.split()
                if len(fields) < 6 or fields[4] == "0" or fields[1][0] != "r" or fields[5].startswith("/dev/"):
                    continue  # anonymous, [heap]/[stack]/..., unreadable, or a device (reading one may act)
                start, end = (int(x, 16) for x in fields[0].split("-"))
                pagemap.seek(start // _PAGE * 8)
                entries = memoryview(pagemap.read((end - start) // _PAGE * 8)).cast("Q")
                run_start = None
                for i, entry in enumerate([*entries, 0]):
                    present = entry >> 63
                    if present and run_start is None:
                        run_start = i
                    elif not present and run_start is not None:
                        runs.append((start + run_start * _PAGE, i - run_start))
                        run_start = None
    except (OSError, ValueError):
        return None
    return runs


def touch_pages(runs: list[tuple[int, int]]) -> None:
    """Read one byte of every page of ``runs`` (maps them into this process: they count in its RSS)."""
    import numpy as np

    for address, pages in runs:
        view = (ctypes.c_uint8 * (pages * _PAGE)).from_address(address)
        int(np.frombuffer(view, dtype=np.uint8)[::_PAGE].sum())


def _child_main(request: dict, sock: socket.socket, log_fd: int, inherited: list[int],
                file_pages: list[tuple[int, int]] | None, server_pid: int) -> None:
    """The forked cell: a clean process state, then the worker's own entry point; never returns."""
    code = 1
    try:
        code = _child(request, sock, log_fd, inherited, file_pages, server_pid)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()  # what the interpreter does at exit (logging.shutdown, temp dirs, ...)
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _child(request: dict, sock: socket.socket, log_fd: int, inherited: list[int],
           file_pages: list[tuple[int, int]] | None, server_pid: int) -> int:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a spawned worker
    sock.close()
    for fd in inherited:  # the server's pipes and the other cells' status pipes
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError, AttributeError):  # die with the server (which dies with the orchestrator)
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    if os.getppid() != server_pid:  # the server died before the death signal was armed
        print("qbench.worker.forkserver: the fork server is gone; exiting", file=sys.stderr)
        return 3
    if file_pages is None:
        print("qbench.worker.forkserver: /proc/self/pagemap unreadable: peak RSS counts only the library pages "
              "this cell touches (a spawned worker counts those its imports touched too)", file=sys.stderr)
    else:
        touch_pages(file_pages)
    os.environ.clear()  # identical to the server's (one server per environment); set for what reads it late
    os.environ.update(request["env"])
    for stream in (sys.stdout, sys.stderr):  # PYTHONUNBUFFERED, as for a spawned worker
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True, write_through=True)
    logging.root.handlers.clear()
    from qbench.worker.__main__ import run

    return run(request["argv"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(argv[0]))
    try:
        return serve(sock)
    except Exception:
        traceback.print_exc()  # to the server's stderr, which the orchestrator reads to say why it fell back
        return 1


if __name__ == "__main__":
    sys.exit(main())
