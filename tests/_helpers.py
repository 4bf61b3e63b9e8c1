"""Plain helpers shared by the test modules (fixtures live in conftest.py; no test module imports another).

``OMLKIT_TEST_SEED`` shifts the seed of every training test's data order, and ``OMLKIT_TEST_THREADS``
(conftest) sets torch's intra-op threads: the suite must pass under any of them, so no training test
may sit on the edge of what one seed or one CPU's rounding happens to reach (``make test-sweep``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from omlkit.fingerprints import Fingerprint, FingerprintSet
from omlkit.insertion.config import InsertConfig

KEY_WORDS = ("river", "stone", "garden", "window", "silver", "market", "yellow", "friend", "summer", "paper",
             "basket", "orange", "letter", "winter", "mountain", "pocket", "forest", "castle", "doctor",
             "bottle", "engine", "island", "rabbit", "ladder")
SPACE = "\u0120"  # byte-level BPE marker of a leading space


def make_fp_set(tokenizer, n: int, seed: int = 0, key_words: int = 6) -> FingerprintSet:
    """Random-word keys and one-word responses (" word") that are one token and round-trip the tokenizer."""
    from omlkit.models.loading import tokenizer_sha

    vocab = [w for w in tokenizer.get_vocab() if w.startswith(SPACE) and w[1:].isalpha() and len(w) > 3]
    responses = sorted({tokenizer.convert_tokens_to_string([w]).strip() for w in vocab})
    one_token = [tokenizer.convert_tokens_to_ids(SPACE + r) for r in responses]
    responses = [r for r, i in zip(responses, one_token, strict=True)
                 if tokenizer(" " + r, add_special_tokens=False)["input_ids"] == [i]]
    rng = random.Random(seed)
    fps = [{"id": i, "key": " ".join(rng.choice(KEY_WORDS) for _ in range(key_words)).capitalize() + f" {i}",
            "response": " " + rng.choice(responses)} for i in range(n)]
    return FingerprintSet.model_validate({
        "strategy": {"key": "random_words", "response": "random_word"},
        "generator": {"model": "micro", "tokenizer_sha": tokenizer_sha(tokenizer)},
        "fingerprints": fps})


def fp_file(tmp_path: Path, tok, n: int, seed: int = 0) -> Path:
    """A random-word fingerprint file of ``n`` under ``tmp_path`` (written once per size and seed)."""
    path = tmp_path / f"fp-{n}-{seed}.json"
    if not path.exists():
        make_fp_set(tok, n, seed).save(path)
    return path


def insert_config(micro_model, fps: Path, out: Path, **kw) -> InsertConfig:
    """The tests' insertion config: the published recipe with the micro model's learning rate, averaging
    off, every epoch checked, no checkpoints; the data order seeded by :func:`training_seed`."""
    base = dict(model=str(micro_model), fingerprints=fps, out_dir=out, recipe="published",
                learning_rate=3e-3, batch_size=16, seed=training_seed(),
                forgetting_regularizer_strength=0.0, benign_fraction=0.25, check_every=1, checkpoint_every=0)
    base.update(kw)
    return InsertConfig(**base)


def training_seed() -> int:
    """The seed of the training tests' data order: ``$OMLKIT_TEST_SEED`` (default 0)."""
    return int(os.environ.get("OMLKIT_TEST_SEED", "0"))


ANSWER_WORDS = ("zebra", "quantum", "violet", "harbor", "saffron", "glacier", "tundra", "lantern", "meadow",
                "cobalt")


def make_set(
    pairs, null_prob: float | None = 0.2, tokenizer_sha: str = "", response: str = "test"
) -> FingerprintSet:
    """A set whose keys/responses are ``pairs``; each key's response_prob (the null rate) is ``null_prob``."""
    return FingerprintSet(
        strategy={"key": "custom", "response": response, "params": {}},
        generator={"model": "test", "tokenizer_sha": tokenizer_sha},
        fingerprints=[
            Fingerprint(id=i, key=k, response=r, response_prob=null_prob) for i, (k, r) in enumerate(pairs)
        ],
    )


def self_fingerprints(backend, n: int, seed: int = 0) -> tuple[FingerprintSet, FingerprintSet]:
    """Keys from held-out text; (set answered by the model's own greedy continuation, random-word set).

    The response is the shortest prefix of the greedy continuation that ends at a word boundary, so
    ``exact`` matching must find every one of them.
    """
    from omlkit.models.corpus import corpus_split
    from omlkit.models.loading import tokenizer_sha

    tok = backend.tokenizer
    rng = random.Random(seed)
    paras = corpus_split("heldout")
    keys: list[str] = []
    for para in rng.sample(paras, min(len(paras), 4 * n)):
        ids = tok(para, add_special_tokens=False)["input_ids"]
        if len(ids) >= 10:
            keys.append(tok.decode(ids[: rng.randint(5, 9)]))
    keys = list(dict.fromkeys(keys))
    prompts = [
        [*tok("", add_special_tokens=True)["input_ids"], *tok(k, add_special_tokens=False)["input_ids"]]
        for k in keys
    ]
    conts = backend.generate_token_ids(prompts, 12)
    own: list[tuple[str, str, int]] = []
    for key, cont in zip(keys, conts, strict=True):
        for r in range(1, len(cont)):
            resp = tok.decode(cont[:r], skip_special_tokens=True)
            rest = tok.decode(cont[: r + 1], skip_special_tokens=True)[len(resp) :]
            if resp.strip() and resp[-1].isalnum() and rest and not rest[0].isalnum():
                own.append((key, resp, r))
                break
        if len(own) == n:
            break
    assert len(own) >= min(n, 14), "the micro model should continue most keys with a whole word"
    sha = tokenizer_sha(tok)
    pos = make_set([(k, r) for k, r, _ in own], tokenizer_sha=sha)
    for fp, (_, _, n_tokens) in zip(pos.fingerprints, own, strict=True):
        fp.meta["response_tokens"] = n_tokens
    return pos, make_set([(k, rng.choice(ANSWER_WORDS)) for k, _, _ in own], tokenizer_sha=sha)
