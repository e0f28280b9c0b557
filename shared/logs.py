"""Structured JSON logging with secrets masked at one choke point.

Every record, from our code or a library (grpc, aiohttp, sqlalchemy), passes through
``MaskingFormatter`` before it is written, so a secret cannot reach the log however it got
into a message, an argument or a traceback. Masked are: every value registered with
``register_secret`` (the Binance key and secret, the admin and service tokens), anything that
looks like one of our API keys (``tk_...``), bearer tokens, Binance signatures, and the values
of fields named like secrets (``api_key=...``, ``"secret": "..."``).

Every line written inside a trace carries its ``trace_id`` and ``span_id`` (OpenTelemetry's current
span), also when spans are not exported: the ids still travel with each call (``shared.tracing``),
so one request's lines can be found in every service's log by its trace id.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
from typing import Any

from opentelemetry import trace

MASK = "***"

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None

# Generic shapes of secrets that were never registered (user API keys, headers, query strings).
_GENERIC = [
    # Our user API keys: tk_<key id>_<secret>
    (re.compile(r"\btk_[A-Za-z0-9]+_[A-Za-z0-9_-]{16,}"), "tk_" + MASK),
    # authorization: Bearer <token>
    (re.compile(r"(?i)(bearer\s+)[^\s'\",;)]+"), r"\1" + MASK),
    # A request's signature: hex (HMAC) or base64, URL-encoded or not (Ed25519, RSA), in a query
    # string or a WebSocket API request's JSON parameters
    (re.compile(r"(?i)(signature=)[A-Za-z0-9+/=%_-]{16,}"), r"\1" + MASK),
    (re.compile(r"(?i)(['\"]signature['\"]\s*:\s*['\"])[A-Za-z0-9+/=%_-]{16,}"), r"\1" + MASK),
    # key: value or key=value pairs whose key names a secret
    (
        re.compile(
            r"(?i)((?:api[_-]?key|apikey|api[_-]?secret|secret(?:[_-]?key)?|password|token|x-mbx-apikey|authorization)"
            r"['\"]?\s*[:=]\s*['\"]?)([^\s'\",&;)}\]]{4,})"
        ),
        r"\1" + MASK,
    ),
]


def register_secret(value: str | None) -> None:
    """Mask every future occurrence of ``value`` in the log (values shorter than 6 characters are ignored)."""
    global _secret_pattern
    if not value or len(value) < 6:
        return
    with _secrets_lock:
        _secrets.add(value)
        alternatives = sorted(_secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in alternatives))


def mask(text: str) -> str:
    """Return ``text`` with every known and recognisable secret replaced by ``***``."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for regex, replacement in _GENERIC:
        text = regex.sub(replacement, text)
    return text


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class MaskingFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, request id, extra fields."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = f"{span_context.trace_id:032x}"
            entry["span_id"] = f"{span_context.span_id:016x}"
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return mask(json.dumps(entry, default=str, ensure_ascii=False))


def setup_logging(service: str, level: str = "INFO") -> None:
    """Send all logging (ours and libraries') as masked JSON lines to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would duplicate ours and print URLs with signatures; keep it quiet.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


security_log = logging.getLogger("security")
"""Logger for security events (failed authentication, permission denied, bans); never log the secret itself."""
