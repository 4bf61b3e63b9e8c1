"""OML 1.0 protocol units: signatures, key files, commitments, and every refusal of the platform.

Each refusal is checked twice: the error is the right one with a clear message, and the ledger holds
exactly what it held before. Ledger tests run on SQLite and, when ``OMLKIT_TEST_PG_URL`` is set, on
PostgreSQL.
"""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from omlkit.errors import ProtocolError
from omlkit.fingerprints import FingerprintSet
from omlkit.io import sha256_bytes
from omlkit.protocol.identity import Identity, recover_signer, verify_signature
from omlkit.protocol.ledger import (
    Base,
    CommitmentRow,
    HostRow,
    Ledger,
    ModelRow,
    PermissionRow,
    ReportRow,
    ViolationRow,
)
from omlkit.protocol.messages import (
    PermissionRequest,
    Proof,
    ProofSubmission,
    RegisterHost,
    RevealFile,
    VerificationReport,
    check_violation_record,
    commitment_of,
    make_registration,
    query_sha256,
)
from omlkit.protocol.platform_app import create_app
from omlkit.protocol.refusals import BadCommitment, BadSignature, Replay, Spent, Stale, Unregistered
from omlkit.protocol.service import Platform
from omlkit.protocol.testing import reset_postgres

PG_URL = os.environ.get("OMLKIT_TEST_PG_URL")
ADMIN = "admin-token-for-tests-0123456789"
MODEL = "acme/model-1"
DB_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="PostgreSQL not configured: set OMLKIT_TEST_PG_URL to run"),
        ],
    ),
]


def make_fingerprints(n: int = 6) -> FingerprintSet:
    """A small set of secret pairs (custom strategy: null rate = the 1e-3 floor)."""
    return FingerprintSet.from_dict(
        {
            "strategy": {"key": "custom", "response": "custom"},
            "fingerprints": [
                {"id": i, "key": f"secret key number {i} about tulips", "response": f"answer{i}"}
                for i in range(n)
            ],
        }
    )


@pytest.fixture(params=DB_PARAMS)
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
def ledger(db_url):
    led = Ledger(db_url)
    yield led
    led.dispose()


def counts(ledger: Ledger) -> dict[str, int]:
    """Rows in every table, plus how many commitments are spent."""
    with ledger.read() as s:
        out = {
            row.__tablename__: s.scalar(select(func.count()).select_from(row))
            for row in (ModelRow, CommitmentRow, HostRow, PermissionRow, ReportRow, ViolationRow)
        }
        out["spent"] = s.scalar(
            select(func.count()).select_from(CommitmentRow).where(CommitmentRow.spent_at.is_not(None))
        )
    return out


HOST_ENDPOINT = "http://host.example:8800/v1"


class HostUnderTest:
    """The host's endpoint as the platform's verifier reaches it: answers each key as the fingerprinted
    model does (the response, then more text) unless ``answers`` says otherwise; a ``compliant`` host
    first obtains σ for every query, as ``oml host proxy`` does. Records every request it got."""

    def __init__(self, world: World) -> None:
        self.world, self.answers, self.compliant, self.asked = world, {}, False, []

    def __call__(self, host, prompts, max_new_tokens: int) -> list:
        self.asked.append((host.address, host.endpoint, len(prompts), max_new_tokens))
        out = []
        for prompt in prompts:
            key = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            fp = next(f for f in self.world.fps.fingerprints if f.key == key)
            if self.compliant:
                permit = self.world.permit(PermissionRequest.create(self.world.host, MODEL, key))
                assert permit.status_code == 200
            out.append(self.answers.get(fp.id, fp.response + " and more"))
        return out


class World:
    """A platform with one registered model and one registered host, reachable in-process over HTTP; the
    verifier asks :class:`HostUnderTest` (``world.served``), a rogue host until told otherwise."""

    def __init__(self, ledger: Ledger, time_window_s: float = 60.0) -> None:
        self.ledger = ledger
        self.platform_id = Identity.new()
        self.served = HostUnderTest(self)
        self.platform = Platform(ledger, self.platform_id, time_window_s=time_window_s, observe=self.served)
        self.http = TestClient(create_app(self.platform, ADMIN, max_body_bytes=64 * 1024))
        self.admin = {"Authorization": f"Bearer {ADMIN}"}
        self.host = Identity.new()
        self.fps = make_fingerprints()
        request, self.reveal = make_registration(self.fps, MODEL)
        assert (
            self.http.post("/v1/models", json=request.model_dump(mode="json"), headers=self.admin).status_code
            == 201
        )
        assert (
            self.http.post("/v1/hosts", json={"address": self.host.address, "endpoint": HOST_ENDPOINT},
                           headers=self.admin).status_code
            == 201
        )

    def permit(self, request: PermissionRequest):
        return self.http.post("/v1/permissions", json=request.model_dump(mode="json"))

    def proofs(self, ids, claims=None, host=None, tamper=None) -> dict:
        """A submission revealing ``ids``; ``claims`` are answers a prover says it got (ignored)."""
        proofs = []
        for fp in self.fps.fingerprints:
            if fp.id in ids:
                proofs.append(
                    Proof(
                        fingerprint_id=fp.id,
                        answer=(claims or {}).get(fp.id),
                        key=fp.key,
                        response=(tamper or {}).get(fp.id, fp.response),
                        salt=self.reveal.salts[fp.id],
                    )
                )
        sub = ProofSubmission(host=host or self.host.address, model_id=MODEL, proofs=proofs)
        return sub.model_dump(mode="json")


@pytest.fixture
def world(ledger) -> World:
    return World(ledger)


def refused(response, status: int, reason: str, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason"] == reason
    assert words in body["error"]
    assert "\n" not in body["error"]


# -- identities and signatures ----------------------------------------------------------------------


def test_signature_roundtrip_and_tampering():
    ident = Identity.new()
    msg = {"kind": "test", "n": 1, "text": "héllo"}
    sig = ident.sign(msg)
    assert recover_signer(msg, sig) == ident.address
    assert verify_signature(
        dict(reversed(list(msg.items()))), sig, ident.address
    )  # canonical: key order free
    assert not verify_signature({**msg, "n": 2}, sig, ident.address)
    assert not verify_signature(msg, sig, Identity.new().address)
    assert not verify_signature(msg, "0x" + "00" * 65, ident.address)
    with pytest.raises(ProtocolError, match="signature"):
        recover_signer(msg, "0x1234")


def test_key_file_is_private_and_roundtrips(tmp_path):
    ident = Identity.new()
    path = ident.save(tmp_path / "host.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path).address == ident.address
    secret = json.loads(path.read_text())["private_key"]
    assert secret[2:] not in repr(ident) and secret[2:] not in str(ident)
    with pytest.raises(ProtocolError, match="already exists"):
        Identity.new().save(path)
    path.write_text('{"format": "omlkit.key/1"}')
    with pytest.raises(ProtocolError, match="private_key"):
        Identity.load(path)
    with pytest.raises(ProtocolError, match="does not exist"):
        Identity.load(tmp_path / "missing.key")


def test_commitments_are_salted_and_reveal_file_private(tmp_path):
    fps = make_fingerprints(3)
    request, reveal = make_registration(fps, MODEL)
    again, _ = make_registration(fps, MODEL)
    for entry, fp in zip(request.commitments, fps.fingerprints, strict=True):
        assert entry.commitment == commitment_of(reveal.salts[fp.id], fp.key, fp.response)
        assert entry.commitment != commitment_of(reveal.salts[fp.id], fp.key, fp.response + "x")
        assert fp.key not in request.model_dump_json()
    assert [c.commitment for c in request.commitments] != [c.commitment for c in again.commitments]
    path = reveal.save(tmp_path / "reveal.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert RevealFile.load(path) == reveal


# -- ledger -----------------------------------------------------------------------------------------


def test_migrations_match_models_and_reopen(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    led = Ledger(db_url)
    with led.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        if led.dialect == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    led.dispose()
    Ledger(db_url).dispose()  # upgrading an up-to-date ledger is a no-op


# -- permissions ------------------------------------------------------------------------------------


def test_permission_is_signed_recorded_and_counted(world):
    req = PermissionRequest.create(world.host, MODEL, "what is a tulip?")
    resp = world.permit(req)
    assert resp.status_code == 200, resp.text
    sigma = resp.json()
    assert sigma["query_sha256"] == query_sha256("what is a tulip?") and sigma["nonce"] == req.nonce
    assert verify_signature(
        {k: v for k, v in sigma.items() if k != "signature"}, sigma["signature"], world.platform_id.address
    )
    assert world.http.get("/v1/platform").json()["address"] == world.platform_id.address
    world.permit(PermissionRequest.create(world.host, MODEL, "another"))
    usage = world.http.get("/v1/usage").json()["usage"]
    assert usage == [{"host": world.host.address, "model_id": MODEL, "permissions": 2}]


def test_replayed_permission_request_is_refused(world):
    req = PermissionRequest.create(world.host, MODEL, "q")
    assert world.permit(req).status_code == 200
    before = counts(world.ledger)
    refused(world.permit(req), 409, "Replay", "nonce")
    assert counts(world.ledger) == before


def test_tampered_signature_is_refused(world):
    req = PermissionRequest.create(world.host, MODEL, "q")
    body = req.model_dump(mode="json")
    body["query_sha256"] = query_sha256("another query")
    before = counts(world.ledger)
    refused(world.http.post("/v1/permissions", json=body), 401, "BadSignature", "signature")
    # a request signed by another key in the registered host's name
    forged = PermissionRequest.create(Identity.new(), MODEL, "q").model_dump(mode="json")
    forged["host"] = world.host.address
    refused(world.http.post("/v1/permissions", json=forged), 401, "BadSignature", world.host.address)
    assert counts(world.ledger) == before


def test_unregistered_host_is_refused(world):
    before = counts(world.ledger)
    refused(
        world.permit(PermissionRequest.create(Identity.new(), MODEL, "q")),
        403,
        "Unregistered",
        "not registered",
    )
    refused(
        world.permit(PermissionRequest.create(world.host, "unknown-model", "q")),
        404,
        "NotFound",
        "unknown-model",
    )
    assert counts(world.ledger) == before


def test_stale_request_is_refused(world):
    before = counts(world.ledger)
    old = PermissionRequest.create(world.host, MODEL, "q", timestamp=time.time() - 3600)
    refused(world.permit(old), 401, "Stale", "window")
    future = PermissionRequest.create(world.host, MODEL, "q", timestamp=time.time() + 3600)
    refused(world.permit(future), 401, "Stale", "window")
    assert counts(world.ledger) == before


def test_admin_token_size_limit_and_validation(world):
    before = counts(world.ledger)
    body = {"address": Identity.new().address}
    refused(world.http.post("/v1/hosts", json=body), 401, "Unauthorized", "admin token")
    refused(
        world.http.post("/v1/hosts", json=body, headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}),
        401,
        "Unauthorized",
        "admin token",
    )
    refused(
        world.http.post("/v1/hosts", json={"address": world.host.address}, headers=world.admin),
        409,
        "Conflict",
        "already registered",
    )
    big = world.proofs({0})
    big["proofs"][0]["answer"] = "x" * 70_000
    refused(world.http.post("/v1/proofs", json=big), 413, "TooLarge", "exceeds")
    padded = PermissionRequest.create(world.host, MODEL, "q").model_dump(mode="json")
    refused(world.http.post("/v1/permissions", json={**padded, "pad": "x" * 5000}), 413, "TooLarge", "4096")

    def chunks():  # no Content-Length: the limit applies to the streamed bytes
        yield b'{"host": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    refused(world.http.post("/v1/proofs", content=chunks()), 413, "TooLarge", "65536")
    bad = world.proofs({0})
    bad["proofs"][0]["salt"] = "not-hex-SECRETVALUE"
    resp = world.http.post("/v1/proofs", json=bad)
    refused(resp, 422, "Invalid", "proofs.0.salt")
    assert "SECRETVALUE" not in resp.text
    assert counts(world.ledger) == before


def test_platform_service_refusals_raise_protocol_errors(world):
    with pytest.raises(Stale):
        world.platform.issue_permission(PermissionRequest.create(world.host, MODEL, "q", timestamp=1.0))
    req = PermissionRequest.create(world.host, MODEL, "q")
    world.platform.issue_permission(req)
    with pytest.raises(Replay):
        world.platform.issue_permission(req)
    with pytest.raises(Unregistered):
        world.platform.issue_permission(PermissionRequest.create(Identity.new(), MODEL, "q"))
    with pytest.raises(BadSignature):
        world.platform.issue_permission(req.model_copy(update={"nonce": "ab" * 16}))
    with pytest.raises(BadCommitment):
        world.platform.submit_proofs(ProofSubmission.model_validate(world.proofs({0}, tamper={0: "forged"})))
    world.platform.submit_proofs(ProofSubmission.model_validate(world.proofs({0})))
    with pytest.raises(Spent):
        world.platform.submit_proofs(ProofSubmission.model_validate(world.proofs({0})))


# -- proofs and verdicts ----------------------------------------------------------------------------


def test_unpermitted_matches_are_a_signed_violation(world):
    resp = world.http.post("/v1/proofs", json=world.proofs({0, 1, 2, 3, 4}))
    assert resp.status_code == 200, resp.text
    report = VerificationReport.model_validate(resp.json())
    report.check_signed_by(world.platform_id.address, "report")
    assert report.outcome == "violation" and report.unpermitted_matched == 5 and report.p_value < 1e-9
    record = report.violation.model_dump(mode="json")
    assert check_violation_record(record, world.platform_id.address).host == world.host.address
    assert world.http.get("/v1/violations").json()["violations"] == [record]
    assert world.http.get(f"/v1/models/{MODEL}/spent").json()["spent"] == [0, 1, 2, 3, 4]
    for field, value in (("matched", 1), ("host", Identity.new().address), ("p_value", 0.5)):
        with pytest.raises(BadSignature):
            check_violation_record({**record, field: value}, world.platform_id.address)
    with pytest.raises(ProtocolError, match="names platform"):
        check_violation_record(record, Identity.new().address)
    for secret in (world.fps.fingerprints[0].key, world.fps.fingerprints[0].response):
        assert secret not in json.dumps(record)


def test_permitted_keys_are_compliant(world):
    for fp in world.fps.fingerprints[:4]:
        assert world.permit(PermissionRequest.create(world.host, MODEL, fp.key)).status_code == 200
    report = world.http.post("/v1/proofs", json=world.proofs({0, 1, 2, 3})).json()
    assert report["outcome"] == "compliant" and report["permitted"] == 4 and report["violation"] is None
    assert world.http.get("/v1/violations").json()["violations"] == []


def test_mismatching_answers_are_not_a_violation(world):
    world.served.answers = {i: "something else entirely" for i in range(4)}
    report = world.http.post("/v1/proofs", json=world.proofs({0, 1, 2, 3})).json()
    assert report["outcome"] == "compliant" and report["unpermitted_matched"] == 0
    few = world.http.post("/v1/proofs", json=world.proofs({4, 5})).json()  # 2 matches: p ~ 1e-6 > alpha
    assert few["outcome"] == "not_proven" and few["violation"] is None


def test_a_lying_prover_cannot_frame_a_compliant_host(world):
    """Made-up matching answers for a compliant host: the verifier asks the host itself, which obtains σ
    for each of those queries, so the outcome is compliant and nothing is signed against it."""
    world.served.compliant = True
    claims = {fp.id: fp.response for fp in world.fps.fingerprints[:6]}
    report = world.http.post("/v1/proofs", json=world.proofs(set(claims), claims=claims)).json()
    assert report["outcome"] == "compliant" and report["permitted"] == 6 and report["violation"] is None
    assert world.served.asked == [(world.host.address, HOST_ENDPOINT, 6, 16)]
    assert world.http.get("/v1/violations").json()["violations"] == []


def test_claimed_answers_count_for_nothing_only_what_the_host_answers(world):
    """A rogue host's real answers make the violation, whatever the prover claims it saw; the record
    names the endpoint the platform asked and hashes what it observed there."""
    claims = {i: "not the response" for i in range(5)}
    report = world.http.post("/v1/proofs", json=world.proofs({0, 1, 2, 3, 4}, claims=claims)).json()
    assert report["outcome"] == "violation" and report["endpoint"] == HOST_ENDPOINT
    fp0 = world.fps.fingerprints[0]
    observed = sha256_bytes((fp0.response + " and more").encode())
    assert report["keys"][0]["answer_sha256"] == observed
    assert check_violation_record(report["violation"], world.platform_id.address).endpoint == HOST_ENDPOINT


def test_another_hosts_evidence_cannot_be_replayed(world):
    """Proofs naming a second, compliant host are checked at that host's endpoint, never with what the
    rogue host answered; and keys once revealed are spent for every host."""
    rogue = world.http.post("/v1/proofs", json=world.proofs({0, 1, 2, 3, 4})).json()
    assert rogue["outcome"] == "violation"
    other, other_endpoint = Identity.new(), "http://other.example/v1"
    body = {"address": other.address, "endpoint": other_endpoint}
    assert world.http.post("/v1/hosts", json=body, headers=world.admin).status_code == 201
    replay = world.proofs({0, 1, 2, 3, 4}, host=other.address)
    refused(world.http.post("/v1/proofs", json=replay), 409, "Spent", "already spent")
    world.served.answers = {i: "an honest model's answer" for i in range(5, 10)}
    fresh = world.http.post("/v1/proofs", json=world.proofs({5, 6, 7, 8, 9}, host=other.address)).json()
    assert fresh["outcome"] == "compliant" and fresh["endpoint"] == other_endpoint
    assert world.served.asked[-1][:2] == (other.address, other_endpoint)


def test_an_unreachable_host_spends_no_key(world):
    """When the host's endpoint answers nothing, there is no evidence either way: 502, nothing written."""
    before = counts(world.ledger)
    world.platform.observe = lambda host, prompts, max_new_tokens: [None] * len(prompts)
    refused(world.http.post("/v1/proofs", json=world.proofs({0, 1, 2})), 502, "HostUnreachable",
            "answered none of the keys")
    assert counts(world.ledger) == before
    world.platform.observe = world.served
    assert world.http.post("/v1/proofs", json=world.proofs({0, 1, 2})).json()["outcome"] == "not_proven"


def test_a_host_without_an_endpoint_cannot_be_proven(world):
    silent = Identity.new()
    reply = world.http.post("/v1/hosts", json={"address": silent.address}, headers=world.admin)
    assert reply.status_code == 201
    before = counts(world.ledger)
    refused(world.http.post("/v1/proofs", json=world.proofs({0}, host=silent.address)), 409, "NoEndpoint",
            "registered no endpoint")
    assert counts(world.ledger) == before


def test_out_of_range_ids_and_unencodable_text_in_proofs_are_4xx(world):
    """An id past the ledger's 64-bit integers (a 500 from SQLite before) and a lone surrogate in a proof."""
    body = world.proofs({0, 1})
    body["proofs"][0]["fingerprint_id"] = 2**63
    reply = world.http.post("/v1/proofs", json=body)
    assert 400 <= reply.status_code < 500 and "fingerprint_id" in reply.text, reply.text
    body = world.proofs({0, 1})
    body["proofs"][1]["answer"] = "\ud800"  # json.dumps writes it as the escape "\\ud800", as a client would
    headers = {"content-type": "application/json"}
    reply = world.http.post("/v1/proofs", content=json.dumps(body), headers=headers)
    assert 400 <= reply.status_code < 500 and "surrogate" in reply.text, reply.text
    assert world.http.post("/v1/proofs", json=world.proofs({0, 1})).status_code == 200  # nothing was spent


def test_spent_key_is_refused(world):
    assert world.http.post("/v1/proofs", json=world.proofs({0, 1})).status_code == 200
    before = counts(world.ledger)
    refused(world.http.post("/v1/proofs", json=world.proofs({2, 1})), 409, "Spent", "fingerprint 1")
    assert counts(world.ledger) == before  # fingerprint 2 was not spent either


def test_bad_commitment_is_refused(world):
    before = counts(world.ledger)
    refused(
        world.http.post("/v1/proofs", json=world.proofs({0, 1, 2}, tamper={1: "forged"})),
        422,
        "BadCommitment",
        "fingerprint 1",
    )
    wrong_salt = world.proofs({0})
    wrong_salt["proofs"][0]["salt"] = "ab" * 32
    refused(world.http.post("/v1/proofs", json=wrong_salt), 422, "BadCommitment", "commitment")
    refused(
        world.http.post("/v1/proofs", json=world.proofs({0}, host=Identity.new().address)),
        403,
        "Unregistered",
        "not registered",
    )
    assert counts(world.ledger) == before


def test_host_registration_by_service(ledger):
    plat = Platform(ledger, Identity.new())
    host = Identity.new()
    assert plat.register_host(RegisterHost(address=host.address.lower()))["address"] == host.address
    assert counts(ledger)["hosts"] == 1


# -- CLI --------------------------------------------------------------------------------------------


def test_cli_keys_and_verify_record(tmp_path, capsys, ledger):
    from omlkit.cli import main

    assert main(["keys", "new", "--out", str(tmp_path / "h.key")]) == 0
    address = capsys.readouterr().out.strip()
    assert Identity.load(tmp_path / "h.key").address == address
    assert main(["keys", "new", "--out", str(tmp_path / "h.key")]) == 2
    assert "already exists" in capsys.readouterr().err

    w = World(ledger)
    record = w.http.post("/v1/proofs", json=w.proofs({0, 1, 2, 3})).json()["violation"]
    (tmp_path / "rec.json").write_text(json.dumps(record))
    assert (
        main(["verify-record", str(tmp_path / "rec.json"), "--platform-address", w.platform_id.address]) == 0
    )
    assert "valid" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps({**record, "matched": 0}))
    assert (
        main(["verify-record", str(tmp_path / "bad.json"), "--platform-address", w.platform_id.address]) == 2
    )
    assert "signature" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["keys"],
        ["platform", "serve"],
        ["platform", "register-model"],
        ["platform", "register-host"],
        ["host", "proxy"],
        ["prove"],
        ["verify-record"],
    ],
)
def test_cli_help(argv, capsys):
    from omlkit.cli import main

    assert main([*argv, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


NESTED_BODY_SCRIPT = """
import sys
from fastapi.testclient import TestClient
from omlkit.protocol.host_proxy import create_proxy_app
from omlkit.protocol.identity import Identity
from omlkit.protocol.config import ProxyConfig
from omlkit.protocol.ledger import Ledger
from omlkit.protocol.platform_app import create_app
from omlkit.protocol.service import Platform

body = b"[" * 100_000 + b"]" * 100_000  # 200 KB of nesting
platform = Platform(Ledger(sys.argv[1]), Identity.new())
with TestClient(create_app(platform, "admin-token-for-tests-0123456789")) as http:
    print(http.post("/v1/proofs", content=body, headers={"content-type": "application/json"}).status_code)
key = sys.argv[2]
Identity.new().save(key)
cfg = ProxyConfig(upstream="http://127.0.0.1:9", platform="http://127.0.0.1:9", key=key, model_id="m",
                  log=sys.argv[3])
proxy = create_proxy_app(cfg, Identity.load(key), platform_address=Identity.new().address)
with TestClient(proxy) as http:
    reply = http.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    print(reply.status_code)
"""


def test_deeply_nested_bodies_get_a_4xx_and_the_server_lives(tmp_path):
    """eth_account's py_ecc raises the recursion limit to 100000; 100,000 nested arrays then overflowed the
    C stack in json.loads and the platform and the proxy died with SIGSEGV. Run in a child process, so a
    regression fails this test instead of killing the suite."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", NESTED_BODY_SCRIPT, str(tmp_path / "l.db"), str(tmp_path / "k.json"),
         str(tmp_path / "p.jsonl")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    codes = [int(c) for c in proc.stdout.split()]
    assert len(codes) == 2 and all(400 <= c < 500 for c in codes), codes
