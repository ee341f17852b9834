"""Is a port free to listen on? One plain line when it is not (``make run``, ``serve``)."""

from __future__ import annotations

import errno
import socket


class PortInUseError(OSError):
    """Another program listens on the port; the message names the setting that moves it."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port_free(host: str, port: int, *, what: str, setting: str) -> None:
    """Raise PortInUseError when ``host:port`` has a listener (port 0 is always free).

    Binds as the servers do (SO_REUSEADDR), so a port left in TIME_WAIT by a
    previous run counts as free and only a live listener as taken.
    """
    if port == 0:
        return
    bare = host.strip().strip("[]") or "0.0.0.0"  # noqa: S104 (probing, not serving)
    with socket.socket(_family(bare), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bare, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUseError(
                f"port {port} ({what}) on {host} is in use by another program; "
                f"set {setting} to another port (e.g. {setting}={port + 1000})",
            ) from exc
