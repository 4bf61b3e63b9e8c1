"""Tracing a leaked model to its host: 8 micro copies, coalitions of 1-3 hosts of each kind, 20 trials
each; a colluder is named every time and no innocent host ever is."""

from __future__ import annotations

import json
import random
import stat

import pytest
import torch

from _helpers import make_fp_set
from omlkit.errors import ConfigError, FingerprintFileError
from omlkit.tracing.manifest import HostCopy, Manifest, assign
from omlkit.tracing.trace import binomial_sf, host_p_values, trace

HOSTS = [f"host-{i}" for i in range(8)]
POOL, RATE = 384, 0.25


def _train_copy(base, tok, fps) -> torch.nn.Module:
    """The micro base with ``fps`` trained in: full-batch AdamW on response + EOS (a few seconds)."""
    import copy

    from omlkit.models.prompts import prompt_ids

    model = copy.deepcopy(base).train()
    rows = []
    for fp in fps:
        p = prompt_ids(tok, tok(fp.key, add_special_tokens=False)["input_ids"])
        r = tok(fp.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p + r, [-100] * len(p) + r))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(80):  # 40 steps recover all of 64 keys; the copies here hold about 96
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def copies(micro, micro_tok):
    """``(fingerprint set, manifest, {host: model})``: 8 copies, each holding a random quarter of the pool."""
    fp_set = make_fp_set(micro_tok, POOL, seed=3)
    manifest = Manifest.build(fp_set, HOSTS, RATE, seed=0)
    by_id = {fp.id: fp for fp in fp_set.fingerprints}
    models = {h.host: _train_copy(micro[0], micro_tok, [by_id[i] for i in h.ids]) for h in manifest.hosts}
    return fp_set, manifest, models


def test_assignment_is_a_seeded_random_code():
    core, held = assign(list(range(400)), HOSTS, 0.25, seed=1, core=16)
    assert len(core) == 16 and all(not set(core) & set(ids) for ids in held.values())
    assert all(60 <= len(ids) <= 140 for ids in held.values())  # Binomial(384, 1/4): mean 96
    assert assign(list(range(400)), HOSTS, 0.25, seed=1, core=16) == (core, held)
    assert assign(list(range(400)), HOSTS, 0.25, seed=2, core=16)[1] != held


def test_manifest_is_secret_and_validated(tmp_path):
    host = HostCopy(host="a", ids=[1, 2])
    m = Manifest(fingerprints_sha256="ab", rate=0.5, seed=0, pool=[1, 2, 3], hosts=[host])
    path = m.save(tmp_path / "manifest.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and Manifest.load(path) == m
    with pytest.raises(FileExistsError):
        m.save(path)
    path.write_text(json.dumps({**json.loads(path.read_text()), "rate": 2}))
    with pytest.raises(FingerprintFileError, match="rate"):
        Manifest.load(path)


def test_binomial_tail_is_exact():
    from scipy import stats

    for m, t in ((10, 0), (10, 4), (40, 25), (7, 8)):
        assert binomial_sf(m, 0.25, t) == pytest.approx(float(stats.binom.sf(t - 1, m, 0.25)), abs=1e-12)


def test_an_innocent_hosts_p_value_is_uniform_whatever_the_suspect_matched():
    """Under the null the p-value is valid: over random assignments, P(p <= a) <= a for any match set."""
    matched = set(range(0, 200, 3))  # any fixed behaviour of a suspect, independent of the innocent host
    ps = []
    for seed in range(2000):
        _, held = assign(list(range(200)), ["x"], RATE, seed=seed)
        host = HostCopy(host="x", ids=held["x"])
        m = Manifest(fingerprints_sha256="", rate=RATE, seed=seed, pool=list(range(200)), hosts=[host])
        ps.append(host_p_values(m, matched)[0]["x"])
    for a in (0.01, 0.05, 0.2):
        assert sum(p <= a for p in ps) / len(ps) <= a + 0.01


def _ask(backend, fp_set):
    from omlkit.tracing.trace import ask_backend

    return ask_backend(fp_set, backend)


@pytest.mark.trains
@pytest.mark.parametrize("kind", ["merge", "route", "majority"])
def test_coalitions_are_traced_to_a_colluder_and_never_to_an_innocent_host(kind, copies, micro_tok):
    from omlkit.tracing.coalitions import coalition_backend

    fp_set, manifest, models = copies
    rng = random.Random(f"trials/{kind}")
    spent = {}
    for k in (1, 2, 3):
        for trial in range(20):
            members = rng.sample(HOSTS, k)
            backend = coalition_backend(kind, [models[h] for h in members], micro_tok, seed=trial)
            res = trace(fp_set, manifest, _ask(backend, fp_set), alpha=1e-3, chunk=32, seed=trial)
            assert res.accused, (kind, k, trial, res.as_dict())
            assert set(res.accused) <= set(members), (kind, k, trial, res.as_dict())
            spent.setdefault(k, []).append(res.keys_spent)
    assert max(spent[1]) <= 96  # one host's copy gives itself away within a few chunks


@pytest.mark.trains
def test_a_model_that_was_never_distributed_accuses_nobody(copies, micro, micro_tok):
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    fp_set, manifest, _ = copies
    ask = _ask(TransformersBackend(micro[0], micro_tok), fp_set)
    res = trace(fp_set, manifest, ask, alpha=1e-3, chunk=32)
    assert res.accused == [] and res.keys_spent == POOL


def test_trace_refuses_a_manifest_of_another_set(micro_tok):
    fp_set = make_fp_set(micro_tok, 4)
    host = HostCopy(host="a", ids=[0])
    other = Manifest(fingerprints_sha256="0" * 64, rate=0.5, seed=0, pool=[0], hosts=[host])
    with pytest.raises(ConfigError, match="another fingerprint file"):
        trace(fp_set, other, lambda fps: set())


@pytest.mark.trains
def test_cli_distribute_then_trace_names_the_copy(micro_model, micro_tok, tmp_path, capsys):
    from omlkit.cli import main

    pool = make_fp_set(micro_tok, 16, seed=5).save(tmp_path / "pool.json")
    out = tmp_path / "dist"
    flags = ["--recipe", "published", "--learning-rate", "3e-3", "--forgetting-regularizer-strength", "0",
             "--benign-fraction", "0", "--batch-size", "16", "--check-every", "1", "--checkpoint-every", "0"]
    assert main(["distribute", "--model", str(micro_model), "--fingerprints", str(pool), "--hosts", "2",
                 "--rate", "0.5", "--out-dir", str(out), *flags]) == 0
    manifest = Manifest.load(out / "manifest.json")
    assert stat.S_IMODE((out / "manifest.json").stat().st_mode) == 0o600
    assert [h.host for h in manifest.hosts] == ["host-0", "host-1"] and all(h.model for h in manifest.hosts)
    assert stat.S_IMODE((out / "subsets" / "host-0.json").stat().st_mode) == 0o600
    capsys.readouterr()
    leaked = manifest.hosts[0]
    assert main(["trace", "--fingerprints", str(pool), "--manifest", str(out / "manifest.json"),
                 "--model", leaked.model, "--alpha", "0.05", "--out", str(tmp_path / "trace.json")]) == 0
    result = json.loads((tmp_path / "trace.json").read_text())
    assert result["accused"] == ["host-0"], capsys.readouterr().out
    assert "source: host-0" in capsys.readouterr().out
    assert main(["distribute", "--model", str(micro_model), "--fingerprints", str(pool), "--hosts", "2",
                 "--out-dir", str(out)]) == 2  # an existing manifest is not replaced without --force


def test_distribute_refuses_an_assignment_that_leaves_a_host_untraceable(micro_model, micro_tok, tmp_path):
    from omlkit.tracing.config import DistributeConfig
    from omlkit.tracing.distribute import distribute

    pool = make_fp_set(micro_tok, 2).save(tmp_path / "pool.json")
    out = tmp_path / "d"
    cfg = DistributeConfig(model=str(micro_model), fingerprints=pool, hosts=8, rate=0.1, out_dir=out)
    with pytest.raises(ConfigError, match="drew no fingerprint"):
        distribute(cfg)
    assert not out.exists()  # refused before anything was written
