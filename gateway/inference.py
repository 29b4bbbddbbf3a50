"""Inference as the resources see it: check the request against the catalogue, ask the bus.

`Inference` is the one object the inference resources call. It knows nothing of
HTTP bodies (see `gateway.payloads`) and nothing of Kafka (the bus client,
`bus.reply.ReplyClient` in production, is given to it); it turns what goes wrong
into a `GatewayError` with the contract's status.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bus.messages import InferReply, InferRequest
from bus.reply import (
    CLOCK_SKEW_MS,
    AsyncTicket,
    ReplyStats,
    ReplyTimeoutError,
    RequestTooLargeError,
    TooManyPendingError,
    UnknownTicketError,
)
from core.errors import BusError, ModelError
from gateway.catalogue import Catalogue, VersionInfo
from gateway.payloads import GatewayError, Json, Labelled, Rows, bad
from regressors import RollingMetrics

#: Statuses a scorer's error reply keeps; any other becomes 503.
RELAYED_STATUSES = frozenset({400, 404, 413, 503, 504})


class InferenceBus(Protocol):
    """What the gateway needs from request/reply over the bus (`bus.reply.ReplyClient`)."""

    def call(
        self, request: InferRequest, timeout_s: float, *, request_id: str | None = None
    ) -> InferReply:
        """Publish and wait for the reply."""
        ...

    def submit(
        self, request: InferRequest, timeout_s: float, *, request_id: str | None = None
    ) -> AsyncTicket:
        """Publish for a later `fetch`."""
        ...

    def ready(self) -> bool:
        """True when a request sent now gets its reply read."""
        ...

    def fetch(self, ticket: AsyncTicket, timeout_s: float) -> InferReply | None:
        """The reply to a submitted request, or None while there is none."""
        ...

    def reachable(self) -> bool:
        """True when Kafka answered recently."""
        ...

    def owned_partitions(self) -> list[int]:
        """The replies partition this process reads (empty until it is positioned)."""
        ...

    def stats(self) -> ReplyStats:
        """Counters for the metrics."""
        ...


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply, with the request id the caller sees."""

    reply: InferReply
    id: str


@dataclass(frozen=True, slots=True)
class Pending:
    """An accepted asynchronous request: where to poll."""

    token: str
    id: str


class Inference:
    """Runs inference requests over the bus and reports readiness."""

    def __init__(
        self,
        bus: InferenceBus,
        catalogue: Catalogue,
        *,
        timeout_s: float,
        async_ttl_ms: int,
        clock_ms: Callable[[], int],
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.bus = bus
        self.catalogue = catalogue
        self.timeout_s = timeout_s
        self.async_ttl_ms = async_ttl_ms
        self._clock_ms = clock_ms
        self._new_id = new_id

    def predict(self, rows: Rows, request_id: str | None = None) -> Answer:
        """Predict ``rows`` with the model they name (or the scorer's serving model)."""
        request = self._request(rows)
        try:
            reply = self.bus.call(request, self.timeout_s, request_id=request_id)
        except ReplyTimeoutError as exc:
            raise GatewayError(504, str(exc)) from exc
        except BusError as exc:
            raise _bus_problem(exc) from exc
        return Answer(_checked(reply), rows.id or request.id)

    def submit(self, rows: Rows, request_id: str | None = None) -> Pending:
        """Publish ``rows`` for an answer fetched later; return the poll token."""
        request = self._request(rows)
        try:
            ticket = self.bus.submit(request, self.timeout_s, request_id=request_id)
        except BusError as exc:
            raise _bus_problem(exc) from exc
        return Pending(ticket.token(), rows.id or request.id)

    def result(self, token: str) -> InferReply | None:
        """The answer to an asynchronous request, None while it is not there yet.

        Raises a 404 `GatewayError` for a token that is malformed, from the future,
        or older than the asynchronous time-to-live.
        """
        try:
            ticket = AsyncTicket.parse(token)
        except UnknownTicketError as exc:
            raise GatewayError(404, str(exc)) from exc
        age = self._clock_ms() - ticket.sent_ms
        if age > self.async_ttl_ms or age < -CLOCK_SKEW_MS:
            raise GatewayError(
                404,
                f"request {token!r} is unknown or expired (results are kept "
                f"{self.async_ttl_ms // 1000} s): send the request again",
            )
        try:
            reply = self.bus.fetch(ticket, self.timeout_s)
        except UnknownTicketError as exc:
            raise GatewayError(404, str(exc)) from exc
        except BusError as exc:
            raise _bus_problem(exc) from exc
        return None if reply is None else _checked(reply)

    def readiness(self) -> dict[str, bool]:
        """Each condition of readiness: Kafka reachable, the reply partition read, models loaded."""
        return {
            "bus": self.bus.reachable(),
            "reply_partition": self.bus.ready(),
            "catalogue": self.catalogue.loaded(),
            "model": bool(self.catalogue.latest()),
        }

    def model_ready(self, name: str, version: int | None) -> bool:
        """True when the gateway can serve model ``name`` (version ``version``) now; 404 if unknown.

        A version the catalogue lists is one the scorer keeps loaded; it is ready when
        the gateway itself is (bus reachable, reply partition read, catalogue loaded).
        """
        self.version_of(name, version)
        return self.bus.reachable() and self.bus.ready() and self.catalogue.loaded()

    def version_of(self, name: str, version: int | None) -> VersionInfo:
        """Version ``version`` (None: the newest) of model ``name``, or a 404 `GatewayError`."""
        info = self.catalogue.lookup(name, version)
        if info is None:
            raise GatewayError(404, self._unknown(name, version))
        return info

    def score(self, name: str, version: int | None, batch: Labelled) -> Json:
        """R2, RMSE and MAE of a model version on a labelled batch (computed here, exactly).

        The version's coefficients are the ones the catalogue validated (as the scorer
        does), so its predictions are the scorer's.
        """
        info = self.version_of(name, version)
        if info.regressor is None:
            raise GatewayError(503, f"model {name!r} v{info.version} has no coefficients here")
        width = len(batch.rows[0])
        if width != info.n_features:
            raise bad(
                f"expected {info.n_features} features, got {width} "
                f"(model {info.name!r} v{info.version})"
            )
        try:
            predictions = info.regressor.predict(np.asarray(batch.rows, dtype=np.float64))
        except ModelError as exc:
            raise bad(str(exc)) from exc
        if not np.isfinite(predictions).all():
            raise bad(f"a prediction is not a finite number (model {name!r} v{info.version})")
        metrics = RollingMetrics(len(batch.y))
        metrics.update_many(np.asarray(batch.y, dtype=np.float64), predictions)
        snapshot = metrics.snapshot()
        return {
            "model_name": info.name,
            "model_version": str(info.version),
            "count": snapshot.count,
            "r2": snapshot.r2,
            "rmse": snapshot.rmse,
            "mae": snapshot.mae,
        }

    def worker(self) -> int:
        """The id of the process answering (one gunicorn worker)."""
        return os.getpid()

    def reply_partitions(self) -> list[int]:
        """The replies partition this worker reads."""
        return self.bus.owned_partitions()

    def _request(self, rows: Rows) -> InferRequest:
        self._check(rows)
        return InferRequest(
            id=rows.id or self._new_id(),
            instances=rows.rows,
            model=rows.model,
            version=rows.version,
        )

    def _check(self, rows: Rows) -> None:
        """Refuse what the scorer would refuse, before it goes on the bus."""
        if not self.catalogue.loaded():
            raise GatewayError(
                503, "the model catalogue is still loading; retry in a moment", retry_after_s=1
            )
        if rows.model is None:
            latest = self.catalogue.latest()
            if not latest:
                raise GatewayError(
                    503,
                    "no model has been trained yet: publish labelled points and retry",
                    retry_after_s=5,
                )
            widths = {info.n_features for info in latest}
            if len(widths) == 1 and rows.width not in widths:
                raise bad(f"expected {widths.pop()} features, got {rows.width}")
            return
        info = self.version_of(rows.model, rows.version)
        if rows.width != info.n_features:
            raise bad(
                f"expected {info.n_features} features, got {rows.width} "
                f"(model {info.name!r} v{info.version})"
            )

    def _unknown(self, name: str, version: int | None) -> str:
        entry = self.catalogue.get(name)
        if entry is None:
            known = ", ".join(repr(i.name) for i in self.catalogue.latest()) or "none yet"
            return f"unknown model {name!r}; known models: {known} (GET /v2/models)"
        versions = ", ".join(str(v.version) for v in entry.versions)
        return f"model {name!r} has no version {version}; known versions: {versions}"


def _checked(reply: InferReply) -> InferReply:
    """The reply if it is a success, else its error as a `GatewayError`."""
    if reply.error is None:
        return reply
    status = reply.status if reply.status in RELAYED_STATUSES else 503
    retry = 1 if status == 503 else None
    raise GatewayError(status, f"the scorer answered: {reply.error}", retry_after_s=retry)


def _bus_problem(exc: BusError) -> GatewayError:
    if isinstance(exc, RequestTooLargeError):
        return GatewayError(413, str(exc))
    if isinstance(exc, TooManyPendingError):
        return GatewayError(503, str(exc), retry_after_s=1)
    return GatewayError(503, str(exc), retry_after_s=2)
