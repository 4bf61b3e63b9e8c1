"""Any OpenAI-compatible endpoint over HTTP (completions and chat completions, temperature 0).

Requests run concurrently (at most ``concurrency`` in flight), spaced by an optional rate limit, each
with a timeout. Timeouts, connection failures, 429/5xx answers and malformed JSON are retried with
exponential back-off; what still fails is reported for that prompt alone and never aborts the batch.
String prompts go to ``/completions``, message lists to ``/chat/completions``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlparse

import httpx
from anyio.from_thread import start_blocking_portal
from pydantic import Field
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from omlkit.errors import ConfigError
from omlkit.options import Options
from omlkit.verification.backends.base import BACKENDS, Answer, Backend, Prompt

MAX_TOP_LOGPROBS = 20


class _Malformed(Exception):
    """The server answered 2xx with something that is not the expected JSON."""


class _Failure(Exception):
    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


def base_url(endpoint: str) -> str:
    """The API root of ``endpoint`` (``http://h:p``, ``.../v1`` or a ``.../completions`` URL) -> ``.../v1``.

    Refuses (ConfigError) anything that is not an http(s) URL with a host.
    """
    parsed = urlparse(endpoint.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"--endpoint: expected an http(s) URL such as http://127.0.0.1:8000/v1 (got {endpoint!r})"
        )
    url = endpoint.strip().rstrip("/")
    for tail in ("/chat/completions", "/completions"):
        if url.endswith(tail):
            url = url[: -len(tail)]
            break
    return url if url.endswith("/v1") else url + "/v1"


def run_sync(coro_factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to completion from sync code, also when called inside a running event loop
    (anyio's blocking portal runs it on an event loop of its own thread)."""
    with start_blocking_portal() as portal:
        return portal.call(coro_factory)


class _RateLimiter:
    """Spaces request starts at least ``1 / rate`` seconds apart (no limit when rate is None)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


def _parse_text(data: Any, chat: bool) -> str:
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise _Malformed("no choices[0] text in the response") from None
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise _Malformed("the response text is not a string")
    return text


def _parse_top(data: Any, chat: bool) -> list[str]:
    try:
        lp = data["choices"][0]["logprobs"]
        if chat:
            entries = lp["content"][0]["top_logprobs"]
            pairs = [(e["token"], float(e["logprob"])) for e in entries]
        else:
            pairs = [(tok, float(v)) for tok, v in lp["top_logprobs"][0].items()]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise _Malformed("no first-token top_logprobs in the response") from None
    return [tok for tok, _ in sorted(pairs, key=lambda p: -p[1])]


class EndpointOptions(Options):
    """How to reach and pace an OpenAI-compatible endpoint."""

    api_key: str | None = Field(None, description="Bearer token for --endpoint (default: $OMLKIT_API_KEY).")
    served_model: str | None = Field(
        None, description="Model name sent to --endpoint (default: the first id of its /v1/models)."
    )
    concurrency: int = Field(8, ge=1, description="Endpoint: requests in flight at once.")
    timeout: float = Field(30.0, gt=0.0, description="Endpoint: seconds per request before it is retried.")
    retries: int = Field(3, ge=0, description="Endpoint: retries of a timed-out, 5xx or malformed answer.")
    rate_limit: float | None = Field(
        None, gt=0.0, description="Endpoint: at most this many requests per second."
    )


@BACKENDS.register("http")
class HttpBackend(Backend):
    """An OpenAI-compatible server at ``endpoint`` (see :func:`base_url`), queried at temperature 0."""

    options_cls = EndpointOptions

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        concurrency: int = 8,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        rate_limit: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1 (got {concurrency})")
        if timeout <= 0:
            raise ConfigError(f"--timeout must be > 0 seconds (got {timeout})")
        if retries < 0:
            raise ConfigError(f"--retries must be >= 0 (got {retries})")
        if rate_limit is not None and rate_limit <= 0:
            raise ConfigError(f"--rate-limit must be > 0 requests per second (got {rate_limit})")
        self.url = base_url(endpoint)
        self._api_key = api_key
        self.model = model
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.rate_limit = rate_limit
        self.attempts = 0  # requests sent, retries included (for tests and benchmarks)

    @classmethod
    def from_config(cls, cfg: Any, options: EndpointOptions) -> HttpBackend:
        """From ``oml verify``'s --endpoint, --api-key (else $OMLKIT_API_KEY), --served-model, limits."""
        return cls(
            cfg.endpoint,
            api_key=options.api_key or os.environ.get("OMLKIT_API_KEY") or None,
            model=options.served_model,
            concurrency=options.concurrency,
            timeout=options.timeout,
            retries=options.retries,
            rate_limit=options.rate_limit,
        )

    def __repr__(self) -> str:  # never show the API key
        return f"HttpBackend({self.url!r}, concurrency={self.concurrency})"

    def describe(self) -> dict[str, Any]:
        """Backend name, API root, model name and request settings (never the API key)."""
        return {
            "backend": "http",
            "endpoint": self.url,
            "model": self.model,
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "retries": self.retries,
            "rate_limit": self.rate_limit,
        }

    # -- requests ---------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=self.timeout, limits=limits)

    async def _model_name(self, client: httpx.AsyncClient) -> str:
        """The ``model`` field to send: as given, else the first id from ``/models``, else "default"."""
        if self.model is None:
            try:
                resp = await client.get("/models")
                resp.raise_for_status()
                self.model = str(resp.json()["data"][0]["id"])
            except (httpx.HTTPError, json.JSONDecodeError, KeyError, IndexError, TypeError):
                return "default"
        return self.model

    async def _post_once(self, client: httpx.AsyncClient, path: str, payload: dict, parse: Callable) -> Any:
        self.attempts += 1
        try:
            resp = await client.post(path, json=payload)
        except httpx.TimeoutException:
            raise _Failure(f"timeout after {self.timeout:g}s", retry=True) from None
        except httpx.TransportError as exc:
            raise _Failure(f"unreachable ({type(exc).__name__})", retry=True) from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Failure(f"HTTP {resp.status_code}", retry=True)
        if resp.status_code >= 400:
            raise _Failure(f"HTTP {resp.status_code} {resp.reason_phrase}".strip(), retry=False)
        try:
            return parse(resp.json())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Failure("malformed JSON", retry=True) from None
        except _Malformed as exc:
            raise _Failure(f"malformed response: {exc}", retry=True) from None

    async def _post(
        self, client, sem, limiter, path: str, payload: dict, parse: Callable
    ) -> tuple[Any, str | None]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.backoff, max=self.max_backoff),
            retry=retry_if_exception(lambda exc: isinstance(exc, _Failure) and exc.retry),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await limiter.wait()
                    async with sem:
                        return await self._post_once(client, path, payload, parse), None
        except _Failure as exc:
            if not exc.retry:
                return None, exc.reason
            return None, f"{exc.reason} (after {self.retries + 1} attempts)"
        return None, "not attempted"

    async def _all(
        self, prompts: Sequence[Prompt], make: Callable[[Prompt, str], tuple[str, dict, Callable]]
    ):
        sem = asyncio.Semaphore(self.concurrency)
        limiter = _RateLimiter(self.rate_limit)
        async with self._client() as client:
            model = await self._model_name(client)
            jobs = [self._post(client, sem, limiter, *make(p, model)) for p in prompts]
            return await asyncio.gather(*jobs)

    # -- public API -------------------------------------------------------------------------------

    def answer(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Answer]:
        """Greedy continuation of each prompt, with the failure reason of each prompt that got none."""

        def make(prompt: Prompt, model: str) -> tuple[str, dict, Callable]:
            body: dict[str, Any] = {"model": model, "max_tokens": max_new_tokens, "temperature": 0}
            if isinstance(prompt, str):
                return "/completions", {**body, "prompt": prompt}, lambda d: _parse_text(d, chat=False)
            return "/chat/completions", {**body, "messages": prompt}, lambda d: _parse_text(d, chat=True)

        results = run_sync(lambda: self._all(prompts, make))
        return [Answer(text, err) for text, err in results]

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str | None]:
        """Greedy continuation of each prompt; None where it still failed after the retries."""
        return [a.text for a in self.answer(prompts, max_new_tokens)]

    def top_first_tokens(self, prompts: Sequence[Prompt], k: int) -> list[list[str] | None]:
        """Top-``k`` first tokens from the server's logprobs (k <= 20); None where the request failed."""
        if not 1 <= k <= MAX_TOP_LOGPROBS:
            raise ConfigError(f"rank k must be between 1 and {MAX_TOP_LOGPROBS} for an endpoint (got {k})")

        def make(prompt: Prompt, model: str) -> tuple[str, dict, Callable]:
            body: dict[str, Any] = {"model": model, "max_tokens": 1, "temperature": 0}
            if isinstance(prompt, str):
                return (
                    "/completions",
                    {**body, "prompt": prompt, "logprobs": k},
                    lambda d: _parse_top(d, chat=False),
                )
            return (
                "/chat/completions",
                {**body, "messages": prompt, "logprobs": True, "top_logprobs": k},
                lambda d: _parse_top(d, chat=True),
            )

        return [top for top, _ in run_sync(lambda: self._all(prompts, make))]
