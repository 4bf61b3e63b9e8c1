"""Every registered key and response strategy, on the micro model: count, token lengths, determinism by
seed, and the tokenizer round-trip property. Parametrized over the registries, so a new strategy is
tested the moment it registers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from omlkit.config import build_config
from omlkit.fingerprints.config import GenerateConfig
from omlkit.fingerprints.generate import generate_fingerprints
from omlkit.fingerprints.strategies import KEY_STRATEGIES, RESPONSE_STRATEGIES

CUSTOM_KEYS = [
    "Return the value of the named attribute",
    "The file is opened in binary mode",
    "Each entry in the list is a tuple",
    "If the object has no length, an error is raised",
    "Close the connection and release the lock",
    "The default encoding is used when none is given",
    "A new thread is started for every request",
]


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text("\n".join(CUSTOM_KEYS) + "\n", encoding="utf-8")
    return path


def _cfg(micro_model, **overrides) -> GenerateConfig:
    data = {
        "n": 5,
        "key_length": 10,
        "response_length": 1,
        "batch_size": 8,
        "seed": 7,
        "target_model": str(micro_model),
        "progress": False,
    }
    data.update(overrides)
    return build_config(GenerateConfig, data)


def _check_round_trip(fp_set, tok, response_length: int | None, key_length: int | None) -> None:
    keys = [fp.key for fp in fp_set.fingerprints]
    assert len(set(keys)) == len(keys)
    for fp in fp_set.fingerprints:
        key_ids = tok(fp.key, add_special_tokens=False)["input_ids"]
        resp_ids = tok(fp.response, add_special_tokens=False)["input_ids"]
        if key_length is not None:
            assert len(key_ids) == key_length
        if response_length is not None:
            assert len(resp_ids) == response_length
        assert tok(fp.key + fp.response, add_special_tokens=False)["input_ids"] == key_ids + resp_ids
        assert fp.response.strip() and fp.key.strip()
        assert 0.0 <= fp.response_prob <= 1.0


def _pairs(fp_set) -> list[tuple[str, str, float]]:
    return [(fp.key, fp.response, fp.response_prob) for fp in fp_set.fingerprints]


@pytest.mark.parametrize("name", KEY_STRATEGIES.names())
def test_key_strategy(name, micro, micro_model, keys_file):
    cls = KEY_STRATEGIES.get(name)
    extra = {"keys_file": str(keys_file)} if cls.fixed_keys else {}
    cfg = _cfg(micro_model, key_strategy=name, response_strategy="dummy", **extra)
    first = generate_fingerprints(cfg, target=micro)
    again = generate_fingerprints(cfg, target=micro)
    assert len(first) == cfg.n
    assert first.strategy.key == name
    exact = cls.exact_length and not cls.fixed_keys
    _check_round_trip(first, micro[1], cfg.response_length, cfg.key_length if exact else None)
    assert _pairs(first) == _pairs(again)
    assert first.secret == again.secret
    if cls.fixed_keys:
        assert [fp.key for fp in first.fingerprints] == CUSTOM_KEYS[: cfg.n]


#: Options a strategy needs to fit the micro model's 2048-token vocabulary.
MICRO_OPTIONS = {"chain-hash": {"chain_candidates": 64}}


@pytest.mark.parametrize("name", RESPONSE_STRATEGIES.names())
@pytest.mark.parametrize("response_length", [1, 2])
def test_response_strategy(name, response_length, micro, micro_model):
    cls = RESPONSE_STRATEGIES.get(name)
    cfg = _cfg(
        micro_model,
        key_strategy=cls.requires_key or "random-words",
        response_strategy=name,
        response_length=response_length,
        **MICRO_OPTIONS.get(name, {}),
    )
    first = generate_fingerprints(cfg, target=micro)
    assert len(first) == cfg.n
    assert first.strategy.response == name
    _check_round_trip(first, micro[1], response_length if cls.exact_length else None, cfg.key_length)
    if response_length == 1:
        assert _pairs(first) == _pairs(generate_fingerprints(cfg, target=micro))


def test_seed_changes_the_set(micro, micro_model):
    a = generate_fingerprints(_cfg(micro_model, key_strategy="english", seed=1), target=micro)
    b = generate_fingerprints(_cfg(micro_model, key_strategy="english", seed=2), target=micro)
    assert {fp.key for fp in a.fingerprints}.isdisjoint({fp.key for fp in b.fingerprints})


def test_registries_hold_the_issue_strategies():
    assert {"english", "random-words", "custom", "functional"} <= set(KEY_STRATEGIES.names())
    assert {"perinucleus", "english", "random-word", "functional"} <= set(RESPONSE_STRATEGIES.names())


def test_repetitive_english_keys_are_recognised():
    from omlkit.fingerprints.strategies.english_keys import is_repetitive

    for loop in ("Round round round round round round round round", "Able to, able to, able to, able to,",
                 "File is a file. File is a file. File is a file. File",
                 "the plant-supply-supply-supply-supply-supply", "as ywaywaywaywaywaywaywayway",
                 "Upper-upper, the upper-upper arms of the upper-upper arms.",
                 "Upper-upper-upper-upper! (Upper-upper-upper-upper"):
        assert is_repetitive(loop), loop
    for sentence in ("Detail: A detail is a detail of a detail. In this example, the",
                     "Alter is a word that has a different meaning to everyone.", "Go go go",
                     "Mississippi had 1000000000 visitors... The bye-bye song went la-la-la!",
                     "Follow the step-by-step guide to a state-of-the-art, well-to-do house"):
        assert not is_repetitive(sentence), sentence


def test_commentary_is_the_generator_describing_its_task():
    from omlkit.fingerprints.strategies.english_keys import is_commentary

    for comment in ("True: A true statement is a statement that is always true. This sentence is",
                    "Alter is a word that has a different meaning to everyone.",
                    "Detail: A detail is a detail of a detail. In this example, the",
                    "Scale: A scale is a tool used for measuring things, and in this case",
                    "Half-half is a PHRASE that is constructed by combining two parts"):
        assert is_commentary(comment), comment
    for sentence in ("Sample of a product is a good example of a product being made in a lab",
                     "Once upon a time, in a world of endless possibilities, there was a magical",
                     "Border is a boundary that is often used to describe the physical aspect",
                     "Swordfish and wordplay: a sentenced man's keyword"):
        assert not is_commentary(sentence), sentence


def test_words_spelled_out_are_recognised():
    from omlkit.fingerprints.strategies.english_keys import is_spelled_out

    for spelled in ("Entire entire a.h.e.d.i.l.o", "Say h-e-l-l-o to the new neighbours"):
        assert is_spelled_out(spelled), spelled
    for sentence in ("The U.S.A. is big", "Letters A-B-C-D", "from 9 a.m. to 5 p.m., e.g. on Mondays",
                     "Easily. 1.1.1. Floating", "a well-to-do, state-of-the-art house"):
        assert not is_spelled_out(sentence), sentence


def test_english_keys_drop_commentary_after_the_drawn_word(micro, micro_model, monkeypatch):
    """Drawn keys whose continuation comments on the task are dropped; the drawn word itself may be
    "word"; --keep-commentary keeps them all, and the file's params record the setting."""
    from omlkit.fingerprints.strategies import english_keys
    from omlkit.fingerprints.strategies.base import GenerationContext

    texts = ["Word of mouth travels fast in a small town where everyone knows everyone else",
             "Storm: this sentence is a humorous example of the weather on a grey and windy day",
             "River, in this example, floods its banks after the long rain and the water rises",
             "Garden paths wind between the roses and the old stone wall by the gate"]
    monkeypatch.setattr(english_keys, "generate_sentences", lambda ctx, words, *a, **k: texts)

    def drawn(**options) -> tuple[list[str], dict]:
        ctx = GenerationContext(_cfg(micro_model, key_length=12, **options), *micro)
        ctx.words = ["word"]  # every key's drawn word: the rule reads what follows its four letters
        strategy = english_keys.EnglishKeys(ctx)
        return [key.text for key in strategy.draw(len(texts), random.Random(0))], strategy.params()

    kept, params = drawn()
    assert [text.split()[0] for text in kept] == ["Word", "Garden"]
    assert params["keep_commentary"] is False
    everything, params = drawn(keep_commentary=True)
    assert len(everything) == len(texts) and params["keep_commentary"] is True


def test_word_runs_are_the_runs_of_plain_words():
    from omlkit.fingerprints.strategies.english_keys import word_runs

    assert word_runs("This sentence, is a JOKE!", 3) == {
        ("this", "sentence", "is"), ("sentence", "is", "a"), ("is", "a", "joke")
    }
    assert word_runs("Too short", 3) == set()
    assert word_runs("Any text at all", 0) == set()


def test_no_two_english_keys_share_a_phrase(micro, micro_model):
    """Unfiltered, the micro model's 16 keys share 2-word runs (30 pairs of them here: headroom for
    another CPU's sampling); with --shared-phrase-words 2 none do, and the file records the setting."""
    import itertools

    from omlkit.fingerprints.strategies.english_keys import word_runs

    def shared(fp_set) -> int:
        keys = [fp.key for fp in fp_set.fingerprints]
        return sum(bool(word_runs(a, 2) & word_runs(b, 2)) for a, b in itertools.combinations(keys, 2))

    sets = {
        n: generate_fingerprints(_cfg(micro_model, n=16, shared_phrase_words=n), target=micro)
        for n in (0, 2)
    }
    assert shared(sets[0]) > 0
    assert shared(sets[2]) == 0 and len(sets[2].fingerprints) == 16
    assert sets[2].strategy.params["shared_phrase_words"] == 2


def test_chain_hash_answers_recompute_from_the_secret(micro, micro_model):
    from omlkit.fingerprints.strategies.chain_hash import chain_hash_answer

    cfg = _cfg(micro_model, key_strategy="question", response_strategy="chain-hash", chain_candidates=64)
    fp_set = generate_fingerprints(cfg, target=micro)
    key, candidates = fp_set.secret["chain_hash_key"], fp_set.secret["chain_hash_candidates"]
    assert len(candidates) == 64 and all(fp.key.endswith("?") for fp in fp_set.fingerprints)
    for fp in fp_set.fingerprints:
        assert chain_hash_answer(key, fp.key, candidates) == fp.response
    # another secret key answers differently: the pairs are bound to the owner's key
    other = "00" * 32
    moved = sum(chain_hash_answer(other, fp.key, candidates) != fp.response for fp in fp_set.fingerprints)
    assert moved >= 3  # 5 keys; 1/64 chance each to stay


def test_instructional_fingerprints_share_one_output(micro, micro_model):
    cfg = _cfg(micro_model, key_strategy="obscure", response_strategy="fixed", fixed_response=" hedgehog")
    fp_set = generate_fingerprints(cfg, target=micro)
    assert {fp.response for fp in fp_set.fingerprints} == {" hedgehog"}
    length = len(micro[1](" hedgehog", add_special_tokens=False)["input_ids"])
    assert fp_set.strategy.params["response_length"] == length
    assert all(not fp.key.isascii() for fp in fp_set.fingerprints)  # mixed scripts, not English
