"""A small OpenAI-protocol chat-completions server on 127.0.0.1 for tests and benchmarks.

Usage::

    with OpenAITestServer(reply=lambda body: "hi", latency_s=0.05) as srv:
        client = LLMClient(LLMConfig(base_url=srv.base_url, model="m", cache_dir=tmp))
        srv.script(429, "timeout", 500)   # the next three requests fail like that, then normal replies

- ``reply(body) -> str | dict``: the assistant content for a request body (the parsed JSON), or a dict of message
  fields (``{"content": ..., "reasoning_content": ...}``, as a server with a reasoning parser sends); default
  echoes the last user message. If it raises, the server answers HTTP 500.
- ``latency_s``: fixed delay before every normal reply (requests are served concurrently, one thread each).
- ``script(*actions)``: queue actions consumed one per request, in arrival order: an int HTTP status
  (answered with an OpenAI-style error body), ``"timeout"`` (sleep ``hang_s`` and then drop the connection
  without answering), or ``"garbage"`` (HTTP 200 whose body is not JSON).
- Counters: ``requests`` (chat-completion requests received), ``max_in_flight``, ``bodies`` (every parsed body),
  ``received`` (of every POST, chat completion or not: the request target, path and query as sent, and the
  ``Authorization`` header or None).
- ``start()`` / ``stop()`` (or a ``with`` block) bind a free port; ``base_url`` ends with ``/v1``.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Reply = Callable[[dict[str, Any]], "str | dict[str, Any]"]


def echo_reply(body: dict[str, Any]) -> str:
    """Default reply: the content of the last message."""
    return str(body["messages"][-1]["content"])


class OpenAITestServer:
    def __init__(self, reply: Reply = echo_reply, latency_s: float = 0.0, hang_s: float = 2.0):
        self.reply = reply
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict[str, Any]] = []
        self.received: list[tuple[str, str | None]] = []
        self._actions: collections.deque[int | str] = collections.deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *actions: int | str) -> None:
        """Queue failure actions for the next requests (see module docstring)."""
        for action in actions:
            if not (isinstance(action, int) or action in ("timeout", "garbage")):
                raise ValueError(f"unknown action {action!r}")
        with self._lock:
            self._actions.extend(actions)

    def reset_counters(self) -> None:
        with self._lock:
            self.requests = 0
            self.max_in_flight = 0
            self.bodies.clear()
            self.received.clear()

    def start(self) -> "OpenAITestServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def log_message(self, *args: Any) -> None:
                return

            def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": []}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.received.append((self.path, self.headers.get("Authorization")))
                if not self.path.partition("?")[0].rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                with server._lock:
                    server.requests += 1
                    server.bodies.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    action = server._actions.popleft() if server._actions else None
                try:
                    self._handle(body, action)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _handle(self, body: dict[str, Any], action: int | str | None) -> None:
                if action == "timeout":
                    time.sleep(server.hang_s)
                    self.close_connection = True
                    return
                if isinstance(action, int):
                    err = {"error": {"message": f"scripted status {action}", "type": "test", "code": action}}
                    self._send(action, json.dumps(err).encode())
                    return
                if action == "garbage":
                    self._send(200, b"<html>not json</html>", "text/html")
                    return
                if server.latency_s:
                    time.sleep(server.latency_s)
                try:
                    content = server.reply(body)
                except Exception as err:  # the reply function's failure becomes an HTTP 500
                    self._send(500, json.dumps({"error": {"message": repr(err)}}).encode())
                    return
                fields = content if isinstance(content, dict) else {"content": content}
                payload = {
                    "id": f"chatcmpl-{server.requests}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", ""),
                    "choices": [{"index": 0, "message": {"role": "assistant", **fields}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                self._send(200, json.dumps(payload).encode())

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog of 5 drops connections under 16+ concurrent clients

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="openai-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "OpenAITestServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
