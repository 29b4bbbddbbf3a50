"""Logging set-up for entry points (libraries only get loggers), with secrets kept out of logs.

Kafka clients log their configuration at DEBUG, SASL password included
(kafka-python's admin client does, librdkafka may). `configure_logging` installs
`RedactSecrets` for the Kafka passwords (``KAFKA_SASL_PASSWORD``,
``KAFKA_SSL_PASSWORD``, or a settings object's own): every log record made from
then on, whichever logger and handler it goes to, has them replaced by ``***``
in its message, its traceback and its stack.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

SECRET_VARIABLES = ("KAFKA_SASL_PASSWORD", "KAFKA_SSL_PASSWORD")
REDACTED = "***"


class HasSecrets(Protocol):
    """Settings that know their own secrets (the bus's `KafkaSettings` does)."""

    def secrets(self) -> list[str]:
        """Every secret value these settings hold."""


class RedactSecrets(logging.Filter):
    """A filter that replaces secret values in a log record (and always lets it through)."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.add(secret)
                forms.add(repr(secret)[1:-1])  # as it shows inside a logged repr()
                forms.add(repr(secret.encode())[2:-1])
        self.secrets = sorted(forms, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; True (the record is kept)."""
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it, the text stays raw
            message = str(record.msg)
        redacted = self.redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class _Redaction:
    """The redaction in force, applied by the log record factory this module installs."""

    active = RedactSecrets(())
    installed = False


def install_redaction(secrets: Iterable[str | None]) -> RedactSecrets:
    """Redact ``secrets`` from every log record made from now on (replacing earlier secrets)."""
    _Redaction.active = RedactSecrets(secrets)
    if not _Redaction.installed:
        _Redaction.installed = True
        make_record = logging.getLogRecordFactory()

        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            _Redaction.active.filter(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
    return _Redaction.active


def secrets_from(
    settings: HasSecrets | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    """The secrets to keep out of logs: the settings' passwords and those in the environment."""
    env = os.environ if env is None else env
    found = [env.get(name, "").strip() for name in SECRET_VARIABLES]
    if settings is not None:
        found += settings.secrets()
    return [secret for secret in found if secret]


def configure_logging(
    service: str, level: str | None = None, *, settings: HasSecrets | None = None
) -> None:
    """Log to stderr with time, service and logger; level from ``STREAMSCORE_LOG_LEVEL``.

    Kafka passwords (from ``settings`` and the environment) are redacted from
    every record.
    """
    install_redaction(secrets_from(settings))
    chosen = (level or os.environ.get("STREAMSCORE_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, chosen, logging.INFO),
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        force=True,
    )
    # kafka-python logs every failed connection attempt as an error; streamscore reports
    # what matters itself, so its own logs are shown only when debugging.
    if chosen != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
