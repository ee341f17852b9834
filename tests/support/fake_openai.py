"""A local server speaking the OpenAI chat-completions wire format, with scripted faults.

The real ``openai`` client talks to it over HTTP, so the provider code under
test is the code that runs against OpenAI, vLLM or Ollama. Each request pops
the next scripted reply (200 with content, an error status with headers and
an OpenAI error body, or a stall longer than the client's timeout); with the
script empty it answers 200 "ok". Every request is recorded with its arrival
time, so tests can check what a re-ask sent and how long a retry waited.

A module (not a conftest) so both the provider tests and the service-level
tests import it (``tests/support/`` is on the import path: pytest ``pythonpath``).
"""

from __future__ import annotations

import json
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

    def __init__(self) -> None:
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.requests: list[ReceivedRequest] = []
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
            return self._script.popleft() if self._script else Reply()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _completion(body: dict[str, Any], content: str) -> dict[str, Any]:
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
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
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
                self._send(200, _completion(body, reply.content), reply.headers)
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
