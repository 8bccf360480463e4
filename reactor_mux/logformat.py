"""``--log-format json``: one JSON object a line, for log collectors.

Every line has the same keys, whatever it reports: ``time`` (UTC, ISO 8601),
``level``, ``role``, ``event``, ``message``, and ``channel``, ``stream``,
``peer``, ``mapping``, ``reason``, ``address`` (the local address a port took),
``client`` (an authenticated client's name), ``delay`` (seconds until the next
attempt), ``bytes`` (a size the line reports) and ``exception`` (a traceback,
only ever for a bug), null where they do not apply.  ``event`` names what
happened (``channel_up``, ``forward_refused``, ...; ``log`` for a line without
a name), so a collector can count and alert on it without parsing the message,
which is the text format's line and may change.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

FIELDS = ("channel", "stream", "peer", "mapping", "reason", "address", "client", "delay", "bytes")
"""What a line may say about its subject; the same keys on every line."""


def event(name: str, **fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the event's name and what it is about."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"not a log field: {sorted(unknown)}")
    return {"event": name, **fields}


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str, worker: int | None = None) -> None:
        super().__init__()
        self.role = role
        self.worker = worker
        """A server worker's index (``--workers``), in every line it writes."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "role": self.role,
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        for key in FIELDS:
            entry[key] = getattr(record, key, None)
        entry["exception"] = self.formatException(record.exc_info) if record.exc_info else None
        if self.worker is not None:
            entry["worker"] = self.worker
        return json.dumps(entry, ensure_ascii=False, default=str)
