"""A model distributed as per-host copies on the platform: each copy's pool ids are registered, pool keys
are revealed only as trace blocks the platform draws, a violation on such a block names the copy it came
from (signed, in the violation record), a prover cannot choose the pool keys it reveals, and bad
registrations are 4xx."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from omlkit.errors import ConfigError
from omlkit.fingerprints import FingerprintSet
from omlkit.protocol.identity import Identity
from omlkit.protocol.ledger import Ledger
from omlkit.protocol.messages import (
    CopyEntry,
    CopyRegistration,
    Proof,
    ProofSubmission,
    VerificationReport,
    check_violation_record,
    make_registration,
)
from omlkit.protocol.platform_app import create_app
from omlkit.protocol.refusals import BadSignature
from omlkit.protocol.service import Platform
from omlkit.tracing.manifest import Manifest

ADMIN = "admin-token-for-tests-0123456789"
MODEL = "acme/distributed-1"
COPIES = ["h0", "h1", "h2", "h3"]
LEAKED = "h2"


def _fingerprints(n: int = 242) -> FingerprintSet:
    return FingerprintSet.from_dict({
        "strategy": {"key": "custom", "response": "custom"},
        "fingerprints": [{"id": i, "key": f"secret key {i} about hedges", "response": f"answer{i}"}
                         for i in range(n)],
    })


class Distributed:
    """A platform with a model registered as 4 copies (2 core keys, 240 pool keys at rate 1/4) and one
    registered host serving copy ``h2``: it answers the core keys and the keys ``h2`` holds."""

    def __init__(self, ledger: Ledger) -> None:
        self.fps = _fingerprints()
        self.manifest = Manifest.build(self.fps, COPIES, rate=0.25, seed=3, core=2)
        self.host, self.platform_id = Identity.new(), Identity.new()
        held = self.manifest.holds()[LEAKED] | set(self.manifest.core)
        by_key = {fp.key: fp for fp in self.fps.fingerprints}

        def observe(host, prompts, max_new_tokens):
            return [by_key[p].response + " indeed" if by_key[p].id in held else "no idea" for p in prompts]

        platform = Platform(ledger, self.platform_id, observe=observe)
        self.http = TestClient(create_app(platform, ADMIN))
        self.admin = {"Authorization": f"Bearer {ADMIN}"}
        request, self.reveal = make_registration(self.fps, MODEL)
        request = request.model_copy(update={"copies": self.registration()})
        assert self.http.post("/v1/models", json=request.model_dump(mode="json"),
                              headers=self.admin).json()["copies"] == 4
        assert self.http.post("/v1/hosts", json={"address": self.host.address, "endpoint": "http://h/v1"},
                              headers=self.admin).status_code == 201

    def registration(self, **changes) -> CopyRegistration:
        copies = [CopyEntry(name=h.host, host=self.host.address if h.host == LEAKED else None,
                            fingerprint_ids=h.ids) for h in self.manifest.hosts]
        return CopyRegistration(rate=0.25, pool=self.manifest.pool, copies=copies).model_copy(update=changes)

    def block(self, n: int) -> list[int]:
        resp = self.http.post(f"/v1/models/{MODEL}/trace-block", json={"n": n})
        assert resp.status_code == 200, resp.text
        return resp.json()["ids"]

    def submit(self, ids):
        by_id = {fp.id: fp for fp in self.fps.fingerprints}
        proofs = [Proof(fingerprint_id=i, key=by_id[i].key, response=by_id[i].response,
                        salt=self.reveal.salts[i]) for i in ids]
        return self.http.post("/v1/proofs", json=ProofSubmission(
            host=self.host.address, model_id=MODEL, proofs=proofs).model_dump(mode="json"))

    def prove(self, ids) -> VerificationReport:
        resp = self.submit(ids)
        assert resp.status_code == 200, resp.text
        return VerificationReport.model_validate(resp.json())


@pytest.fixture
def world(tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.db"))
    yield Distributed(ledger)
    ledger.dispose()


def test_a_violation_on_a_trace_block_names_the_leaked_copy(world):
    block = world.block(160)
    assert len(block) == 160 and set(block) <= set(world.manifest.pool)
    assert world.block(5) == block  # reserved until revealed
    report = world.prove([*world.manifest.core, *block])
    assert report.outcome == "violation"
    (traced,) = report.violation.traced  # only the leaked copy: each innocent one is at most alpha
    assert traced.name == LEAKED and traced.host == world.host.address and traced.p_value <= 1e-9
    assert traced.held == traced.matched >= 17  # every pool key it answered is its own (~40 expected)
    record = report.violation.model_dump(mode="json")
    assert check_violation_record(record, world.platform_id.address).traced[0].name == LEAKED
    with pytest.raises(BadSignature):
        check_violation_record({**record, "traced": [{**record["traced"][0], "name": "h0"}]},
                               world.platform_id.address)
    rest = world.block(500)  # the next block: the other 80 pool keys
    assert len(rest) == 80 and not set(rest) & set(block)


def test_a_prover_cannot_choose_the_pool_keys_it_reveals(world):
    framed = sorted(world.manifest.holds()["h0"])[:60]  # an innocent copy's keys
    resp = world.submit([*world.manifest.core, *framed])
    assert resp.status_code == 409 and "trace block" in resp.json()["error"]
    block = world.block(40)
    resp = world.submit([*world.manifest.core, *block[:-1]])  # part of the block is not the block
    assert resp.status_code == 409
    assert world.http.get(f"/v1/models/{MODEL}/spent").json()["spent"] == []  # nothing was spent
    report = world.prove(world.manifest.core)  # core keys alone: verified, not traced
    assert report.outcome != "compliant" and (report.violation is None or report.violation.traced is None)


def test_copy_registrations_that_do_not_fit_are_refused(world):
    request, _ = make_registration(world.fps, "acme/other")
    for bad in (
        {"pool": world.manifest.pool + [10_000]},  # a pool id without a commitment
        {"copies": [{"name": "h0", "fingerprint_ids": [10_001]}]},  # a copy id outside the pool
        {"copies": [{"name": "h0", "fingerprint_ids": []}, {"name": "h0", "fingerprint_ids": []}]},
        {"rate": 1.5},
    ):
        copies = world.registration().model_dump(mode="json") | bad
        body = request.model_dump(mode="json") | {"copies": copies}
        resp = world.http.post("/v1/models", json=body, headers=world.admin)
        assert resp.status_code == 422 and "\n" not in resp.json()["error"], resp.text


def test_register_model_cli_reads_the_manifest_and_verify_record_names_the_copy(world, tmp_path, capsys):
    from omlkit.cli import main
    from omlkit.commands.protocol import _copies
    from omlkit.protocol.config import RegisterModelConfig

    fp_file = world.fps.save(tmp_path / "fps.json")
    manifest = world.manifest.save(tmp_path / "manifest.json")
    cfg = RegisterModelConfig(platform="http://p", fingerprints=fp_file, model_id="m",
                              reveal_out=tmp_path / "r", manifest=manifest,
                              copy_host=[f"h1={world.host.address}"])
    copies = _copies(cfg, world.fps)
    assert [c.host for c in copies.copies] == [None, world.host.address, None, None]
    assert copies.pool == world.manifest.pool and copies.rate == 0.25
    with pytest.raises(ConfigError, match="--copy-host"):
        _copies(cfg.model_copy(update={"copy_host": ["h9=0x0"]}), world.fps)
    with pytest.raises(ConfigError, match="another fingerprint file"):
        _copies(cfg, _fingerprints(10))

    report = world.prove([*world.manifest.core, *world.block(160)])
    (tmp_path / "rec.json").write_text(json.dumps(report.violation.model_dump(mode="json")))
    argv = ["verify-record", str(tmp_path / "rec.json"), "--platform-address", world.platform_id.address]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "valid" in out and f"traced to copy '{LEAKED}'" in out and world.host.address in out


def test_oml_prove_trace_reveals_the_block_the_platform_reserves(world, tmp_path):
    from omlkit.errors import ProtocolError
    from omlkit.protocol.config import ProveConfig
    from omlkit.protocol.prover import block_keys, prove

    with pytest.raises(ProtocolError, match="not in the fingerprint or reveal file"):
        block_keys(world.fps, world.reveal, [10_000])
    reserved = []

    class InProcess:  # the platform client, over the in-process app
        def address(self):
            return world.platform_id.address

        def trace_block(self, model_id, n):
            reserved.append(world.block(n))
            return reserved[-1]

        def submit_proofs(self, submission):
            return world.http.post("/v1/proofs", json=submission.model_dump(mode="json")).json()

    cfg = ProveConfig(fingerprints=world.fps.save(tmp_path / "fps.json"), platform="http://p",
                      reveal_file=world.reveal.save(tmp_path / "reveal.json"),
                      host_address=world.host.address, count=160, trace=True)
    report = prove(cfg, client=InProcess())
    assert [c.name for c in report.violation.traced] == [LEAKED]
    assert {k.fingerprint_id for k in report.keys} == set(reserved[0]) and len(reserved[0]) == 160
