"""Answering the gateway's inference requests, on a path of their own."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from bus.clients import make_consumer
from bus.messages import InferReply, InferRequest
from bus.reply import ReplyAddress
from bus.settings import KafkaSettings
from scorer.registry import LiveModel, ModelRegistry
from streamscore.errors import MessageError, ModelError

log = logging.getLogger(__name__)


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
    return InferReply(request.id, model.name, model.version, [float(v) for v in values])


class RequestServer:
    """A thread that consumes ``requests`` with its own consumer and replies at once.

    Requests never queue behind the points backlog: they have their own consumer
    group, their own fetches and their own producer. A new group starts from the
    earliest request still on the topic, so none sent while it joined is missed;
    requests older than ``max_age_s`` are skipped (their caller stopped waiting).
    Kafka errors (a rebalance during a commit, a broker restart) are logged and
    retried; any other failure is kept in ``failed`` for the scorer to stop on.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        topic: str,
        group_id: str,
        registry: ModelRegistry,
        serving: Callable[[], LiveModel | None],
        producer: KafkaProducer,
        max_age_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._serving = serving
        self._producer = producer
        self._max_age_ms = max_age_s * 1000
        self._clock = clock
        self._consumer: KafkaConsumer = make_consumer(
            settings, topic, group_id=group_id, auto_offset_reset="earliest", fetch_max_wait_ms=10
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="requests", daemon=True)
        self.answered = 0
        self.skipped = 0
        self.failed: BaseException | None = None

    def start(self) -> None:
        """Start answering."""
        self._thread.start()

    def stop(self) -> None:
        """Finish the current requests, commit, leave the group."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._serve_once()
                except KafkaError as exc:
                    log.warning("requests: %s; retrying", exc)
                    self._stop.wait(0.5)
        except Exception as exc:
            log.exception("the request server failed")
            self.failed = exc
        finally:
            with contextlib.suppress(KafkaError):
                self._consumer.commit()  # what commit_async may not have finished
            self._consumer.close()

    def _serve_once(self) -> None:
        batches = self._consumer.poll(timeout_ms=100)
        if not batches:
            return
        oldest = self._clock() * 1000 - self._max_age_ms
        for records in batches.values():
            for record in records:
                if record.timestamp < oldest:
                    self.skipped += 1
                    continue
                self._handle(record)
        self._producer.flush()
        # no round trip on the reply path: a request answered twice after a crash is
        # harmless (the gateway drops a reply nobody waits for); close() commits the rest
        self._consumer.commit_async()

    def _handle(self, record: ConsumerRecord) -> None:
        try:
            address = ReplyAddress.of_request(record)
        except MessageError as exc:
            log.warning(
                "request at %s[%d]@%d dropped: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return
        try:
            reply = answer(InferRequest.from_bytes(record.value), self._registry, self._serving)
        except MessageError as exc:
            reply = InferReply(address.correlation_id, error=f"bad request: {exc}", status=400)
        self._producer.send(
            address.topic,
            value=reply.to_bytes(),
            key=address.correlation_id.encode(),
            partition=address.partition,
            headers=address.reply_headers(),
        )
        self.answered += 1
