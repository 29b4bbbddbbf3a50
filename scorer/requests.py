"""Answering the gateway's inference requests, on a path of their own."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from bus.clients.base import Headers, Record
from bus.messages import InferReply, InferRequest
from bus.reply import ReplyAddress
from bus.stream import Outcome, Step
from core.errors import MessageError, ModelError
from scorer.registry import LiveModel, ModelRegistry

log = logging.getLogger(__name__)

#: How often the request runner commits its offsets (and so waits for its replies' acks).
COMMIT_EVERY_S = 0.5


def answer(
    request: InferRequest, registry: ModelRegistry, serving: Callable[[], LiveModel | None]
) -> InferReply:
    """The reply to one request: predictions, or an error with its status."""
    if request.model is None:
        model = serving()
        if model is None:
            return InferReply(request.id, error="no model is serving yet; retry later", status=503)
    else:
        model = registry.get(request.model, request.version)
        if model is None:
            what = f"model {request.model!r}" + (
                f" version {request.version}" if request.version is not None else ""
            )
            return InferReply(request.id, error=f"{what} is not loaded", status=404)
    width = len(request.instances[0])
    if width != model.n_features:
        return InferReply(
            request.id,
            error=f"expected {model.n_features} features, got {width} "
            f"(model {model.name!r} v{model.version})",
            status=400,
        )
    try:
        values = model.predict(np.asarray(request.instances, dtype=np.float64))
    except ModelError as exc:
        return InferReply(request.id, error=str(exc), status=400)
    if not np.isfinite(values).all():
        return InferReply(
            request.id,
            error=f"the prediction is not a finite number (model {model.name!r} "
            f"v{model.version}); check the inputs' scale",
            status=400,
        )
    return InferReply(request.id, model.name, model.version, [float(v) for v in values])


def _log_answer(address: ReplyAddress, reply: InferReply) -> None:
    """One debug line per request (an error reply: info), with the caller's request id."""
    if reply.error is None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "answered request %s (request-id %s): model %s v%s, %d rows",
                address.correlation_id,
                address.request_id or "-",
                reply.model,
                reply.version,
                len(reply.predictions),
            )
        return
    log.info(
        "answered request %s (request-id %s) with %s: %s",
        address.correlation_id,
        address.request_id or "-",
        reply.status,
        reply.error,
    )


class RequestStep(Step):
    """Answers the gateway's inference requests; the kernel runs it on a consumer of its own.

    Requests never queue behind the points backlog: they have their own consumer
    group, fetches and producer (a second `bus.stream.StreamRunner`, at-least-once:
    a request answered twice after a crash is harmless, the gateway drops a reply
    nobody waits for). A new group starts from the earliest request still on the
    topic; requests older than ``max_age_s`` are skipped (their caller stopped
    waiting). A request whose reply address is missing, malformed, or not a
    partition of the configured ``replies`` topic cannot be answered: it goes to
    the dead-letter topic with the reason, and nothing is written anywhere else.

    Replies leave as each batch is processed, but the batch commits (the kernel
    then waits for every reply to be acknowledged) at most every
    ``commit_every_s``, and when a poll comes back empty: a synchronous flush per
    batch would hold the next poll for a broker round trip. A crash answers the
    uncommitted requests again (harmless, see above).
    """

    def __init__(
        self,
        *,
        replies_topic: str,
        reply_partitions: Callable[[], int],
        registry: ModelRegistry,
        serving: Callable[[], LiveModel | None],
        max_age_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        commit_every_s: float = COMMIT_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._replies_topic = replies_topic
        self._reply_partitions = reply_partitions
        self._registry = registry
        self._serving = serving
        self._max_age_ms = max_age_s * 1000
        self._clock = clock
        self._commit_every_s = commit_every_s
        self._monotonic = monotonic
        self._committed_at = monotonic()
        self.answered = 0
        self.skipped = 0

    def process(self, records: list[Record]) -> Outcome:
        """One reply per answerable request, dead letters for the others."""
        outcome = Outcome()
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        partitions: list[int | None] = []
        headers: list[Headers | None] = []
        oldest = self._clock() * 1000 - self._max_age_ms
        skipped = 0
        for record in records:
            if record.timestamp < oldest:
                skipped += 1
                continue
            try:
                address = self._address(record)
            except MessageError as exc:
                outcome.deadletters.append((record, f"cannot answer the request: {exc}"))
                continue
            try:
                reply = answer(InferRequest.from_bytes(record.value), self._registry, self._serving)
            except MessageError as exc:
                reply = InferReply(address.correlation_id, error=f"bad request: {exc}", status=400)
            _log_answer(address, reply)
            values.append(reply.to_bytes())
            keys.append(address.correlation_id.encode())
            partitions.append(address.partition)
            headers.append(address.reply_headers())
        if values:
            outcome.add(self._replies_topic, values, keys, partitions, headers)
        outcome.context = (len(values), skipped)
        outcome.commit = self._monotonic() - self._committed_at >= self._commit_every_s
        return outcome

    def idle(self) -> Outcome | None:
        """Nothing came: commit what was answered since the last commit."""
        return Outcome()

    def committed(self, outcome: Outcome) -> None:
        """Count what was answered and skipped; note when the last commit was."""
        if outcome.commit:
            self._committed_at = self._monotonic()
        if isinstance(outcome.context, tuple):
            answered, skipped = outcome.context
            self.answered += answered
            self.skipped += skipped

    def _address(self, record: Record) -> ReplyAddress:
        """The request's reply address, checked against the configured ``replies`` topic."""
        address = ReplyAddress.of_request(record)
        if address.topic != self._replies_topic:
            raise MessageError(
                f"reply topic {address.topic!r} is not this scorer's replies topic "
                f"{self._replies_topic!r}"
            )
        count = self._reply_partitions()
        if address.partition >= count:
            raise MessageError(
                f"reply partition {address.partition} does not exist "
                f"({self._replies_topic!r} has {count})"
            )
        return address
