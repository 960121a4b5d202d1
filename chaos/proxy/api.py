"""Toxiproxy's HTTP API: routes, request validation, JSON answers.

=========================================  ===========================================  ======
route                                      what                                         status
=========================================  ===========================================  ======
``GET /proxies``                           every proxy with its toxics, by name         200
``POST /proxies``                          create (``name``, ``upstream``, ``listen``,   201
                                           ``enabled``)
``POST /populate``                         create or replace a list of proxies          201
``GET /proxies/{proxy}``                   one proxy with its toxics                    200
``POST|PATCH /proxies/{proxy}``            update ``listen``, ``upstream``, ``enabled``  200
``DELETE /proxies/{proxy}``                delete (its connections close)               204
``GET /proxies/{proxy}/toxics``            its toxics                                   200
``POST /proxies/{proxy}/toxics``           add a toxic                                  200
``GET /proxies/{proxy}/toxics/{toxic}``    one toxic                                    200
``POST|PATCH .../toxics/{toxic}``          update ``toxicity`` and ``attributes``       200
``DELETE .../toxics/{toxic}``              remove a toxic                               204
``POST /reset``                            enable every proxy, remove every toxic       204
``GET /version``                           ``{"version": "<Toxiproxy API version>"}``   200
=========================================  ===========================================  ======

Errors are ``{"error": "...", "status": N}`` (see ``errors.py``). As in
Toxiproxy, unknown top-level fields are ignored, JSON ``null`` means "not
given", and a browser (``User-Agent: Mozilla/...``) is refused with a 403 so
that a web page cannot drive the proxy. Where this API differs: a ``listen``
left out means ``127.0.0.1:0`` (Toxiproxy: every interface); ``listen`` and
``upstream`` must parse as ``host:port`` (400); a toxic's ``stream`` is stored
lower-cased; ``populate`` lists ``[]``, never ``null``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from millpond.chaos.proxy import errors
from millpond.chaos.proxy.addresses import parse_address
from millpond.chaos.proxy.collection import ProxyCollection, ProxySpec
from millpond.chaos.proxy.http import Request, Response
from millpond.chaos.proxy.toxics import check_name, new_toxic

__all__ = ["DEFAULT_LISTEN", "TOXIPROXY_VERSION", "Api", "error_response", "json_response"]

#: The Toxiproxy release whose HTTP API this one follows (``GET /version``).
TOXIPROXY_VERSION = "2.12.0"
#: ``listen`` of a proxy created without one.
DEFAULT_LISTEN = "127.0.0.1:0"

_Endpoint = Callable[[Request, list[str]], Awaitable[Response]]


def json_response(status: int, value: Any) -> Response:
    """``value`` as a JSON response."""
    return Response(status, json.dumps(value).encode())


def error_response(status: int, message: str) -> Response:
    """Toxiproxy's error body: ``{"error": message, "status": status}``."""
    return json_response(status, errors.ApiError(status, message).to_json())


class Api:
    """Routes requests to the proxies of ``collection``."""

    def __init__(self, collection: ProxyCollection) -> None:
        self._collection = collection
        self._routes: list[tuple[tuple[str, ...], dict[str, _Endpoint]]] = [
            (("reset",), {"POST": self._reset}),
            (("proxies",), {"GET": self._proxy_index, "POST": self._proxy_create}),
            (("populate",), {"POST": self._populate}),
            (("proxies", "*"), {"GET": self._proxy_show, "POST": self._proxy_update,
                                "PATCH": self._proxy_update, "DELETE": self._proxy_delete}),
            (("proxies", "*", "toxics"), {"GET": self._toxic_index, "POST": self._toxic_create}),
            (("proxies", "*", "toxics", "*"), {"GET": self._toxic_show, "POST": self._toxic_update,
                                               "PATCH": self._toxic_update, "DELETE": self._toxic_delete}),
            (("version",), {"GET": self._version}),
        ]

    async def handle(self, request: Request) -> Response:
        """Answer one request; every refusal is a JSON error, never an exception."""
        try:
            if request.headers.get("user-agent", "").startswith("Mozilla/"):
                raise errors.browser_refused()
            endpoint, params = self._route(request)
            return await endpoint(request, params)
        except errors.ApiError as exc:
            return json_response(exc.status, exc.to_json())

    def _route(self, request: Request) -> tuple[_Endpoint, list[str]]:
        try:
            segments = [unquote(part, errors="strict") for part in request.path[1:].split("/")]
        except UnicodeDecodeError as exc:
            raise errors.route_not_found(request.path) from exc
        for pattern, methods in self._routes:
            if len(pattern) != len(segments):
                continue
            params = [segment for want, segment in zip(pattern, segments, strict=True) if want == "*"]
            if all((segment != "") if want == "*" else (segment == want)
                   for want, segment in zip(pattern, segments, strict=True)):
                endpoint = methods.get(request.method)
                if endpoint is None:
                    raise errors.method_not_allowed(request.method, request.path)
                return endpoint, params
        raise errors.route_not_found(request.path)

    # --- proxies ---------------------------------------------------------------------------

    async def _proxy_index(self, request: Request, params: list[str]) -> Response:
        proxies = self._collection.proxies()
        return json_response(200, {name: proxy.to_json() for name, proxy in proxies.items()})

    async def _proxy_create(self, request: Request, params: list[str]) -> Response:
        spec = _proxy_spec(_object(_json(request), "the body"), where="")
        proxy = await self._collection.add(spec)
        return json_response(201, proxy.to_json())

    async def _populate(self, request: Request, params: list[str]) -> Response:
        body = _json(request)
        if not isinstance(body, list):
            raise errors.bad_request_body("expected a JSON array of proxies")
        items = [_object(item, f"proxy {number}") for number, item in enumerate(body, start=1)]
        for number, item in enumerate(items, start=1):  # Toxiproxy checks these before creating any
            for field in ("name", "upstream"):
                if not _string(item, field, ""):
                    raise errors.missing_field(f"{field} at proxy {number}")
        specs = [_proxy_spec(item, where=f" at proxy {number}") for number, item in enumerate(items, start=1)]
        proxies, failure = await self._collection.populate(specs)
        answer: dict[str, Any] = failure.to_json() if failure is not None else {}
        answer["proxies"] = [proxy.to_json() for proxy in proxies]
        return json_response(failure.status if failure is not None else 201, answer)

    async def _proxy_show(self, request: Request, params: list[str]) -> Response:
        return json_response(200, self._collection.get(params[0]).to_json())

    async def _proxy_update(self, request: Request, params: list[str]) -> Response:
        proxy = self._collection.get(params[0])
        body = _object(_json(request), "the body")
        listen = _string(body, "listen", "") or proxy.listen
        upstream = _string(body, "upstream", "") or proxy.upstream
        _check_address("listen", listen, "")
        _check_address("upstream", upstream, "")
        await proxy.update(listen, upstream, _bool(body, "enabled", proxy.enabled))
        return json_response(200, proxy.to_json())

    async def _proxy_delete(self, request: Request, params: list[str]) -> Response:
        await self._collection.remove(params[0])
        return Response(204)

    # --- toxics ----------------------------------------------------------------------------

    async def _toxic_index(self, request: Request, params: list[str]) -> Response:
        proxy = self._collection.get(params[0])
        return json_response(200, [toxic.to_json() for toxic in proxy.toxics()])

    async def _toxic_create(self, request: Request, params: list[str]) -> Response:
        proxy = self._collection.get(params[0])
        body = _object(_json(request), "the body")
        toxicity = _number(body, "toxicity")
        toxic = new_toxic(_string(body, "type", ""), _string(body, "stream", "downstream"),
                          _string(body, "name", "") or None, 1.0 if toxicity is None else toxicity,
                          _object(body.get("attributes") or {}, "attributes"))
        await proxy.add_toxic(toxic)
        return json_response(200, toxic.to_json())

    async def _toxic_show(self, request: Request, params: list[str]) -> Response:
        return json_response(200, self._collection.get(params[0]).toxic(params[1]).to_json())

    async def _toxic_update(self, request: Request, params: list[str]) -> Response:
        proxy = self._collection.get(params[0])
        body = _object(_json(request), "the body")
        toxic = await proxy.update_toxic(params[1], _number(body, "toxicity"),
                                         _object(body.get("attributes") or {}, "attributes"))
        return json_response(200, toxic.to_json())

    async def _toxic_delete(self, request: Request, params: list[str]) -> Response:
        await self._collection.get(params[0]).remove_toxic(params[1])
        return Response(204)

    # --- server ----------------------------------------------------------------------------

    async def _reset(self, request: Request, params: list[str]) -> Response:
        await self._collection.reset()
        return Response(204)

    async def _version(self, request: Request, params: list[str]) -> Response:
        return Response(200, (json.dumps({"version": TOXIPROXY_VERSION}) + "\n").encode(),
                        content_type="application/json;charset=utf-8")


def _json(request: Request) -> Any:
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise errors.bad_request_body(str(exc) if request.body else "EOF") from exc


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.bad_request_body(f"{what} must be a JSON object")
    return value


def _string(body: dict[str, Any], field: str, default: str) -> str:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, str):
        raise errors.bad_request_body(f"{field} must be a string, got {value!r}")
    return value


def _bool(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise errors.bad_request_body(f"{field} must be true or false, got {value!r}")
    return value


def _number(body: dict[str, Any], field: str) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.bad_request_body(f"{field} must be a number, got {value!r}")
    return float(value)


def _check_address(field: str, value: str, where: str) -> None:
    try:
        parse_address(value)
    except ValueError as exc:
        raise errors.bad_request_body(f"{field}{where}: {exc}") from exc


def _proxy_spec(body: dict[str, Any], where: str) -> ProxySpec:
    name = _string(body, "name", "")
    if not name:
        raise errors.missing_field(f"name{where}")
    upstream = _string(body, "upstream", "")
    if not upstream:
        raise errors.missing_field(f"upstream{where}")
    check_name("proxy", name)
    listen = _string(body, "listen", "") or DEFAULT_LISTEN
    _check_address("listen", listen, where)
    _check_address("upstream", upstream, where)
    return ProxySpec(name, listen, upstream, _bool(body, "enabled", True))
