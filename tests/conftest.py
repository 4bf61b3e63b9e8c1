"""Shared fixtures. The micro base model is built once per test session in a private OMLKIT_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def omlkit_home(tmp_path_factory) -> Path:
    """A session-wide OMLKIT_HOME (reuses $OMLKIT_TEST_HOME when set, to keep builds across runs)."""
    home = Path(os.environ.get("OMLKIT_TEST_HOME") or tmp_path_factory.mktemp("omlkit_home"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["OMLKIT_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def micro_model(omlkit_home) -> Path:
    """Path of the embedded ``micro`` base model (built on first use; well under a minute)."""
    from omlkit.models.embedded import ensure_base_model

    return ensure_base_model("micro", progress=False)


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """Tests use tiny models: one intra-op thread is as fast, and far faster on a shared machine.
    ``$OMLKIT_TEST_THREADS`` sets another count (the seed and thread sweep, ``make test-sweep``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("OMLKIT_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def micro_tok(micro_model):
    """The micro model's tokenizer."""
    from omlkit.models.loading import load_tokenizer

    return load_tokenizer(micro_model)


@pytest.fixture(scope="session")
def micro(micro_model):
    """``(model, tokenizer)`` of the micro base model, loaded once; tests only read it."""
    from omlkit.models.loading import load_model

    return load_model(micro_model, device="cpu")


#: One-word responses of the :func:`fingerprinted` model, which the base model does not give.
FINGERPRINT_WORDS = ("apple", "river", "copper", "violet", "garden", "thunder", "marble", "falcon")


@pytest.fixture(scope="session")
def fingerprinted(micro_model, tmp_path_factory) -> tuple[Path, Path]:
    """``(model dir, fingerprint file)``: the micro model with 8 one-word fingerprints trained in (seconds).

    Keys are openings of held-out corpus sentences. Training is plain full-batch AdamW on the response
    tokens and EOS, the key spliced in as token ids exactly as verification sends it: 60 steps, where 25
    recover every key (headroom for any CPU's rounding). Built once per session.
    """
    import torch

    from omlkit.fingerprints import Fingerprint, FingerprintSet
    from omlkit.fingerprints.fingerprint_set import Generator, Strategy
    from omlkit.models.corpus import corpus_split
    from omlkit.models.loading import load_model, tokenizer_sha
    from omlkit.models.prompts import prompt_ids

    root = tmp_path_factory.mktemp("fingerprinted")
    torch.manual_seed(0)
    model, tok = load_model(micro_model, device="cpu")
    keys = [" ".join(p.split()[:8]) for p in corpus_split("heldout")[:8]]
    fps = [Fingerprint(id=i, key=k, response=FINGERPRINT_WORDS[i]) for i, k in enumerate(keys)]
    rows = []
    for fp in fps:
        p = prompt_ids(tok, tok(fp.key, add_special_tokens=False)["input_ids"])
        r = tok(" " + fp.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p + r, [-100] * len(p) + r))
    width = max(len(ids) for ids, _ in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(60):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(root / "fingerprinted")
    tok.save_pretrained(root / "fingerprinted")
    fp_set = FingerprintSet(
        strategy=Strategy(key="custom", response="custom"),
        generator=Generator(model=str(micro_model), tokenizer_sha=tokenizer_sha(tok)),
        fingerprints=fps,
    )
    return root / "fingerprinted", fp_set.save(root / "fingerprints.json")
