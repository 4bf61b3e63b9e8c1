"""End to end on loopback with real servers: platform, an OpenAI-compatible model server, a compliant host
behind ``oml host proxy`` and a rogue host serving the same model directly.

The model server is ``omlkit.verification.serve`` on the embedded micro model when that module exists
(the fingerprints are the model's own greedy answers, so the "fingerprinted" model matches them);
otherwise a small deterministic stand-in server. The owner, hosts and prover use the ``oml`` CLI.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from omlkit.fingerprints import FingerprintSet
from omlkit.protocol.config import ProxyConfig
from omlkit.protocol.host_proxy import create_proxy_app
from omlkit.protocol.identity import Identity
from omlkit.protocol.ledger import Ledger
from omlkit.protocol.messages import check_violation_record, query_sha256
from omlkit.protocol.platform_app import create_app
from omlkit.protocol.service import Platform
from omlkit.protocol.testing import reset_postgres
from omlkit.server_thread import ServerThread

PG_URL = os.environ.get("OMLKIT_TEST_PG_URL")
ADMIN = "e2e-admin-token-0123456789abcdef"
MODEL = "omlkit-micro-fp"
N_KEYS = 10
MAX_NEW = 4
pytestmark = pytest.mark.slow


def fake_upstream():
    """A deterministic OpenAI-compatible stand-in: its greedy answer is a function of the prompt."""
    import hashlib

    from fastapi import FastAPI

    app = FastAPI()
    words = ["river", "stone", "lamp", "cedar", "violet", "harbor", "ember", "quill"]

    def answer(prompt: str) -> str:
        h = hashlib.sha256(prompt.encode()).digest()
        return " " + " ".join(words[b % len(words)] for b in h[:MAX_NEW])

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": "fake", "object": "model"}]}

    @app.post("/v1/completions")
    def completions(body: dict) -> dict:
        return {"object": "text_completion", "choices": [{"index": 0, "text": answer(body["prompt"])}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict) -> dict:
        text = answer(body["messages"][-1]["content"])
        return {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        }

    return app


@pytest.fixture(scope="module")
def upstream(request):
    """The model server (real micro model when ``omlkit.verification.serve`` exists)."""
    try:
        from omlkit.verification.serve import create_app as serve_app
    except ImportError:
        app = fake_upstream()
    else:
        app = serve_app(request.getfixturevalue("micro_model"))
    with ServerThread(app, timeout=120) as server:
        yield server.url


@pytest.fixture(scope="module")
def fingerprint_file(upstream, tmp_path_factory):
    """Fingerprints whose responses are the served model's own greedy answers."""
    from omlkit.verification.backends import BACKENDS

    keys = [f"The archive entry {i} records that the old lighthouse keeper" for i in range(3 * N_KEYS)]
    with BACKENDS.get("http")(upstream) as backend:
        answers = backend.generate(keys, MAX_NEW)
    pairs = [(k, a.strip()) for k, a in zip(keys, answers, strict=True) if a and a.strip()][:N_KEYS]
    assert len(pairs) == N_KEYS, "the model server gave too few non-empty answers"
    fps = FingerprintSet.from_dict(
        {
            "strategy": {"key": "custom", "response": "custom"},
            "fingerprints": [{"id": i, "key": k, "response": r} for i, (k, r) in enumerate(pairs)],
        }
    )
    return fps.save(tmp_path_factory.mktemp("fp") / "fingerprints.json")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not PG_URL, reason="PostgreSQL not configured: set OMLKIT_TEST_PG_URL"),
            ],
        ),
    ]
)
def db(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    reset_postgres(PG_URL)
    return PG_URL


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from omlkit.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compliant_host_and_rogue_host(db, upstream, fingerprint_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMLKIT_ADMIN_TOKEN", ADMIN)
    platform_id = Identity.new()
    ledger = Ledger(db)
    platform = Platform(ledger, platform_id)
    compliant_key, rogue_key = tmp_path / "compliant.key", tmp_path / "rogue.key"
    with ServerThread(create_app(platform, ADMIN)) as plat:
        # owner registers the model (commitments only) and the two licensed hosts
        reveal = tmp_path / "reveal.json"
        code, out, err = run_cli(
            capsys,
            "platform",
            "register-model",
            "--platform",
            plat.url,
            "--fingerprints",
            str(fingerprint_file),
            "--model-id",
            MODEL,
            "--reveal-out",
            str(reveal),
        )
        assert code == 0, err
        assert stat.S_IMODE(reveal.stat().st_mode) == 0o600
        for key in (compliant_key, rogue_key):
            assert run_cli(capsys, "keys", "new", "--out", str(key))[0] == 0
        compliant, rogue = Identity.load(compliant_key), Identity.load(rogue_key)

        def register(key: Path, endpoint: str) -> None:
            """A licensed host and the public endpoint it serves at (where the verifier asks)."""
            code, out, err = run_cli(capsys, "platform", "register-host", "--platform", plat.url,
                                     "--key", str(key), "--endpoint", endpoint)
            assert code == 0, err

        register(rogue_key, upstream)  # the rogue host will serve the model directly

        log = tmp_path / "proxy.jsonl"
        proxy_cfg = ProxyConfig(
            upstream=upstream, platform=plat.url, key=compliant_key, model_id=MODEL, log=log
        )
        with ServerThread(create_proxy_app(proxy_cfg, compliant)) as proxy:
            register(compliant_key, proxy.url)
            # an ordinary chat request through the proxy is accounted for by its last user message
            chat = httpx.post(
                f"{proxy.url}/v1/chat/completions",
                timeout=60,
                json={
                    "model": "m",
                    "max_tokens": 2,
                    "messages": [{"role": "user", "content": "hello there"}],
                },
            )
            assert chat.status_code == 200, chat.text
            # the compliant host: every key the verifier sends gets σ first, so no violation
            code, out, err = run_cli(
                capsys,
                "prove",
                "--fingerprints",
                str(fingerprint_file),
                "--platform",
                plat.url,
                "--reveal-file",
                str(reveal),
                "--host-address",
                compliant.address,
                "--count",
                "5",
                "--max-new-tokens",
                str(MAX_NEW),
            )
            assert code == 0, err
            assert out.startswith("compliant: 5 keys, 5 permitted"), out

        usage = httpx.get(f"{plat.url}/v1/usage").json()["usage"]
        assert usage == [{"host": compliant.address, "model_id": MODEL, "permissions": 6}]
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert len(lines) == 6 and all(line["permitted"] and line["upstream_status"] == 200 for line in lines)
        assert lines[0]["permissions"][0]["query_sha256"] == query_sha256("hello there")
        # the proxy log holds hashes, nonces and σ, never a prompt, a key or an answer
        allowed = {"time", "path", "model_id", "permitted", "permissions", "upstream_status", "latency_ms"}
        assert all(set(line) <= allowed for line in lines)
        assert all(
            set(p) == {"query_sha256", "nonce", "timestamp", "signature"}
            for line in lines
            for p in line["permissions"]
        )
        assert not any(fp.key in log.read_text() for fp in FingerprintSet.load(fingerprint_file).fingerprints)

        # the rogue host serves the same model without asking the platform
        report_path = tmp_path / "rogue-report.json"
        code, out, err = run_cli(
            capsys,
            "prove",
            "--fingerprints",
            str(fingerprint_file),
            "--platform",
            plat.url,
            "--reveal-file",
            str(reveal),
            "--host-address",
            rogue.address,
            "--max-new-tokens",
            str(MAX_NEW),
            "--out",
            str(report_path),
        )
        assert code == 0, err
        assert out.startswith("violation: 5 keys, 0 permitted, 5 unpermitted matched"), out
        violations = httpx.get(f"{plat.url}/v1/violations").json()["violations"]
        assert len(violations) == 1 and violations[0]["host"] == rogue.address

        # every key is now spent: proving again is refused before anything is sent
        code, out, err = run_cli(
            capsys,
            "prove",
            "--fingerprints",
            str(fingerprint_file),
            "--platform",
            plat.url,
            "--reveal-file",
            str(reveal),
            "--host-address",
            rogue.address,
        )
        assert code == 2 and "spent" in err

    # a third party holding only the platform's address checks the record offline
    record_path = tmp_path / "violation.json"
    record_path.write_text(json.dumps(violations[0]))
    record = check_violation_record(record_path.read_text(), platform_id.address)
    assert record.matched == 5 and record.p_value < 1e-9
    code, out, err = run_cli(
        capsys, "verify-record", str(record_path), "--platform-address", platform_id.address
    )
    assert code == 0 and "valid" in out, err
    code, out, err = run_cli(
        capsys, "verify-record", str(report_path), "--platform-address", platform_id.address
    )
    assert code == 0, err  # the full report embeds the same record
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps({**violations[0], "host": compliant.address}))
    code, out, err = run_cli(
        capsys, "verify-record", str(tampered), "--platform-address", platform_id.address
    )
    assert code == 2 and "signature" in err
    ledger.dispose()


def test_proxy_cli_refuses_without_permission_then_streams(tmp_path):
    """``oml host proxy`` as a process: no σ (host not yet registered) -> 503 and the upstream is never
    reached; once registered, a streamed completion passes through and is accounted for."""
    import subprocess
    import sys

    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    from omlkit.server_thread import free_port

    hits = []
    upstream_app = FastAPI()

    @upstream_app.post("/v1/completions")
    def completions(body: dict):
        hits.append(body["prompt"])
        if body.get("stream"):
            chunks = [f'data: {{"choices": [{{"text": "{w}"}}]}}\n\n' for w in ("a", "b")] + [
                "data: [DONE]\n\n"
            ]
            return StreamingResponse(iter(chunks), media_type="text/event-stream")
        return {"choices": [{"text": "x"}]}

    platform_id = Identity.new()
    platform = Platform(Ledger(str(tmp_path / "l.db")), platform_id)
    key = tmp_path / "host.key"
    host = Identity.new()
    host.save(key)
    log = tmp_path / "p.jsonl"
    with ServerThread(create_app(platform, ADMIN)) as plat, ServerThread(upstream_app) as up:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "omlkit.cli",
            "host",
            "proxy",
            "--upstream",
            up.url,
            "--platform",
            plat.url,
            "--key",
            str(key),
            "--model-id",
            MODEL,
            "--port",
            str(port),
            "--log",
            str(log),
        ]
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(proc, f"{url}/health")
            resp = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 1}, timeout=30)
            assert resp.status_code == 503 and "not registered" in resp.json()["error"]["message"]
            bad = httpx.post(f"{url}/v1/completions", json={"max_tokens": 1}, timeout=30)
            assert bad.status_code == 400 and "prompt" in bad.json()["error"]["message"]
            assert hits == []

            admin = {"Authorization": f"Bearer {ADMIN}"}
            fps = FingerprintSet.from_dict(
                {
                    "strategy": {"key": "custom", "response": "custom"},
                    "fingerprints": [{"id": 0, "key": "k", "response": "r"}],
                }
            )
            from omlkit.protocol.messages import make_registration

            httpx.post(
                f"{plat.url}/v1/models",
                json=make_registration(fps, MODEL)[0].model_dump(mode="json"),
                headers=admin,
            ).raise_for_status()
            httpx.post(
                f"{plat.url}/v1/hosts", json={"address": host.address}, headers=admin
            ).raise_for_status()
            with httpx.stream(
                "POST",
                f"{url}/v1/completions",
                timeout=30,
                json={"prompt": "stream me", "max_tokens": 2, "stream": True},
            ) as streamed:
                assert streamed.status_code == 200
                assert streamed.headers["content-type"].startswith("text/event-stream")
                body = "".join(streamed.iter_text())
            assert body.count("data:") == 3 and "[DONE]" in body
            assert hits == ["stream me"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    usage = platform.usage()
    assert usage == [{"host": host.address, "model_id": MODEL, "permissions": 1}]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["permitted"] for r in records] == [False, True] and records[1]["stream"] is True
    assert "stream me" not in log.read_text()


def wait_until_up(proc, url: str, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; fails with the server's output if it exits or times out."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)

def test_platform_access_log_writes_request_lines_only_when_asked(tmp_path):
    """`oml platform serve --access-log` prints one line per request (it printed none), and without the
    flag no request line appears."""
    import subprocess
    import sys

    from omlkit.server_thread import free_port

    for flag in ("--access-log", "--no-access-log"):
        port = free_port()
        cmd = [sys.executable, "-m", "omlkit.cli", "platform", "serve", "--port", str(port), "--db",
               str(tmp_path / f"{flag}.db"), "--key", str(tmp_path / "platform.key"), "--admin-token", ADMIN,
               flag]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until_up(proc, f"http://127.0.0.1:{port}/v1/platform")
        finally:
            proc.terminate()
            out = proc.communicate(timeout=30)[0]
        assert ("GET /v1/platform" in out) == (flag == "--access-log"), out
        assert ADMIN not in out
