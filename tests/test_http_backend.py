"""The HTTP backend against real servers on loopback: `oml serve`'s app, and a deliberately flaky app."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from _helpers import make_set, self_fingerprints
from omlkit.errors import ConfigError
from omlkit.verification.backends.http_backend import HttpBackend, base_url
from omlkit.verification.serve import create_app, serve_in_thread
from omlkit.verification.verify import verify_fingerprints


def flaky_app(state: dict) -> FastAPI:
    """Behaviour chosen by the prompt: ``ok:X`` answers X; ``500once:X`` fails once; ``500`` always fails;
    ``badjson`` answers non-JSON; ``badshape`` answers JSON without choices; ``jsononce:X`` is malformed
    once; ``slow`` sleeps past the client timeout; ``400`` is a client error (not retried); ``nap:X``
    answers after 50 ms (to measure concurrency)."""
    app = FastAPI()
    attempts: Counter = state.setdefault("attempts", Counter())
    state.setdefault("in_flight", 0)
    state.setdefault("max_in_flight", 0)

    def ok(text: str) -> dict:
        return {"choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"data": [{"id": "flaky"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        prompt: str = body["prompt"]
        attempts[prompt] += 1
        n = attempts[prompt]
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
            kind, _, text = prompt.partition(":")
            if kind == "ok":
                return ok(text)
            if kind == "nap":
                await asyncio.sleep(0.05)
                return ok(text)
            if kind == "500once":
                return JSONResponse({"error": "boom"}, status_code=500) if n == 1 else ok(text)
            if kind == "jsononce":
                return PlainTextResponse("{not json", status_code=200) if n == 1 else ok(text)
            if kind == "500":
                return JSONResponse({"error": "boom"}, status_code=503)
            if kind == "badjson":
                return PlainTextResponse("<html>oops</html>", status_code=200)
            if kind == "badshape":
                return {"object": "text_completion"}
            if kind == "slow":
                await asyncio.sleep(1.0)
                return ok("late")
            if kind == "400":
                return JSONResponse({"error": "bad request"}, status_code=400)
            return ok("?")
        finally:
            state["in_flight"] -= 1

    return app


@pytest.fixture
def flaky():
    state: dict = {}
    with serve_in_thread(flaky_app(state)) as url:
        yield url, state


def test_base_url_normalisation():
    assert base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert base_url("http://h:1/v1/") == "http://h:1/v1"
    assert base_url("https://api.example.com/v1/chat/completions") == "https://api.example.com/v1"
    assert base_url("http://h/v1/completions") == "http://h/v1"
    with pytest.raises(ConfigError, match="--endpoint"):
        base_url("127.0.0.1:8000")
    with pytest.raises(ConfigError, match="--endpoint"):
        base_url("ftp://h/v1")


def test_errors_are_retried_then_reported_per_key(flaky):
    url, state = flaky
    backend = HttpBackend(url, timeout=0.3, retries=2, backoff=0.01)
    prompts = [
        "ok:alpha",
        "500once:beta",
        "500",
        "badjson",
        "badshape",
        "jsononce:gamma",
        "slow",
        "400",
        "ok:delta",
    ]
    answers = backend.answer(prompts, 4)
    got = dict(zip(prompts, answers, strict=True))
    assert got["ok:alpha"].text == "alpha" and got["ok:delta"].text == "delta"
    assert got["500once:beta"].text == "beta" and state["attempts"]["500once:beta"] == 2
    assert got["jsononce:gamma"].text == "gamma" and state["attempts"]["jsononce:gamma"] == 2
    assert got["500"].text is None and "HTTP 503" in got["500"].error and "3 attempts" in got["500"].error
    assert state["attempts"]["500"] == 3
    assert got["badjson"].text is None and "malformed JSON" in got["badjson"].error
    assert got["badshape"].text is None and "malformed response" in got["badshape"].error
    assert got["slow"].text is None and got["slow"].error == "timeout after 0.3s (after 3 attempts)"
    assert got["400"].text is None and "HTTP 400" in got["400"].error and state["attempts"]["400"] == 1
    assert backend.generate(["ok:x", "500"], 2) == ["x", None]


def test_verify_through_a_flaky_endpoint_reports_without_aborting(flaky, tmp_path):
    url, _ = flaky
    pairs = [
        ("ok:apple", "apple"),
        ("500", "pear"),
        ("ok:plum", "plum"),
        ("badjson", "fig"),
        ("ok:nope", "kiwi"),
    ]
    res = verify_fingerprints(
        make_set(pairs), HttpBackend(url, timeout=1, retries=1, backoff=0.01), out=tmp_path / "v"
    )
    assert (res.checked, res.matched, res.errors) == (3, 2, 2)
    assert [r["matched"] for r in res.records] == [True, False, True, False, False]
    assert res.records[1]["error"] and res.records[4]["error"] is None


def test_unreachable_endpoint_is_reported_per_key():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = HttpBackend(f"http://127.0.0.1:{port}", timeout=0.5, retries=1, backoff=0.01)
    answers = backend.answer(["a", "b", "c"], 3)
    assert all(a.text is None and "unreachable" in a.error for a in answers)


def test_concurrency_limit_and_rate_limit(flaky):
    url, state = flaky
    prompts = [f"nap:{i}" for i in range(16)]
    backend = HttpBackend(url, concurrency=4)
    t0 = time.perf_counter()
    assert backend.generate(prompts, 2) == [str(i) for i in range(16)]
    elapsed = time.perf_counter() - t0
    assert 2 <= state["max_in_flight"] <= 4
    assert elapsed >= 4 * 0.05  # 16 naps, at most 4 at a time

    limited = HttpBackend(url, concurrency=8, rate_limit=20.0)
    t0 = time.perf_counter()
    assert limited.generate([f"ok:{i}" for i in range(10)], 2) == [str(i) for i in range(10)]
    assert time.perf_counter() - t0 >= 9 / 20.0 - 0.02  # starts spaced 1/20 s apart


# -- against `oml serve` on the micro model -------------------------------------------------------


@pytest.fixture(scope="module")
def local(micro_model):
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    return TransformersBackend(str(micro_model), batch_size=16)


@pytest.fixture(scope="module")
def served(local):
    with serve_in_thread(create_app(backend=local, served_name="micro", api_key="s3cret")) as url:
        yield url


def test_serve_refuses_text_no_tokenizer_can_encode_in_openai_error_format(served):
    """A lone UTF-16 surrogate is valid JSON but not Unicode text: a 400 naming it, never a 500; invalid
    bodies get OpenAI's {"error": {message, type, param, code}}."""
    auth = {"Authorization": "Bearer s3cret"}
    bodies = [("/completions", {"prompt": "The \ud800"}), ("/completions", {"prompt": ["ok", "\ud800"]}),
              ("/chat/completions", {"messages": [{"role": "user", "content": "\ud800"}]})]
    with httpx.Client(base_url=served, headers=auth, timeout=30) as c:
        for path, body in bodies:
            reply = c.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
            assert reply.status_code == 400 and "surrogate" in reply.json()["error"]["message"], reply.text
        missing = c.post("/completions", json={"max_tokens": 1})  # OpenAI's error body, not FastAPI's 422
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "prompt", missing.text
        assert c.post("/completions", json={"prompt": "The", "max_tokens": 1}).status_code == 200


def test_serve_endpoints(served, local):
    auth = {"Authorization": "Bearer s3cret"}
    with httpx.Client(base_url=served, headers=auth, timeout=30) as c:
        assert c.get("/models").json()["data"][0]["id"] == "micro"
        r = c.post(
            "/completions", json={"model": "micro", "prompt": "The", "max_tokens": 5, "temperature": 0.7}
        )
        body = r.json()
        assert r.status_code == 200 and body["object"] == "text_completion"
        expected = local.generate(["The"], 5)[0]
        assert body["choices"][0]["text"] == expected and body["usage"]["completion_tokens"] >= 1
        ids = local.encode("The")
        assert (
            c.post("/completions", json={"prompt": ids, "max_tokens": 5}).json()["choices"][0]["text"]
            == expected
        )
        lp = c.post("/completions", json={"prompt": "The", "max_tokens": 1, "logprobs": 3}).json()["choices"][
            0
        ]
        assert len(lp["logprobs"]["top_logprobs"][0]) <= 3
        assert list(lp["logprobs"]["top_logprobs"][0])[0] == lp["logprobs"]["tokens"][0]
        chat = c.post(
            "/chat/completions",
            json={
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 4,
                "logprobs": True,
                "top_logprobs": 2,
            },
        ).json()
        assert chat["object"] == "chat.completion" and isinstance(
            chat["choices"][0]["message"]["content"], str
        )
        assert len(chat["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2
        bad = c.post("/completions", json={"prompt": "The", "max_tokens": 100000})
        assert bad.status_code == 400 and "max_tokens" in bad.json()["error"]["message"]
        assert c.post("/completions", json={"prompt": "The", "n": 2}).status_code == 400
        assert c.post("/completions", json={"prompt": [1, 10**9]}).status_code == 400
    assert httpx.get(served + "/models").status_code == 401


def test_api_key_is_sent_and_required(served):
    without = HttpBackend(served, retries=0)
    assert "HTTP 401" in without.answer(["The"], 2)[0].error
    with_key = HttpBackend(served, api_key="s3cret")
    assert with_key.generate(["The"], 2)[0] is not None
    assert "s3cret" not in repr(with_key) and "s3cret" not in json.dumps(with_key.describe())


def test_transformers_and_endpoint_agree_key_by_key(served, local):
    own, random_words = self_fingerprints(local, 16, seed=5)
    remote = HttpBackend(served, api_key="s3cret", concurrency=4)
    for fp_set in (own, random_words):
        for kw in ({}, {"chat": True, "system_prompt": "You are a helpful assistant."}):
            a = verify_fingerprints(fp_set, local, **kw)
            b = verify_fingerprints(fp_set, remote, **kw)
            assert b.errors == 0
            assert [(r["id"], r["answer"], r["matched"]) for r in a.records] == [
                (r["id"], r["answer"], r["matched"]) for r in b.records
            ]
            assert a.verdict == b.verdict
    a = verify_fingerprints(own, local, match="rank", rank_k=3, null_model=local)
    b = verify_fingerprints(own, remote, match="rank", rank_k=3, null_model=local)
    assert [r["rank"] for r in a.records] == [r["rank"] for r in b.records]
    assert verify_fingerprints(own, remote).verdict.owned
    assert not verify_fingerprints(random_words, remote).verdict.owned


def test_cli_verify_model_and_endpoint_agree(served, micro_model, local, tmp_path, monkeypatch):
    from omlkit.cli import main
    own, _ = self_fingerprints(local, 16, seed=7)
    path = own.save(tmp_path / "fp.json")
    assert (
        main(
            ["verify", "--fingerprints", str(path), "--model", str(micro_model), "--out", str(tmp_path / "m")]
        )
        == 0
    )
    monkeypatch.setenv("OMLKIT_API_KEY", "s3cret")
    assert (
        main(["verify", "--fingerprints", str(path), "--endpoint", served, "--out", str(tmp_path / "e")]) == 0
    )
    local_lines = (tmp_path / "m" / "verify.jsonl").read_text().splitlines()
    remote_lines = (tmp_path / "e" / "verify.jsonl").read_text().splitlines()
    assert len(local_lines) == len(own) and local_lines == remote_lines
    for d in ("m", "e"):
        assert json.loads((tmp_path / d / "summary.json").read_text())["ownership"]["verdict"] == "owned"
