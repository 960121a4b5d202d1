"""A :class:`~millpond.chaos.proxy.server.ProxyServer` on its own event loop in a background thread.

For synchronous callers (toxiproxy-python is built on ``requests``; tests and
the chaos runner drive it from plain code)::

    with ProxyServerThread(port=0) as proxy:
        Toxiproxy().update_api_consumer(*proxy.address)
        ...

Leaving the ``with`` block (or :meth:`ProxyServerThread.close`) closes the
server and joins the thread: no socket or thread is left behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from millpond.chaos.proxy.server import ProxyServer, ServerStatistics

__all__ = ["ProxyServerThread"]

T = TypeVar("T")

#: Seconds to wait for the thread to start or stop before giving up loudly.
THREAD_WAIT_S = 30.0


class ProxyServerThread:
    """Runs a ProxyServer (same arguments) in a daemon thread until :meth:`close`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8474, seed: int | None = None) -> None:
        self._host, self._port, self._seed = host, port, seed
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._server: ProxyServer | None = None
        self._error: BaseException | None = None
        self.address: tuple[str, int] = ("", 0)

    def start(self) -> tuple[str, int]:
        """Start the thread and the server; return the API address. Raises what the server's start raised."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="fault-proxy",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(THREAD_WAIT_S):
            raise TimeoutError(f"the fault proxy thread did not start within {THREAD_WAIT_S} s")
        if self._error is not None:
            self._thread.join(THREAD_WAIT_S)
            raise self._error
        return self.address

    def call(self, function: Callable[[ProxyServer], Coroutine[Any, Any, T]],
             timeout_s: float = THREAD_WAIT_S) -> T:
        """Run ``function(server)`` on the server's loop and return its result (raising its exception)."""
        if self._loop is None or self._server is None:
            raise RuntimeError("the fault proxy thread is not running")
        future = asyncio.run_coroutine_threadsafe(function(self._server), self._loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def statistics(self) -> ServerStatistics:
        """The server's statistics, read on its loop."""
        async def read(server: ProxyServer) -> ServerStatistics:
            return server.statistics()
        return self.call(read)

    def close(self) -> None:
        """Close the server and join the thread (idempotent).

        Raises the exception that stopped the server, if a bug did.
        """
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass  # the loop already finished
        self._thread.join(THREAD_WAIT_S)
        if self._thread.is_alive():
            raise TimeoutError(f"the fault proxy thread did not stop within {THREAD_WAIT_S} s")
        self._thread = None
        if self._server is not None and self._server.failure is not None:
            raise self._server.failure

    def __enter__(self) -> ProxyServerThread:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = self._server = ProxyServer(self._host, self._port, self._seed)
        try:
            self.address = await server.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            await server.close()
            return
        self._started.set()
        stop = asyncio.ensure_future(self._stop.wait())
        closed = asyncio.ensure_future(server.wait_closed())
        try:
            await asyncio.wait([stop, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            closed.cancel()
            await asyncio.gather(stop, closed, return_exceptions=True)
            await server.close()
