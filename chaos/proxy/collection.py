"""The proxies of one server, by name: create, replace, remove, reset (Toxiproxy's ``ProxyCollection``).

Changes to the set of proxies are serialised by one lock, so two requests
creating the same name cannot both succeed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from millpond import limits
from millpond.chaos.proxy import errors
from millpond.chaos.proxy.proxy import Proxy

__all__ = ["ProxyCollection", "ProxySpec"]


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """A validated proxy description (from ``POST /proxies`` or ``POST /populate``)."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True


class ProxyCollection:
    """Named proxies. ``rng`` drives every toxicity roll and random toxic choice of every proxy."""

    def __init__(self, rng: random.Random, on_failure: Callable[[BaseException], None]) -> None:
        self._rng = rng
        self._on_failure = on_failure
        self._proxies: dict[str, Proxy] = {}
        self._lock = asyncio.Lock()

    def proxies(self) -> dict[str, Proxy]:
        """A snapshot of the proxies by name."""
        return dict(self._proxies)

    def get(self, name: str) -> Proxy:
        """The proxy ``name``; raises ApiError 404 if there is none."""
        proxy = self._proxies.get(name)
        if proxy is None:
            raise errors.proxy_not_found()
        return proxy

    async def add(self, spec: ProxySpec) -> Proxy:
        """Create a proxy and enable it if ``spec.enabled``.

        Raises ApiError 409 if the name exists or ``proxy_proxies_max`` proxies
        exist, 409/400 if it cannot listen (nothing is created then).
        """
        async with self._lock:
            if spec.name in self._proxies:
                raise errors.proxy_already_exists()
            return await self._create(spec)

    async def remove(self, name: str) -> None:
        """Delete the proxy ``name``: it stops listening and its connections close. Raises ApiError 404."""
        async with self._lock:
            proxy = self.get(name)
            del self._proxies[name]
            await proxy.close()

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (Toxiproxy's ``POST /reset``).

        Every proxy is reset even if one cannot listen again; the first such
        failure is raised afterwards (ApiError 409/400).
        """
        async with self._lock:
            failure: errors.ApiError | None = None
            for proxy in list(self._proxies.values()):
                try:
                    await proxy.enable()
                except errors.ApiError as exc:
                    failure = failure or exc
                await proxy.reset_toxics()
            if failure is not None:
                raise failure

    async def populate(self, specs: Sequence[ProxySpec]) -> tuple[list[Proxy], errors.ApiError | None]:
        """Create or replace each proxy in order (Toxiproxy's ``POST /populate``).

        A proxy of the same name with the same upstream and listen address is
        left as it is (and returned); one that differs is stopped and replaced
        by a new proxy without toxics. Stops at the first proxy that cannot be
        created and returns the proxies done so far with that error (the one it
        should have replaced stays, disabled, as in Toxiproxy).
        """
        async with self._lock:
            done: list[Proxy] = []
            for spec in specs:
                existing = self._proxies.get(spec.name)
                if existing is not None:
                    if await existing.same_addresses(spec.listen, spec.upstream):
                        done.append(existing)
                        continue
                    await existing.disable()
                try:
                    proxy = await self._create(spec, replacing=existing is not None)
                except errors.ApiError as exc:
                    return done, exc
                if existing is not None:
                    await existing.close()
                done.append(proxy)
            return done, None

    async def close(self) -> None:
        """Close every proxy (their listeners, connections and tasks)."""
        async with self._lock:
            proxies, self._proxies = list(self._proxies.values()), {}
            await asyncio.gather(*(proxy.close() for proxy in proxies))

    async def _create(self, spec: ProxySpec, replacing: bool = False) -> Proxy:
        if not replacing and len(self._proxies) >= limits.proxy_proxies_max:
            raise errors.too_many("proxies", limits.proxy_proxies_max)
        proxy = Proxy(spec.name, spec.listen, spec.upstream, self._rng, self._on_failure)
        if spec.enabled:
            try:
                await proxy.enable()
            except errors.ApiError:
                await proxy.close()
                raise
        self._proxies[spec.name] = proxy
        return proxy
