"""The one place where millpond errors become gRPC statuses on the server.

Every unary handler of the node runs inside :class:`ErrorInterceptor`: a
:class:`~millpond.errors.MillpondError` becomes its status code, message and
trailing metadata (reason, leader address, offsets, retry hint); any other
exception becomes ``INTERNAL`` and is logged with its traceback, because it is
a bug. An :class:`~millpond.invariant.InvariantViolation` additionally stops
the node: its state can no longer be trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from millpond import errors
from millpond.invariant import InvariantViolation

log = logging.getLogger(__name__)

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Translate exceptions of unary-unary handlers into gRPC statuses."""

    def __init__(self, on_invariant: Callable[[InvariantViolation], None]) -> None:
        self._on_invariant = on_invariant

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(handler.unary_unary, handler_call_details.method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, inner: Handler, method: str) -> Handler:
        async def translated(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(request, context)
            except errors.MillpondError as exc:
                code, message, metadata = errors.to_status(exc)
                await context.abort(code, message, trailing_metadata=tuple(metadata))
            except InvariantViolation as exc:
                log.critical("invariant violated in %s: %s", method, exc)
                self._on_invariant(exc)
                await context.abort(grpc.StatusCode.INTERNAL, f"node stopping: {exc}",
                                    trailing_metadata=((errors.REASON_KEY, "INTERNAL"),))
            except (grpc.aio.AbortError, KeyboardInterrupt):
                raise
            except Exception as exc:  # a bug: report it, keep serving
                log.exception("unexpected error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc!r}",
                                    trailing_metadata=((errors.REASON_KEY, "INTERNAL"),))

        return translated
