"""An in-process ktapd for ktapctl when no daemon answers: the one entry point ktapctl may use.

    with ktapd.embedded.serve() as socket_path:
        ...talk to socket_path exactly as to the real daemon...

The same server code (ktapd/server.py) runs in a background thread with its
own trio loop, listening on a socket in a private temporary directory
(mode 0700, socket 0600), so only the calling user can reach it.  Sessions
still run in worker processes.  Run as root, it can open probes (``sudo
ktapctl -e '...'`` on a bare host); run as anyone, it runs scripts without
probes.  Leaving the ``with`` block stops it as SIGTERM stops ktapd (every
session ends as if by ``exit``) and removes the directory.

This module must not be imported by the daemon itself, nor grow: ktapctl
depends on exactly ``serve``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import trio

from ktapd import config as _config
from ktapd import server

__all__ = ["serve"]

START_TIMEOUT_S = 10.0


@contextlib.contextmanager
def serve(cfg: _config.Config | None = None) -> Iterator[str]:
    """Run a private daemon for the duration of the block; yields its socket path."""
    # One client, usually one session: a spare worker would only compete
    # with it for the CPU.
    cfg = cfg or _config.Config(spare_worker=False)
    directory = tempfile.mkdtemp(prefix="ktapd-embedded-")
    path = str(Path(directory) / "ktapd.sock")
    listener = server.bind_socket(path, 0o600)
    daemon = server.Daemon(cfg)
    ready = threading.Event()
    state: dict = {}

    async def run() -> None:
        state["token"] = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.serve, listener)
            ready.set()

    def thread_main() -> None:
        try:
            trio.run(run)
        except BaseException as exc:  # reported to the caller below
            state["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=thread_main, name="ktapd-embedded", daemon=True)
    thread.start()
    try:
        if not ready.wait(START_TIMEOUT_S) or "error" in state:
            raise RuntimeError(f"the embedded ktapd did not start: {state.get('error', 'timeout')}")
        yield path
    finally:
        token = state.get("token")
        if token is not None and thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run(daemon.shutdown, trio_token=token)
        thread.join(server.SHUTDOWN_GRACE_S + server.FLUSH_GRACE_S + 5)
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)
