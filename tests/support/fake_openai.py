"""A local server speaking the OpenAI chat-completions wire format, with scripted faults.

The real ``openai`` client talks to it over HTTP, so the provider code under
test is the code that runs against OpenAI, vLLM or Ollama. Each request pops
the next scripted reply (200 with content, an error status with headers and
an OpenAI error body, or a stall longer than the client's timeout); with the
script empty it answers 200 "ok". Every request is recorded with its arrival
time, so tests can check what a re-ask sent and how long a retry waited.

Like a provider, it can also enforce a *quantized* rate limit
(``rate_limit=(2, 1.0)``: at most 2 accepted requests in any 1 s, counted on
a sliding window as providers count small slices of their per-minute limits):
a request over it gets 429 with ``retry-after-ms`` (and ``Retry-After``, whole
seconds) saying when a slot frees, and is not counted as accepted. With
``known_models`` set, any other model gets 404 ``model_not_found``; ``always``
answers every request once the script is empty (for a provider that fails
every call); ``usage`` sets the reported tokens of each answer.

A module (not a conftest) so both the provider tests and the service-level
tests import it (``tests/support/`` is on the import path: pytest ``pythonpath``).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    content: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    error_message: str = ""
    error_code: str | None = None
    stall: float = 0.0


@dataclass(frozen=True)
class ReceivedRequest:
    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, str]]:
        messages: list[dict[str, str]] = self.body["messages"]
        return messages


class FakeOpenAIServer:
    """Scripted OpenAI-compatible endpoint on 127.0.0.1, port chosen by the OS."""

    def __init__(
        self,
        *,
        rate_limit: tuple[int, float] | None = None,
        known_models: frozenset[str] | None = None,
        usage: tuple[int, int] = (3, 1),
    ) -> None:
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.requests: list[ReceivedRequest] = []
        self.rate_limit = rate_limit
        self.known_models = known_models
        self.usage = usage
        self.always: Reply | None = None
        self.accepted: deque[float] = deque()
        self.answered: list[tuple[ReceivedRequest, int]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def reply(self, content: str) -> None:
        self._push(Reply(content=content))

    def fail(
        self,
        status: int,
        message: str = "error",
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._push(
            Reply(status=status, error_message=message, error_code=code, headers=headers or {})
        )

    def stall(self, seconds: float) -> None:
        self._push(Reply(stall=seconds))

    def _push(self, reply: Reply) -> None:
        with self._lock:
            self._script.append(reply)

    def next_reply(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            reply = self._limited(request.at) or self._unknown_model(request)
            if reply is None:
                reply = self._script.popleft() if self._script else (self.always or Reply())
            self.answered.append((request, reply.status))
            return reply

    def _limited(self, now: float) -> Reply | None:
        if self.rate_limit is None:
            return None
        count, window = self.rate_limit
        while self.accepted and self.accepted[0] <= now - window:
            self.accepted.popleft()
        if len(self.accepted) < count:
            self.accepted.append(now)
            return None
        wait = self.accepted[0] + window - now
        headers = {
            "retry-after-ms": str(max(1, round(wait * 1000))),
            "retry-after": str(max(1, math.ceil(wait))),
        }
        return Reply(status=429, error_message="rate limit reached", headers=headers)

    def _unknown_model(self, request: ReceivedRequest) -> Reply | None:
        model = request.body.get("model")
        if self.known_models is None or model in self.known_models:
            return None
        message = f"The model `{model}` does not exist or you do not have access to it."
        return Reply(status=404, error_message=message, error_code="model_not_found")

    def statuses(self) -> list[int]:
        """The status of every answer so far, in arrival order."""
        with self._lock:
            return [status for _, status in self.answered]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _completion(body: dict[str, Any], content: str, usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake-model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
        },
    }


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            received = ReceivedRequest(
                at=time.monotonic(),
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            reply = server.next_reply(received)
            if reply.stall and server.stopping.wait(reply.stall):
                return
            if reply.status == 200:
                self._send(200, _completion(body, reply.content, server.usage), reply.headers)
                return
            error = {"message": reply.error_message, "type": "error", "code": reply.error_code}
            self._send(reply.status, {"error": error}, reply.headers)

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
