"""A stand-in Ollama server for tests: the documented request/response shapes, on a real socket.

Implements ``GET /api/tags``, ``POST /api/generate`` and ``POST /api/chat`` with ``"stream": false``
(a streaming request is refused with 400, so a client that forgets ``stream`` fails loudly), 404
``{"error": "model 'x' not found"}`` for unknown models, optional ``logprobs`` / ``top_logprobs``
(``[{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]``, as Ollama returns them), and
injectable 503s for retry tests. The "model" is a pair of Python functions chosen by the test:
``generate(prompt) -> [(token, logprob), ...]`` (first = generated) and ``chat(messages, n) -> str``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OllamaStandin:
    def __init__(
        self,
        models: list[str],
        generate: Callable[[str], list[tuple[str, float]]] | None = None,
        chat: Callable[[list[dict]], str] | None = None,
        chat_logprobs: Callable[[list[dict]], list[tuple[str, float]]] | None = None,
        logprobs: bool = True,
        delay: float = 0.0,
    ):
        self.models = models
        self.generate_fn = generate or (lambda prompt: [("yes", -0.1), ("no", -2.4)])
        self.chat_fn = chat or (lambda messages: "[1] > [2]")
        self.chat_logprobs_fn = chat_logprobs
        self.logprobs = logprobs
        self.delay = delay
        self.fail_next = 0  # answer this many requests with 503 first
        self.requests: list[tuple[str, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> OllamaStandin:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _known(self, name: str) -> bool:
        return name in self.models or (":" not in name and f"{name}:latest" in self.models)

    def _logprob_entries(self, tokens: list[tuple[str, float]]) -> list[dict]:
        token, logprob = tokens[0]
        top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tokens]
        return [
            {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": top}
        ]

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests.append((path, body))
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, {"error": "server busy"}
        if path == "/api/tags":
            return 200, {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2025-01-01T00:00:00Z",
                        "size": 1000,
                        "digest": "0" * 64,
                        "details": {"family": "qwen2", "parameter_size": "1M"},
                    }
                    for m in self.models
                ]
            }
        if body.get("stream", True) is not False:
            return 400, {"error": "this stand-in only answers stream: false"}
        model = body.get("model", "")
        if not self._known(model):
            return 404, {"error": f"model '{model}' not found"}
        want_logprobs = bool(body.get("logprobs")) and self.logprobs
        top_n = int(body.get("top_logprobs", 0) or 0)
        common = {"model": model, "created_at": "2025-01-01T00:00:00Z", "done": True}
        common.update({"done_reason": "stop", "total_duration": 1, "load_duration": 0})
        if path == "/api/generate":
            tokens = self.generate_fn(body["prompt"])
            out = {
                **common,
                "response": tokens[0][0],
                "prompt_eval_count": len(body["prompt"].split()),
                "eval_count": 1,
            }
            if want_logprobs:
                out["logprobs"] = self._logprob_entries(tokens[: max(1, top_n)])
            return 200, out
        if path == "/api/chat":
            messages = body["messages"]
            if want_logprobs and self.chat_logprobs_fn is not None:
                tokens = self.chat_logprobs_fn(messages)
                text = tokens[0][0]
            else:
                tokens, text = None, self.chat_fn(messages)
            out = {
                **common,
                "message": {"role": "assistant", "content": text},
                "prompt_eval_count": sum(len(m["content"].split()) for m in messages),
                "eval_count": 1,
            }
            if want_logprobs and tokens is not None:
                out["logprobs"] = self._logprob_entries(tokens[: max(1, top_n)])
            return 200, out
        return 404, {"error": f"unknown path {path}"}

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, body: dict) -> None:
                with standin._lock:
                    standin.in_flight += 1
                    standin.max_in_flight = max(standin.max_in_flight, standin.in_flight)
                try:
                    if standin.delay:
                        time.sleep(standin.delay)
                    status, payload = standin.answer(self.path, body)
                finally:
                    with standin._lock:
                        standin.in_flight -= 1
                self._send(status, payload)

            def do_GET(self) -> None:
                self._handle({})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, {"error": "invalid JSON"})
                    return
                self._handle(body)

        return Handler
