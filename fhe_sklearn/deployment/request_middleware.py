"""ASGI middleware of the HTTP server: body-size limits enforced while the body streams in
(chunked bodies included) and one structured log line per request.

The log line holds the method, the route *template* (``/predict/{key_id}``, never the concrete
path, which carries a key id), the status, the duration and the body sizes: no header, no
query string, no body.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("fhe_sklearn.server")


class BodyTooLarge(Exception):
    """A request body went past its limit while streaming in (answered with 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the {limit}-byte limit")
        self.limit = limit


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and the record's extra fields."""

    _standard = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in self._standard})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class LimitAndLogMiddleware:
    """Refuse bodies over ``limit_for(path)`` bytes with 413, reading at most one chunk past
    the limit, and log every request.

    A declared ``Content-Length`` over the limit is refused before the body is read; otherwise
    the count runs over the chunks as the application receives them and :class:`BodyTooLarge`
    is raised inside the application (which answers 413). Any answer sent before the whole
    body was read closes the connection, so the rest is never read.
    """

    def __init__(self, app: Any, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit = self.limit_for(scope["path"])
        headers = dict(scope["headers"])
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        state = {"status": 500, "in": 0, "out": 0, "body_read": not has_body}

        async def counting_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["in"] += len(message.get("body", b""))
                if state["in"] > limit:
                    raise BodyTooLarge(limit)
                state["body_read"] = not message.get("more_body", False)
            return message

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                if not state["body_read"]:
                    # answered before the end of the body (refused, unauthorized...): close the
                    # connection rather than let the server read and discard the rest
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            elif message["type"] == "http.response.body":
                state["out"] += len(message.get("body", b""))
            await send(message)

        try:
            refusal = _declared_length_refusal(headers.get(b"content-length"), limit)
            if refusal is not None:
                from starlette.responses import JSONResponse

                status, detail = refusal
                await JSONResponse({"detail": detail}, status_code=status)(scope, receive, counting_send)
            else:
                await self.app(scope, counting_receive, counting_send)
        finally:
            route = scope.get("route")
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": getattr(route, "path", None),
                    "status": state["status"],
                    "duration_ms": round(1000 * (time.perf_counter() - started), 2),
                    "request_bytes": state["in"],
                    "response_bytes": state["out"],
                    "client": (scope.get("client") or [None])[0],
                },
            )


def _declared_length_refusal(declared: bytes | None, limit: int) -> tuple[int, str] | None:
    if declared is None:
        return None
    if not declared.isdigit():
        return 400, "malformed Content-Length header"
    if int(declared) > limit:
        return 413, f"request of {int(declared)} bytes exceeds the {limit}-byte limit"
    return None
