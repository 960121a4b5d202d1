"""An owner for the background tasks of a long-lived component.

``asyncio.TaskGroup`` needs an ``async with`` block around its whole life; a
proxy's connections and a link's toxic stages come and go while the server
runs, and some are cancelled on purpose (a toxic removed). :class:`TaskOwner`
keeps the same promises: every task it spawns is tracked, :meth:`close`
cancels and awaits all of them, a task that is cancelled is fine, and a task
that fails with an exception is a bug: the exception goes to ``on_failure``
(the server's fail-stop), never printed and forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["TaskOwner"]


class TaskOwner:
    """Spawns, tracks, and on :meth:`close` cancels and awaits tasks."""

    def __init__(self, name: str, on_failure: Callable[[BaseException], None]) -> None:
        self._name = name
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coroutine`` as a task owned here. After :meth:`close`, the task is cancelled at once."""
        task = asyncio.get_running_loop().create_task(coroutine, name=f"{self._name}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        if self._closed:
            task.cancel()
        return task

    async def close(self) -> None:
        """Cancel every task and wait until all have finished (idempotent)."""
        self._closed = True
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            self._on_failure(failure)
