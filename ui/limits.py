"""Bounded work on a shared server: how many requests may wait, how many one visitor may have waiting or
running, and which kinds of request share one slot, so that a script submitting in a loop, or one slow upload,
cannot make every teacher behind it wait.

Gradio's queue takes a `max_size` but knows no per-visitor bound; both are checked here, when a request asks to
join the queue (before it is accepted). A full queue is answered as gradio answers it (HTTP 503: the page says
"This application is currently busy", gradio_client raises QueueError), so every client reads it as busy; a
visitor over their own bound gets HTTP 429 with a message that says what to do (the page shows it). A visitor
is a session (each browser tab, each gradio_client Client).
"""

from __future__ import annotations

import logging

log = logging.getLogger("bloom-steer")

BUSY = "The demo is busy ({waiting} requests are waiting); please try again in a minute."
YOURS = (
    "The demo is busy with your earlier requests ({n} waiting or running, the most one visitor may have at "
    "once); please try again when they have finished."
)
# Kinds of request that take minutes or hold the CPU for long (an uploaded question set, a strength sweep,
# training): one of them runs at a time, whatever their number, so the Compare keeps its own slots.
SLOW = "slow"
ONE_SLOW = {"concurrency_limit": 1, "concurrency_id": SLOW}  # an event listener's arguments for a slow kind


class VisitorBound:
    """Refuses a request to join the queue when `queue_size` requests already wait, or when its visitor
    already has `per_client` requests accepted and not finished. Installed on a Blocks' queue by `bound`."""

    def __init__(self, queue, queue_size: int, per_client: int):
        self.queue = queue
        self.queue_size = queue_size
        self.per_client = per_client
        self.accepted: dict[str, set[str]] = {}  # visitor -> ids of their events the queue still holds
        self.joining: dict[str, int] = {}  # visitor -> requests between this check and the queue's answer

    def live(self, visitor: str) -> int:
        held = self.queue.event_ids_to_events  # gradio drops an event from it when it completes or is cancelled
        ids = {i for i in self.accepted.get(visitor, ()) if i in held}
        if ids:
            self.accepted[visitor] = ids
        else:
            self.accepted.pop(visitor, None)
        return len(ids) + self.joining.get(visitor, 0)

    def refusal(self, visitor: str | None) -> tuple[int, str] | None:
        """(HTTP status, message) when the request may not join, else None."""
        waiting = len(self.queue) + sum(self.joining.values())
        if self.queue_size and waiting >= self.queue_size:
            return 503, BUSY.format(waiting=waiting)
        if visitor and self.per_client and (n := self.live(visitor)) >= self.per_client:
            return 429, YOURS.format(n=n)
        return None

    def wrap(self, push):
        from fastapi import HTTPException

        async def bounded_push(body, request, username):
            visitor = getattr(body, "session_hash", None)
            if (refused := self.refusal(visitor)) is not None:
                log.info("refused a request of %s: %s", visitor, refused[1])
                raise HTTPException(status_code=refused[0], detail=refused[1])
            self.joining[visitor] = self.joining.get(visitor, 0) + 1  # counted before the first await
            try:
                ok, event_id, state = await push(body, request, username)
            finally:
                self.joining[visitor] -= 1
                if not self.joining[visitor]:
                    del self.joining[visitor]
            if ok and visitor:
                self.accepted.setdefault(visitor, set()).add(event_id)
            if len(self.accepted) > 1000:  # visitors who left: forget the ones with nothing held
                for v in list(self.accepted):
                    self.live(v)
            return ok, event_id, state

        return bounded_push


def bound(demo, queue_size: int, per_client: int) -> VisitorBound:
    """Bound an already queued Blocks (demo.queue(...) first): see VisitorBound."""
    queue = demo._queue  # gradio 6: the Queue whose push() every /queue/join goes through
    guard = VisitorBound(queue, queue_size, per_client)
    queue.push = guard.wrap(queue.push)
    return guard
