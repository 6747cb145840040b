"""A real SMTP server on loopback that defers some deliveries (aiosmtpd).

It answers a configurable share of messages with ``451 4.3.0``, a transient
failure that well-behaved senders retry later, so the demo's retries with
backoff are real.
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Delivery:
    """A message the server accepted."""

    sender: str
    recipients: list[str]
    message: Message


@dataclass
class FlakyHandler:
    """aiosmtpd handler: accepts messages, deferring ``failure_rate`` of them."""

    failure_rate: float = 0.15
    seed: int | None = 7
    accepted: list[Delivery] = field(default_factory=list)
    deferred: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self._rng.random() < self.failure_rate:
                self.deferred += 1
                return "451 4.3.0 Mailbox busy, try again later"
            self.accepted.append(
                Delivery(
                    sender=envelope.mail_from,
                    recipients=list(envelope.rcpt_tos),
                    message=message_from_bytes(envelope.content, policy=policy.default),
                )
            )
        return "250 2.0.0 Message accepted for delivery"


class LocalSMTPServer:
    """Start with ``with LocalSMTPServer(failure_rate=0.15) as smtp: ...``.

    Attributes
    ----------
    host, port
        Where it listens (loopback, a free port chosen at start).
    handler
        The :class:`FlakyHandler` with the accepted messages and counts.
    """

    def __init__(self, failure_rate: float = 0.15, seed: int | None = 7) -> None:
        if not 0 <= failure_rate < 1:
            raise ValueError(
                f"failure_rate must be at least 0 and below 1; got {failure_rate!r}."
            )
        self.host = "127.0.0.1"
        self.port = _free_port(self.host)
        self.handler = FlakyHandler(failure_rate=failure_rate, seed=seed)
        self._controller = Controller(self.handler, hostname=self.host, port=self.port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def accepted_count(self) -> int:
        return len(self.handler.accepted)

    def start(self) -> LocalSMTPServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> LocalSMTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
