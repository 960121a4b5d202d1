"""The errors the fault proxy's HTTP API answers with, as Toxiproxy names and words them.

Every failure a client must notice is an :class:`ApiError` carrying its HTTP
status; the API turns it into the body ``{"error": "<message>", "status": N}``
(Toxiproxy's ``ApiError``). The messages start with Toxiproxy's own words
("proxy not found", "bad request body: ...") so that clients matching on them
keep working.

::

    ApiError (status, message)
     ├── 400  bad_request_body, missing_field, invalid_stream, invalid_toxic_type, bad_attribute
     ├── 403  browser_refused
     ├── 404  proxy_not_found, toxic_not_found, route_not_found
     ├── 405  method_not_allowed
     └── 409  proxy_already_exists, toxic_already_exists, listen_failed (address in use),
              too_many (a bound of millpond.limits was reached)

Where Toxiproxy answers 500 (a listen address it cannot bind) this API answers
400 or 409 instead, so that every client (toxiproxy-python raises only on 400,
404 and 409) notices. A 500 means a bug here.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "bad_attribute",
    "bad_request_body",
    "browser_refused",
    "invalid_stream",
    "invalid_toxic_type",
    "listen_failed",
    "method_not_allowed",
    "missing_field",
    "proxy_already_exists",
    "proxy_not_found",
    "route_not_found",
    "too_many",
    "toxic_already_exists",
    "toxic_not_found",
]


class ApiError(Exception):
    """A request the API refuses: ``status`` is the HTTP status, ``message`` the ``error`` field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def to_json(self) -> dict[str, object]:
        """The response body, Toxiproxy's ``{"error": ..., "status": ...}``."""
        return {"error": self.message, "status": self.status}


def bad_request_body(detail: str) -> ApiError:
    """The body is not JSON, or not of the expected shape."""
    return ApiError(400, f"bad request body: {detail}")


def missing_field(field: str) -> ApiError:
    """A required field (``name``, ``upstream``) is absent or empty."""
    return ApiError(400, f"missing required field: {field}")


def invalid_stream() -> ApiError:
    """A toxic's ``stream`` is neither ``upstream`` nor ``downstream``."""
    return ApiError(400, "stream was invalid, can be either upstream or downstream")


def invalid_toxic_type(name: str) -> ApiError:
    """The toxic ``type`` is not one this proxy implements."""
    return ApiError(400, f"invalid toxic type: {name!r}")


def bad_attribute(detail: str) -> ApiError:
    """A toxic attribute is unknown, of the wrong JSON type, or out of range."""
    return ApiError(400, f"bad request body: {detail}")


def browser_refused() -> ApiError:
    """A browser (``User-Agent: Mozilla/...``) called the API: refused, as Toxiproxy does (CSRF guard)."""
    return ApiError(403, "User agent not allowed")


def proxy_not_found() -> ApiError:
    return ApiError(404, "proxy not found")


def toxic_not_found() -> ApiError:
    return ApiError(404, "toxic not found")


def route_not_found(path: str) -> ApiError:
    return ApiError(404, f"404 page not found: {path}")


def method_not_allowed(method: str, path: str) -> ApiError:
    return ApiError(405, f"method {method} not allowed on {path}")


def proxy_already_exists() -> ApiError:
    return ApiError(409, "proxy already exists")


def toxic_already_exists() -> ApiError:
    return ApiError(409, "toxic already exists")


def listen_failed(listen: str, detail: str, in_use: bool) -> ApiError:
    """The proxy could not bind ``listen``: 409 if the address is in use, else 400 (bad address)."""
    return ApiError(409 if in_use else 400, f"listen tcp {listen}: {detail}")


def too_many(what: str, limit: int) -> ApiError:
    """A bound of :mod:`millpond.limits` was reached (``what`` names it): 409, the state refuses it."""
    return ApiError(409, f"too many {what}: the limit is {limit}")
