"""``host:port`` strings, as Toxiproxy's ``listen`` and ``upstream`` fields carry them, and listening on one.

Go's ``net.JoinHostPort`` form: ``127.0.0.1:8474``, ``localhost:6379``,
``[::1]:9091``, ``:8474`` (every interface). Parsing never resolves names;
:func:`format_address` writes a bound socket address back in the same form.
"""

from __future__ import annotations

import asyncio
import socket

from millpond import limits

__all__ = ["format_address", "listening_socket", "parse_address"]


def parse_address(text: str) -> tuple[str, int]:
    """Split ``host:port`` into ``(host, port)``; the host loses IPv6 brackets and may be empty.

    Raises ``ValueError`` naming what is wrong if ``text`` has no port, a port
    outside 0..65535, or an unbracketed IPv6 host.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"missing port in address {text!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"unclosed '[' in address {text!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"too many colons in address {text!r} (bracket IPv6 hosts: [::1]:port)")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"bad port in address {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range in address {text!r}")
    return host, port


def format_address(host: str, port: int) -> str:
    """``host:port``, bracketing an IPv6 host (``[::1]:9091``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def listening_socket(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port``, bound once (port 0: one free port).

    As Go's ``net.Listen``: a host name listens on one of its addresses, the
    first IPv4 one if any; an empty host listens on every interface (IPv6
    dual-stack where available). ``SO_REUSEADDR`` is set, so a port in
    TIME_WAIT can be bound again. Raises ``OSError`` (``socket.gaierror`` for
    a name that does not resolve, ``errno.EADDRINUSE`` for a port in use).
    """
    if host:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = next((info for info in infos if info[0] == socket.AF_INET), infos[0])
    elif socket.has_ipv6:
        family, address = socket.AF_INET6, ("::", port)
    else:
        family, address = socket.AF_INET, ("0.0.0.0", port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and not host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(limits.proxy_listen_backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
