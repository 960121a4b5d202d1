"""A Toxiproxy-API-compatible TCP fault proxy (asyncio).

The Toxiproxy server is a Go program no registry here ships; this package
speaks its HTTP API so that the unmodified ``toxiproxy-python`` client (or any
Toxiproxy client) drives it. In a chaos run every node-to-node link goes
through its own proxy.

* :class:`ProxyServer`: the server in the caller's event loop;
* :class:`ProxyServerThread`: the same in a background thread, for synchronous code;
* ``millpond chaos proxy``: the same as a process.

Modules, one concept each: ``http`` (a minimal HTTP/1.1 server), ``api``
(routes and request validation), ``errors`` (the API's errors), ``collection``
and ``proxy`` (proxies, listeners), ``connection`` and ``link`` (piping both
directions of a connection through its toxics), ``channel`` (the bounded
queues between stages), ``toxics`` (the toxic model) and ``behaviour`` (what
each toxic does), ``tasks`` (task ownership), ``addresses`` (``host:port``).
"""

from millpond.chaos.proxy.api import TOXIPROXY_VERSION
from millpond.chaos.proxy.server import ProxyServer, ServerStatistics
from millpond.chaos.proxy.threaded import ProxyServerThread
from millpond.chaos.proxy.toxics import TOXIC_TYPES, Toxic

__all__ = [
    "TOXIC_TYPES",
    "TOXIPROXY_VERSION",
    "ProxyServer",
    "ProxyServerThread",
    "ServerStatistics",
    "Toxic",
]
