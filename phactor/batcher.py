"""The Batcher actor: decides when queued events become batches and which Sender takes each.

It flushes when the queue reaches `flush_at` (woken by the buffer), every `flush_interval`
(the shared scheduler), or on request (`flush()`), and only ever `tell`s Senders — it never
waits on one. A Sender that finishes a batch takes the next ready one itself (no message to
the Batcher), so a busy pipeline wakes the Batcher at most once per batch. Its flush timer runs only while something is queued or in flight: an idle
instance arms none (the buffer wakes the Batcher on the first event, which arms it). Its only state is "draining or not": the queue and the in-flight ledger live in
the `EventBuffer`, so a restarted Batcher carries on where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from phactor.buffer import ENVELOPE_BYTES, EventBuffer
from phactor.health import DeliveryHealth
from phactor.sender import Send, SenderIdle, delivering
from phactor.supervisor import Registry, SupervisedActor
from phactor.timer import scheduler

__all__ = ["ENVELOPE_BYTES", "Batcher", "FlushNow", "Reclaim", "Tick", "Wake", "holder_name"]


@dataclass(frozen=True)
class Wake:
    """The buffer reached `flush_at`."""


@dataclass(frozen=True)
class Tick:
    """The flush interval passed."""


@dataclass(frozen=True)
class Reclaim:
    """A Sender was restarted: give back batches its dead incarnation held, then dispatch."""


@dataclass(frozen=True)
class FlushNow:
    """Send everything queued now, partial batches included."""


class Batcher(SupervisedActor):
    """Turns the instance's queue into batches for free Senders."""

    def __init__(
        self,
        child_name: str,
        generation: int,
        supervisor: Any,
        *,
        buffer: EventBuffer,
        registry: Registry,
        health: DeliveryHealth | None = None,
        sender_names: Sequence[str],
        flush_at: int,
        flush_interval: float,
        max_batch_bytes: int,
    ):
        super().__init__(child_name, generation, supervisor)
        self.buffer = buffer
        self.health = health
        self.registry = registry
        self.sender_names = list(sender_names)
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.max_batch_bytes = max_batch_bytes
        # The request body is the events plus an envelope (api key, sent_at, ...): keep the
        # whole body under max_batch_bytes. A single event larger than that still goes alone.
        self.batch_budget = max(max_batch_bytes - ENVELOPE_BYTES, 1)
        self._timer: int | None = None

    def started(self) -> None:
        # Whatever a previous incarnation left queued gets going now.
        self.dispatch()
        self._rearm()

    def stopped(self) -> None:
        if self._timer is not None:
            scheduler.cancel(self._timer)

    @property
    def draining(self) -> bool:
        """Partial batches go too (a flush or the flush interval): kept on the buffer, where
        Senders taking their next batch read it."""
        return self.buffer.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.buffer.draining = value

    def _rearm(self) -> None:
        """Arm the flush timer while there is work; leave it disarmed when idle (unless drops
        are still to be reported to `on_drop`, or the watchdog follows a stall)."""
        if self._timer is not None:
            return
        if not self.buffer.idle():
            self._schedule_tick()
        elif self.health is not None and self.health.wants_tick(self.buffer.stats()["dropped"]):
            self.buffer.mark_armed()
            self._schedule_tick()

    def _schedule_tick(self) -> None:
        ref = self.actor_ref

        def tick() -> None:
            try:
                ref.tell(Tick())
            except pykka.ActorDeadError:
                pass  # this incarnation is gone; its successor runs its own timer

        self._timer = scheduler.call_later(self.flush_interval, tick)

    def handle(self, message: Any) -> Any:
        if isinstance(message, Tick):
            self._timer = None
            self.draining = True
            self.reclaim()
        elif isinstance(message, FlushNow):
            self.draining = True
        elif isinstance(message, Reclaim):
            self.reclaim()
        elif not isinstance(message, Wake | SenderIdle):
            return None
        self.dispatch()
        if isinstance(message, Tick) and self.health is not None:
            # After the dispatch: the watchdog and on_drop never delay a batch.
            with delivering(self.buffer):
                self.health.tick(self.buffer.stats())
        self._rearm()
        return None

    def reclaim(self) -> None:
        """Requeue batches filed under Sender incarnations that are no longer running.

        A dead Sender's batch (or a Send that landed in its inbox as it died) is filed under
        `name#generation`; once the registry holds a newer generation, that holder is stale.
        """
        live = set()
        for name in self.sender_names:
            entry = self.registry.entry(name)
            if entry is not None and entry[0].is_alive():
                live.add(holder_name(name, entry[1]))
        self.buffer.reclaim(self.sender_names, live)

    def dispatch(self) -> None:
        """Hand a batch to every idle Sender while there is enough to send."""
        buffer = self.buffer
        for name in self.sender_names:
            queued = buffer.queue_length()
            if queued == 0:
                self.draining = False
                return
            if queued < self.flush_at and not self.draining:
                return
            entry = self.registry.entry(name)
            if entry is None:
                if self.registry.demand(name):
                    return  # a spare Sender starts on demand: Reclaim comes once it runs
                continue  # restarting; the Supervisor sends Reclaim when it is back
            ref, generation = entry
            holder = holder_name(name, generation)
            batch = buffer.take(holder, self.flush_at, self.batch_budget)
            if batch is None:
                continue  # this Sender is busy
            try:
                ref.tell(Send(batch))
            except pykka.ActorDeadError:
                buffer.give_back(holder)
        if buffer.queue_length() == 0:
            self.draining = False


def holder_name(sender: str, generation: int) -> str:
    """The ledger key of a batch held by one incarnation of a Sender."""
    return f"{sender}#{generation}"
