"""The Sender actor: POSTs one batch at a time, with retries, and settles it in the ledger.

`Delivery` holds the per-batch logic (attempt, classify, back off, split on 413) so the same
code serves the Sender actors and `sync_mode` captures on the caller's thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pykka

from phactor._log import register_secrets, scrub
from phactor.buffer import ENVELOPE_BYTES, Batch, EventBuffer, Item
from phactor.config import Config
from phactor.errors import DeliveryError
from phactor.health import DeliveryHealth, error_text
from phactor.retry import Verdict, backoff_delay, classify, parse_retry_after
from phactor.supervisor import SupervisedActor
from phactor.transport import Response, Transport

__all__ = [
    "Delivery",
    "Outcome",
    "Send",
    "Sender",
    "SenderIdle",
    "TakeReady",
    "delivering",
    "delivering_for",
]

# Which buffer the current thread is delivering for (a Sender's thread, or a sync_mode caller):
# `on_error` runs there, and a flush()/stop() from it must not wait for its own batch.
_delivering = threading.local()


def delivering_for(buffer: EventBuffer) -> bool:
    """True on a thread that is inside `Delivery.deliver` for `buffer` (e.g. in `on_error`)."""
    return getattr(_delivering, "buffer", None) is buffer


@contextlib.contextmanager
def delivering(buffer: EventBuffer) -> Iterator[None]:
    """Mark this thread as delivering for `buffer` (the Batcher while `on_drop` runs): a
    flush()/stop() from there must not wait for the very thread that runs it."""
    outer = getattr(_delivering, "buffer", None)
    _delivering.buffer = buffer
    try:
        yield
    finally:
        _delivering.buffer = outer


@dataclass(frozen=True)
class Send:
    """Batcher -> Sender: deliver this batch."""

    batch: Batch


@dataclass(frozen=True)
class TakeReady:
    """Buffer -> an idle (parked) Sender: a batch is ready, take it yourself."""


@dataclass(frozen=True)
class SenderIdle:
    """Sender -> Batcher: done with the last batch, ready for another."""

    name: str


@dataclass
class Outcome:
    """How one batch ended: counts per final state, and what goes back to the queue."""

    sent: int = 0
    dropped: dict[str, int] | None = None
    requeue: list[Item] | None = None

    def drop(self, reason: str, n: int) -> None:
        self.dropped = self.dropped or {}
        self.dropped[reason] = self.dropped.get(reason, 0) + n


class Delivery:
    """Sends batches through a Transport following the retry policy of the config.

    Every request first passes the buffer's `CircuitBreaker`: while the endpoint is failing
    only one request at a time goes out (the probe), spaced by the instance-wide back-off, so
    the wait between retries happens there. Retries resend the same serialised events, so the
    same uuids: the server can deduplicate an attempt whose answer was lost.
    """

    def __init__(
        self,
        config: Config,
        transport: Transport,
        buffer: EventBuffer,
        abort: threading.Event,
        log: Any,
        health: DeliveryHealth | None = None,
    ):
        self.config = config
        self.transport = transport
        self.buffer = buffer
        self.breaker = buffer.breaker
        self.abort = abort
        self.log = log
        self.health = health
        self._logged_kinds: set[str] = set()
        # From now on every phactor log line masks these (see phactor._log).
        register_secrets(config.api_key, config.personal_api_key)

    def deliver(self, batch: Batch) -> Outcome:
        """Deliver every event of `batch` (splitting on 413); never raises for HTTP trouble."""
        outcome = Outcome()
        outer = getattr(_delivering, "buffer", None)
        _delivering.buffer = self.buffer
        try:
            self._deliver(batch.holder, batch.items, outcome)
        finally:
            _delivering.buffer = outer
            # An exception between acquire and the answer must not leave the probe slot taken.
            self.breaker.release(batch.holder)
        return outcome

    def _deliver(self, holder: str, items: list[Item], outcome: Outcome) -> None:
        config = self.config
        events = [d for _, d in items]
        attempt = 0
        while True:
            if not self.breaker.acquire(holder, self.abort):
                # Shutting down: back to the buffer, which counts it under the close reason.
                outcome.requeue = (outcome.requeue or []) + items
                return
            response = self.transport.post_batch(config.api_key or "", events)
            verdict = classify(response.status)
            if verdict is not Verdict.RETRY:
                self.breaker.succeeded(holder)
            if verdict is Verdict.SENT:
                outcome.sent += len(items)
                if self.health is not None:
                    self.health.succeeded()
                return
            if self.health is not None and (verdict is not Verdict.SPLIT or len(items) == 1):
                self._note_error(response)  # (a 413 that splits is not an error yet)
            if verdict is Verdict.SPLIT:
                if len(items) == 1:
                    self._give_up("too_large", response, items, outcome)
                    return
                middle = len(items) // 2
                self._deliver(holder, items[:middle], outcome)
                self._deliver(holder, items[middle:], outcome)
                return
            if verdict is Verdict.REJECTED:
                self._give_up("rejected", response, items, outcome)
                return
            if verdict is Verdict.UNAUTHORIZED:
                self._give_up("unauthorized", response, items, outcome)
                return
            # RETRY: the instance as a whole backs off (exponent = failures in a row).
            delay = backoff_delay(
                self.breaker.failures, config.retry_base_delay, config.retry_max_delay
            )
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            if retry_after is not None:
                delay = max(delay, min(retry_after, config.retry_max_delay))
            self.breaker.failed(holder, delay)
            if attempt >= config.max_retries or self.abort.is_set():
                self.log.warning(
                    "batch_requeued",
                    events=len(items),
                    attempts=attempt + 1,
                    status=response.status,
                    error=self._describe(response),
                )
                outcome.requeue = (outcome.requeue or []) + items
                return
            attempt += 1
            self.buffer.count_retry()
            self.log.info(
                "batch_retry",
                attempt=attempt,
                delay=round(delay, 3),
                status=response.status,
                error=self._describe(response),
            )

    def _give_up(
        self, reason: str, response: Response, items: list[Item], outcome: Outcome
    ) -> None:
        outcome.drop(reason, len(items))
        message = self._describe(response)
        if reason not in self._logged_kinds:
            # Once per kind and Sender: a bad key would otherwise log on every batch.
            self._logged_kinds.add(reason)
            self.log.error(
                "batch_dropped",
                reason=reason,
                status=response.status,
                server_message=message,
                events=len(items),
            )
        else:
            self.log.debug(
                "batch_dropped", reason=reason, status=response.status, events=len(items)
            )
        on_error = self.config.on_error
        if on_error is not None:
            try:
                events = [orjson.loads(d) for _, d in items]
                on_error(DeliveryError(reason, response.status, message), events)
            except BaseException as error:  # a user callback must never kill the Sender
                self.log.error("on_error_callback_failed", error=repr(error))

    def _note_error(self, response: Response) -> None:
        assert self.health is not None
        config = self.config
        if response.error is not None:
            message = f"{type(response.error).__name__}: {response.error}"
        else:
            message = response.text[:2000] or "(no body)"
        secrets = (config.api_key, config.personal_api_key)
        self.health.failed(error_text(response.status, message, secrets))

    def _describe(self, response: Response) -> str:
        if response.error is not None:
            text = f"{type(response.error).__name__}: {response.error}"
        else:
            text = response.text
        # A server echoing the request must not put a key into the app's logs or into the
        # DeliveryError given to on_error. Masked before the cut: a cut key would stay readable.
        return scrub(text)[:300]


class Sender(SupervisedActor):
    """One HTTP worker of the instance's pool: delivers a batch, then takes the next one itself
    when a full batch is ready (or the queue is being drained); else it waits for a `Send`.

    The first Sender runs as long as the tree; a spare one (`retire_after` seconds) is started
    on demand and retires when it has had no batch for that long (see `SupervisedActor`).
    """

    def __init__(
        self,
        child_name: str,
        generation: int,
        supervisor: Any,
        *,
        delivery_factory: Callable[[], Delivery],
        buffer: EventBuffer,
        notify_idle: Callable[[str], None],
        retire_after: float | None = None,
    ):
        super().__init__(child_name, generation, supervisor, retire_after=retire_after)
        self.delivery_factory = delivery_factory
        self.buffer = buffer
        self.notify_idle = notify_idle
        self.delivery: Delivery | None = None

    def started(self) -> None:
        # Built in the actor's own thread: one requests.Session per Sender, never shared.
        self.delivery = self.delivery_factory()
        self.holder = f"{self.child_name}#{self.generation}"  # as the Batcher files its batches
        # The Batcher's budget: the whole body (events + envelope) within max_batch_bytes.
        self.budget = max(self.delivery.config.max_batch_bytes - ENVELOPE_BYTES, 1)
        ref = self.actor_ref

        def pull() -> bool:
            try:
                ref.tell(TakeReady())
            except pykka.ActorDeadError:
                return False
            return True

        self._pull = pull
        self.buffer.park(self.child_name, pull)

    def retire(self) -> None:
        # Off the parked list first: a batch that becomes ready now goes to another Sender or
        # to the Batcher (which files it under this incarnation if it picks this one: reclaimed).
        self.buffer.unpark(self.child_name)
        super().retire()

    def stopped(self) -> None:
        buffer = self.buffer
        buffer.unpark(self.child_name)
        if self.delivery is not None:
            self.delivery.transport.close()
        # A TakeReady told after this Sender's stop was dropped with it: the ready batch it
        # was meant for would wait for the Batcher's next tick. Let the Batcher decide now.
        queued = buffer.queue_length()
        if queued and (queued >= buffer.flush_at or buffer.draining):
            self.notify_idle(self.child_name)

    def handle(self, message: Any) -> Any:
        if isinstance(message, Send):
            assert self.delivery is not None
            outcome = self.delivery.deliver(message.batch)
            self.buffer.settle(
                message.batch.holder,
                sent=outcome.sent,
                dropped=outcome.dropped,
                requeue=outcome.requeue or (),
            )
            self.worked()  # a spare Sender retires once it goes without a batch for a while
            self._take_next()
        elif isinstance(message, TakeReady):
            self._take_next()
        return None

    def _take_next(self) -> None:
        """Take the next batch if one is ready (no round trip through the Batcher: a GIL turn
        and two messages fewer per batch), told to itself so that a stop() queued meanwhile
        still gets its turn between two batches; else park, idle, until a batch is ready."""
        buffer = self.buffer
        queued = buffer.queue_length()
        if queued and (queued >= buffer.flush_at or buffer.draining):
            batch = buffer.take(self.holder, buffer.flush_at, self.budget)
            if batch is not None:
                if buffer.queue_length() == 0:
                    buffer.draining = False
                self.actor_ref.tell(Send(batch))
                return
        buffer.park(self.child_name, self._pull)
        if queued and buffer.draining:
            self.notify_idle(self.child_name)  # not taken: let the Batcher decide
