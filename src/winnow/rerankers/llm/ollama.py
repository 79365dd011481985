"""Ollama backend of the LLM rerankers, over its HTTP API with httpx.

Requests are ``/api/generate`` (pointwise: the whole prompt, ``raw`` so the server applies no chat
template, one token, ``logprobs`` with ``top_logprobs``) and ``/api/chat`` (listwise), all with
``"stream": false`` and ``keep_alive`` so the model stays loaded between calls. Connection errors
and 5xx answers are retried with exponential backoff; a missing model (404) or an unreachable
server raises :class:`OllamaError` with what to do about it. Requests run in a thread pool bounded
by ``concurrency`` (Ollama queues what it cannot run in parallel; more in flight only adds latency).
"""

from __future__ import annotations

import logging
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from winnow.errors import ConfigError, WinnowError
from winnow.rerankers.base import PairScores
from winnow.rerankers.options import option

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:11434"
TOP_LOGPROBS = 20


@dataclass(frozen=True)
class OllamaOptions:
    """Options of the LLM kinds that only ``backend="ollama"`` reads."""

    ollama_url: str = option(DEFAULT_URL, "the Ollama server (backend=ollama)")
    timeout: float = option(120.0, "seconds per Ollama request")
    max_retries: int = option(3, "retries on connection errors and 5xx answers")
    backoff: float = option(0.5, "seconds before the first retry (doubling after)")
    concurrency: int = option(4, "Ollama requests in flight")
    keep_alive: int | str = option("10m", "how long Ollama keeps the model loaded")


class OllamaError(WinnowError):
    """The Ollama server is unreachable, lacks the model, or answered something unusable."""


class OllamaModelNotFound(OllamaError):
    """The server does not have the model (``ollama pull`` it first)."""


class OllamaClient:
    """A small synchronous Ollama client: timeouts, bounded retries with backoff, a worker pool."""

    def __init__(
        self,
        model: str,
        url: str = DEFAULT_URL,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 4,
        keep_alive: str | int = "10m",
    ):
        import httpx  # a core dependency

        if max_retries < 0 or concurrency < 1 or timeout <= 0:
            raise ConfigError(
                "Ollama options need max_retries >= 0, concurrency >= 1 and timeout > 0; got "
                f"max_retries={max_retries}, concurrency={concurrency}, timeout={timeout}"
            )
        self.model = model
        self.url = url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.keep_alive = keep_alive
        self._httpx = httpx
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ollama")
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._http.close()

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        httpx = self._httpx
        attempt = 0
        while True:
            self.requests += 1
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                error: str = f"cannot reach the Ollama server at {self.url} ({exc!r})"
                if attempt >= self.max_retries:
                    raise OllamaError(
                        f"{error} after {attempt + 1} attempts; is `ollama serve` running "
                        "and is ollama_url right?"
                    ) from exc
            else:
                if response.status_code == 404:
                    raise OllamaModelNotFound(
                        f"Ollama at {self.url} has no model {self.model!r} "
                        f"({_error_text(response)}); run `ollama pull {self.model}`"
                    )
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise OllamaError(f"Ollama {path} answered non-JSON: {exc}") from exc
                error = f"Ollama {path} answered {response.status_code}: {_error_text(response)}"
                if response.status_code < 500 or attempt >= self.max_retries:
                    raise OllamaError(error)
            attempt += 1
            self.retries += 1
            delay = self.backoff * 2 ** (attempt - 1)
            logger.warning("%s; retry %d/%d in %.1fs", error, attempt, self.max_retries, delay)
            time.sleep(delay)

    def check_model(self) -> None:
        """Fail early and clearly when the server is down or does not have the model."""
        tags = self._request("GET", "/api/tags")
        names = {m.get("name") for m in tags.get("models", [])} | {
            m.get("model") for m in tags.get("models", [])
        }
        wanted = self.model if ":" in self.model else f"{self.model}:latest"
        if self.model not in names and wanted not in names:
            available = ", ".join(sorted(n for n in names if n)) or "none"
            raise OllamaModelNotFound(
                f"Ollama at {self.url} has no model {self.model!r} (available: {available}); "
                f"run `ollama pull {self.model}`"
            )

    def generate(self, prompt: str, **fields: Any) -> dict:
        body = {
            "model": self.model,
            "prompt": prompt,
            "stream": False,
            "keep_alive": self.keep_alive,
            **fields,
        }
        return self._request("POST", "/api/generate", body)

    def chat(self, messages: list[dict], **fields: Any) -> dict:
        body = {
            "model": self.model,
            "messages": messages,
            "stream": False,
            "keep_alive": self.keep_alive,
            **fields,
        }
        return self._request("POST", "/api/chat", body)

    def map(self, fn, items: list) -> list:
        """``fn`` over ``items`` on the worker pool (at most ``concurrency`` at once), in order."""
        if len(items) <= 1:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))


def _error_text(response) -> str:
    try:
        return str(response.json().get("error", response.text))[:300]
    except ValueError:
        return response.text[:300]


def client_from_options(model: str, options: OllamaOptions) -> OllamaClient:
    """The client for ``model`` with a reranker's (typed) Ollama options."""
    return OllamaClient(
        model,
        url=options.ollama_url,
        timeout=float(options.timeout),
        max_retries=options.max_retries,
        backoff=float(options.backoff),
        concurrency=options.concurrency,
        keep_alive=options.keep_alive,
    )


# -- pointwise ---------------------------------------------------------------------------------


def token_logprobs(answer: dict) -> dict[str, float] | None:
    """{token text (stripped, lower-case kept): logprob} of the first generated token, or None.

    Reads Ollama's ``logprobs``: a list (one entry per generated token) of
    ``{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}``.
    """
    entries = answer.get("logprobs")
    if not entries:
        return None
    first = entries[0]
    out: dict[str, float] = {}
    for alt in [first, *(first.get("top_logprobs") or [])]:
        token = str(alt.get("token", "")).strip()
        logprob = alt.get("logprob")
        if token and isinstance(logprob, (int, float)) and token not in out:
            out[token] = float(logprob)
    return out


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def score_from_answer(answer: dict, true_token: str, false_token: str | None) -> float:
    """Score of one pointwise answer: log-odds from logprobs when present, else the text parsed.

    With logprobs, a token missing from the top list gets the lowest listed logprob (an upper bound
    of its real value). Without them the answer text is read: the true token scores 1, the false
    token -1 (0 when neither), a number scores as itself.
    """
    probs = token_logprobs(answer)
    if probs:
        floor = min(probs.values())
        yes = probs.get(true_token, floor)
        if false_token is None:
            return yes
        return yes - probs.get(false_token, floor)
    text = str(answer.get("response") or answer.get("message", {}).get("content", "")).strip()
    number = _NUMBER.match(text)
    if number:
        return float(number.group())
    word = text.split()[0].strip(".,!:;\"'").lower() if text.split() else ""
    if word == true_token.lower():
        return 1.0
    if false_token is not None and word == false_token.lower():
        return -1.0
    return 0.0


def score_pointwise(
    client: OllamaClient, template, pairs: list[tuple[str, str]], max_length: int | None = None
) -> PairScores:
    """One ``/api/generate`` per pair, ``concurrency`` at a time; duplicate prompts sent once.

    ``max_length`` becomes the server's context size (``num_ctx``); Ollama truncates longer prompts
    itself and does not say so, so ``truncated`` is always False here.
    """
    prompts = [template.render(q, d) for q, d in pairs]
    unique = list(dict.fromkeys(prompts))
    options: dict[str, Any] = {"temperature": 0, "num_predict": 1}
    if max_length:
        options["num_ctx"] = int(max_length)

    def ask(prompt: str) -> dict:
        return client.generate(
            prompt,
            raw=True,
            logprobs=True,
            top_logprobs=TOP_LOGPROBS,
            options=options,
        )

    answers = dict(zip(unique, client.map(ask, unique)))
    scores = np.array(
        [score_from_answer(answers[p], template.true_token, template.false_token) for p in prompts],
        dtype=np.float32,
    )
    tokens = np.array([int(answers[p].get("prompt_eval_count") or 0) for p in prompts], np.int32)
    if not np.all(np.isfinite(scores)):
        raise OllamaError("Ollama returned a non-finite logprob")
    return PairScores(scores, np.zeros(len(pairs), dtype=bool), tokens)


# -- listwise ----------------------------------------------------------------------------------


class OllamaListwiseBackend:
    """Listwise backend over ``/api/chat``: generation, and first-token logprobs for FIRST mode."""

    name = "ollama"

    def __init__(self, client: OllamaClient):
        self.client = client

    def generate_batch(self, messages: list[list[dict]], max_new_tokens: int) -> list[str]:
        def ask(m: list[dict]) -> str:
            answer = self.client.chat(m, options={"temperature": 0, "num_predict": max_new_tokens})
            return str(answer.get("message", {}).get("content", ""))

        return self.client.map(ask, messages)

    def first_token_logits(
        self, messages: list[list[dict]], answer_prefix: str, labels: list[list[str]]
    ) -> list[np.ndarray]:
        def ask(m: list[dict]) -> dict:
            prefilled = (
                [*m, {"role": "assistant", "content": answer_prefix}] if answer_prefix else m
            )
            return self.client.chat(
                prefilled,
                logprobs=True,
                top_logprobs=TOP_LOGPROBS,
                options={"temperature": 0, "num_predict": 1},
            )

        out = []
        for answer, labs in zip(self.client.map(ask, messages), labels):
            probs = token_logprobs(answer)
            if probs is None:
                raise OllamaError(
                    "mode='first' needs token logprobs, and this Ollama server returned none; "
                    "upgrade Ollama or use mode='generate'"
                )
            floor = min(probs.values()) - 1.0 if probs else -math.inf
            out.append(np.array([probs.get(lab, floor) for lab in labs], dtype=np.float32))
        return out
