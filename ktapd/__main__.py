"""``ktapd``: start the daemon (command line, logging, signals, systemd).

    ktapd [--socket PATH] [--config FILE] [--verbose]

Reads the configuration (ktapd/config.py), prepares the kernel side when
root (mounts tracefs, removes dynamic events a crashed ktapd left behind),
listens on the socket systemd passed (fd 3) or binds ``--socket`` /
the configured path, tells systemd READY=1, and serves until SIGTERM or
SIGINT, when every session is stopped as if by ``exit`` (their trace_end
output still reaches their clients) and ktapd exits 0.

This module must not contain daemon logic: it wires ktapd/server.py up.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys

import trio

from ktapd import _systemd, config, server

log = logging.getLogger("ktapd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ktapd", description="the ktap tracing daemon")
    parser.add_argument(
        "--socket", help=f"listen here (default: from the config, {config.DEFAULT_SOCKET_PATH})"
    )
    parser.add_argument(
        "--config", help=f"configuration file (default {config.DEFAULT_CONFIG_PATH} if present)"
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="log every session and request"
    )
    return parser.parse_args(argv)


def prepare_kernel() -> None:
    """Root only: tracefs mounted, stale dynamic events of a previous ktapd removed."""
    if os.geteuid() != 0:
        log.info("not root: only scripts without probes can run")
        return
    try:
        from ktapd.probes import registry

        removed = registry.cleanup_stale()
        if removed:
            log.info("removed %d stale dynamic event(s): %s", len(removed), ", ".join(removed))
    except Exception as exc:  # the daemon can still serve probe-less scripts and say why
        log.warning("kernel tracing is not available: %s", exc)


def open_listener(args: argparse.Namespace, cfg: config.Config) -> tuple[socket.socket, str | None]:
    """The listening socket, and the path we bound (None: systemd's socket)."""
    fds = _systemd.listen_fds()
    if fds:
        return socket.socket(fileno=fds[0]), None
    path = args.socket or str(cfg.socket)
    return server.bind_socket(path, cfg.socket_mode), path


async def serve(
    daemon: server.Daemon, listener: socket.socket, *, handle_signals: bool = True
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.serve, listener)
        _systemd.notify("READY=1")
        log.info("ready")
        if handle_signals:
            nursery.start_soon(_on_signals, daemon)
    _systemd.notify("STOPPING=1")


async def _on_signals(daemon: server.Daemon) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        if not _early_signals:
            signum = await signals.__anext__()
        else:
            signum = _early_signals[0]
        log.info("%s: stopping", signal.Signals(signum).name)
        _systemd.notify("STOPPING=1")
        await daemon.shutdown()


# Signals that arrived before trio listened for them (between start and
# READY=1): remembered, so a stop request is never lost or fatal.
_early_signals: list[int] = []


def _remember_signal(signum: int, _frame) -> None:
    _early_signals.append(signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _remember_signal)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.WARNING,
        format="ktapd[%(process)d]: %(message)s",
    )
    try:
        cfg = config.load(config.Path(args.config) if args.config else None)
        if os.geteuid() == 0:
            cfg.worker_account()  # fail now, not at the first session
    except config.ConfigError as exc:
        print(f"ktapd: {exc}", file=sys.stderr)
        return 2
    prepare_kernel()
    try:
        listener, bound = open_listener(args, cfg)
    except OSError as exc:
        print(f"ktapd: cannot listen: {exc}", file=sys.stderr)
        return 1
    daemon = server.Daemon(cfg)
    try:
        trio.run(serve, daemon, listener)
    finally:
        listener.close()
        if bound:  # our own socket file; systemd's stays with systemd
            try:
                os.unlink(bound)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
