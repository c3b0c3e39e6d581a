"""``lookalike serve --workers N``: uvicorn's worker supervisor with one listening socket per worker.

uvicorn's own supervisor binds one socket that every worker accepts from. The worker whose event loop
wakes first accepts every connection waiting, so a burst of keep-alive connections (a load generator, a
proxy's connection pool) lands on one worker while the others idle: in ``lookalike bench api`` at
concurrency 4, one worker spent 7.6 s of CPU and the other 0.01 s in 6 s (docs/web.md "Load test").
With ``SO_REUSEPORT`` (Linux 3.9+, the BSDs) each worker gets its own socket bound to the same address
and the kernel hashes each new connection to one of the listening ones (see socket(7),
``SO_REUSEPORT``). Where the option is missing or refused, the shared socket as before. A worker that
uvicorn's supervisor replaces (it died, or missed its health check) is handed every socket, so no socket
is ever left without a worker; a socket listens only once its worker has started (warmed) its app.
"""
from __future__ import annotations

import socket
from typing import Any

import uvicorn
from uvicorn.config import Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process


def reuseport_sockets(host: str, port: int, count: int) -> list[socket.socket] | None:
    """``count`` TCP sockets bound to ``host``:``port`` with SO_REUSEPORT (not listening yet: each
    worker's server listens on its own), or None where the option is unavailable or refused."""
    if count < 2 or not hasattr(socket, "SO_REUSEPORT"):
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # a port some server already listens on (another lookalike server too: SO_REUSEPORT would share it
    # silently) must fail as it always has: a plain bind first (uvicorn.run then reports it)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError:
        return None
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        return None
    return sockets


class SpreadWorkers(Multiprocess):
    """uvicorn's supervisor (health checks, restarts, signals) starting worker ``i`` on socket ``i``
    alone; replacements get the whole list (uvicorn's own restart path)."""

    def init_processes(self) -> None:
        for i in range(self.processes_num):
            process = Process(self.config, [self.sockets[i % len(self.sockets)]])
            process.start()
            self.processes.append(process)


def run_workers(app: str, workers: int, host: str, port: int, **options: Any) -> None:
    """Serve the app factory ``app`` (``module:function``) with ``workers`` processes on ``host``:``port``,
    one SO_REUSEPORT socket each (:class:`SpreadWorkers`), else as ``uvicorn.run(..., workers=N)``.
    ``options``: uvicorn.Config's (log_level, access_log, timeout_worker_healthcheck…)."""
    sockets = reuseport_sockets(host, port, workers)
    if sockets is None:
        uvicorn.run(app, factory=True, workers=workers, host=host, port=port, **options)
        return
    config = Config(app, factory=True, workers=workers, host=host, port=port, **options)
    try:
        SpreadWorkers(config, sockets).run()
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()
