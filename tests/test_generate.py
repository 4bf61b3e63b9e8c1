"""The generation pipeline on the micro model: perinucleus against the model's real distribution, the
round-trip and greedy checks, recorded parameters, the file, errors, ``oml generate`` and ``oml inspect``."""

from __future__ import annotations

import json
import stat

import pytest
import torch

from omlkit.cli import main
from omlkit.config import build_config
from omlkit.errors import ConfigError, OmlError
from omlkit.fingerprints import FingerprintSet
from omlkit.fingerprints.config import GenerateConfig
from omlkit.fingerprints.generate import check_pair, generate_fingerprints, run_generate, score_responses
from omlkit.fingerprints.strategies import GenerationContext, Key, Response
from omlkit.fingerprints.strategies.base import WORD_LIKE
from omlkit.fingerprints.strategies.functional import count_colors
from omlkit.models.prompts import prompt_ids


def _cfg(micro_model, **overrides) -> GenerateConfig:
    data = {
        "n": 8,
        "key_length": 10,
        "batch_size": 8,
        "seed": 3,
        "target_model": str(micro_model),
        "progress": False,
    }
    data.update(overrides)
    return build_config(GenerateConfig, data)


@torch.no_grad()
def _next_probs(model, tok, key: str) -> torch.Tensor:
    ids = prompt_ids(tok, tok(key, add_special_tokens=False)["input_ids"])
    return torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)


@torch.no_grad()
def _whole_word(model, tok, key: str, token: int) -> bool:
    """The model's greedy token after key + ``token`` does not glue onto it (space, punctuation, EOS)."""
    ids = prompt_ids(tok, tok(key, add_special_tokens=False)["input_ids"]) + [token]
    nxt = tok.decode([int(model(torch.tensor([ids])).logits[0, -1].argmax())], skip_special_tokens=True)
    return not (nxt and nxt[0].isalnum())


@pytest.mark.parametrize(("t", "k"), [(0.8, 3), (0.5, 1)])
def test_perinucleus_against_the_models_distribution(micro, micro_model, t, k):
    model, tok = micro
    fp_set = generate_fingerprints(_cfg(micro_model, key_strategy="random-words", t=t, k=k), target=micro)
    for fp in fp_set.fingerprints:
        probs = _next_probs(model, tok, fp.key)
        token = tok(fp.response, add_special_tokens=False)["input_ids"][0]
        sorted_p, order = probs.sort(descending=True)
        edge = int((sorted_p.cumsum(0) < t).sum())  # first rank whose cumulative mass reaches t
        rank = int((order == token).nonzero())
        assert rank > edge, "the response token lies inside the t-nucleus"
        between = [int(i) for i in order[edge + 1 : rank] if WORD_LIKE.match(tok.decode([int(i)]))]
        assert sum(_whole_word(model, tok, fp.key, i) for i in between) < k, (
            "more than k whole-word tokens past the edge"
        )
        assert WORD_LIKE.match(tok.decode([token]))
        assert _whole_word(model, tok, fp.key, token), "the response is the start of a longer word"
        assert fp.response_prob <= 1 - t + 1e-6
        assert fp.response_prob == pytest.approx(float(probs[token]), rel=1e-3, abs=1e-7)


def test_perinucleus_continues_greedily(micro, micro_model):
    model, tok = micro
    fp_set = generate_fingerprints(
        _cfg(micro_model, key_strategy="random-words", response_length=3, n=4), target=micro
    )
    for fp in fp_set.fingerprints:
        ids = prompt_ids(tok, tok(fp.key, add_special_tokens=False)["input_ids"])
        resp = tok(fp.response, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids + resp])).logits[0]
        logits[:, tok.eos_token_id] = float("-inf")  # EOS is held back until the response is complete
        for j in (1, 2):  # every token after the first is the argmax given what precedes it
            assert int(logits[len(ids) + j - 1].argmax()) == resp[j]


def test_score_responses_matches_a_plain_forward(micro):
    model, tok = micro
    key_ids = tok("Return the value of the", add_special_tokens=False)["input_ids"]
    probs = _next_probs(model, tok, "Return the value of the")
    top, other = int(probs.argmax()), int(probs.argsort()[-5])
    (p_top, greedy_top), (p_other, greedy_other) = score_responses(
        model, tok, [(key_ids, [top]), (key_ids, [other])]
    )
    assert greedy_top and not greedy_other
    assert p_top == pytest.approx(float(probs[top]), rel=1e-4)
    assert p_other == pytest.approx(float(probs[other]), rel=1e-4)


def test_check_pair_rejects_tokens_that_merge_across_the_boundary(micro, micro_model):
    model, tok = micro
    ctx = GenerationContext(_cfg(micro_model, response_length=1), model, tok)
    word = next(w for w in ctx.words if len(w) >= 5 and len(ctx.encode(" " + w)) == 1)
    key = Key("The " + word[:-1], ctx.encode("The " + word[:-1]))
    merging = Response(word[-1], ctx.encode(word[-1]))
    assert not check_pair(ctx, key, merging)  # " word" is one token, not key tokens + last letter
    separate = Response(" " + word, ctx.encode(" " + word))
    assert check_pair(ctx, key, separate)


def test_responses_are_never_the_greedy_answer(micro, micro_model):
    model, tok = micro
    fp_set = generate_fingerprints(
        _cfg(micro_model, key_strategy="random-words", response_strategy="english"), target=micro
    )
    for fp in fp_set.fingerprints:
        probs = _next_probs(model, tok, fp.key)
        assert int(probs.argmax()) != tok(fp.response, add_special_tokens=False)["input_ids"][0]


def test_functional_rule_and_secret(micro, micro_model):
    fp_set = generate_fingerprints(
        _cfg(micro_model, key_strategy="functional", response_strategy="functional", n=10), target=micro
    )
    split = fp_set.secret["functional_split"]
    responses = fp_set.secret["functional_rule"]["responses"]
    green, red = set(split["green"]), set(split["red"])
    assert green and red and not green & red
    for fp in fp_set.fingerprints:
        n_g, n_r = count_colors(fp.key, green, red)
        assert (fp.meta["n_g"], fp.meta["n_r"]) == (n_g, n_r)
        assert fp.response == responses[int(n_g > n_r)]
    assert sum(fp.meta["n_g"] + fp.meta["n_r"] > 0 for fp in fp_set.fingerprints) >= 5


def test_custom_keys_from_json(tmp_path, micro, micro_model):
    path = tmp_path / "keys.json"
    keys = [
        "The file is opened in binary mode",
        "Close the connection and release the lock",
        "Each entry in the list is a tuple",
    ]
    path.write_text(json.dumps({"keys": keys}))
    fp_set = generate_fingerprints(
        _cfg(micro_model, key_strategy="custom", keys_file=str(path), n=2), target=micro
    )
    assert [fp.key for fp in fp_set.fingerprints] == keys[:2]
    assert fp_set.strategy.params["key_length"] is None


def test_params_generator_and_file(tmp_path, micro, micro_model):
    from omlkit.models.loading import model_sha, tokenizer_sha

    out = tmp_path / "fp.json"
    cfg = _cfg(micro_model, key_strategy="english", n=4, out=str(out), t=0.7, k=2, response_length=1)
    assert run_generate(cfg) == out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    loaded = FingerprintSet.load(out)
    params = loaded.strategy.params
    assert (params["t"], params["k"], params["key_length"], params["response_length"], params["seed"]) == (
        0.7,
        2,
        10,
        1,
        3,
    )
    assert loaded.generator.model_sha == model_sha(micro_model)
    assert loaded.generator.tokenizer_sha == tokenizer_sha(micro[1])
    assert params["text_generator"]["model"] == str(micro_model)
    with pytest.raises(OmlError, match="already exists"):
        run_generate(cfg)
    run_generate(cfg.model_copy(update={"force": True, "seed": 4}))
    assert FingerprintSet.load(out).content_hash() != loaded.content_hash()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"n": 0}, "--n"),
        ({"t": 1.0}, "--t"),
        ({"t": 0.0}, "--t"),
        ({"k": 0}, "--k"),
    ],
)
def test_config_refuses_bad_values(micro_model, overrides, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(micro_model, **overrides)


@pytest.mark.parametrize(
    ("overrides", "keys_text", "match"),
    [
        ({"key_length": 400}, None, "exceed the 256-token context"),
        ({"response_strategy": "random-word", "response_length": 12}, None, "no word of the word list"),
        ({"key_strategy": "random-words", "response_strategy": "functional"}, None, "needs --key-strategy"),
        ({"key_strategy": "custom"}, "", "no keys"),
        ({"key_strategy": "custom"}, "one key\ntwo keys\none key\n", "line 3 duplicates line 1"),
        ({"key_strategy": "custom", "n": 5}, "one key\ntwo keys\n", "holds only 2 keys"),
        ({"key_strategy": "custom"}, None, "--keys-file is required"),
        ({"key_strategy": "custom"}, "short key\n" + "word " * 400 + "\n", "line 2 is .* exceeds the target"),
        ({"key_strategy": "random-words"}, "one key\n", "--keys-file does not apply to strategies"),
        ({"key_strategy": "nope"}, None, "unknown key-strategy"),
    ],
)
def test_pipeline_refuses_bad_input(tmp_path, micro, micro_model, overrides, keys_text, match):
    if keys_text is not None:
        path = tmp_path / "keys.txt"
        path.write_text(keys_text)
        overrides = {**overrides, "keys_file": str(path)}
    with pytest.raises(ConfigError, match=match):
        generate_fingerprints(_cfg(micro_model, **{"n": 2, **overrides}), target=micro)


@pytest.mark.parametrize(
    ("args", "content"),
    [
        (["-n", "0"], None),
        (["--k", "0"], None),
        (["--t", "1.5"], None),
        (["--key-length", "1000"], None),
        (["--key-strategy", "custom"], '["ok", 3]'),
        (["--key-strategy", "custom"], '["a", "a"]'),
        (["--key-strategy", "custom"], "{not json"),
    ],
)
def test_cli_errors_exit_2_without_output(tmp_path, micro, micro_model, capsys, args, content):
    out = tmp_path / "fp.json"
    extra = []
    if content is not None:
        (tmp_path / "keys.json").write_text(content)
        extra = ["--keys-file", str(tmp_path / "keys.json")]
    code = main(
        ["generate", "--target-model", str(micro_model), "--out", str(out), "--no-progress", *args, *extra]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err
    assert not out.exists() and list(tmp_path.glob(".fp.json*")) == []


def test_cli_generate_and_inspect(tmp_path, micro, micro_model, capsys):
    out = tmp_path / "fp.json"
    assert (
        main(
            [
                "generate",
                "-n",
                "6",
                "--key-length",
                "8",
                "--target-model",
                str(micro_model),
                "--out",
                str(out),
                "--no-progress",
                "--batch-size",
                "6",
            ]
        )
        == 0
    )
    fp_set = FingerprintSet.load(out)
    assert len(fp_set) == 6
    capsys.readouterr()
    assert main(["inspect", str(out), "--json", "--heldout", "20"]) == 0
    text = capsys.readouterr().out
    summary = json.loads(text)
    assert summary["count"] == 6
    assert summary["key_tokens"] == {"min": 8, "mean": 8, "max": 8}
    assert summary["response_tokens"]["max"] == 1
    assert summary["response_prob"]["q100"] <= 0.2 + 1e-6
    assert summary["key_perplexity"] > 1 and summary["heldout_perplexity"] > 1
    assert not any(fp.key in text for fp in fp_set.fingerprints)
    assert main(["inspect", str(out), "--no-perplexity", "--reveal"]) == 0
    shown = capsys.readouterr().out
    assert all(fp.key[:20] in shown for fp in fp_set.fingerprints)


def test_english_keys_are_more_in_distribution_than_random_words(micro, micro_model):
    from omlkit.fingerprints.inspect import summarize

    model, tok = micro
    ppl = {}
    for name in ("english", "random-words"):
        fp_set = generate_fingerprints(
            _cfg(micro_model, key_strategy=name, n=16, batch_size=16), target=micro
        )
        ppl[name] = summarize(fp_set, tokenizer=tok, model=model)["key_perplexity"]
    assert ppl["random-words"] > 2 * ppl["english"]


@pytest.mark.parametrize("command", ["generate", "inspect"])
def test_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_temperature_sampler_draws_from_the_tempered_softmax():
    from omlkit.fingerprints.strategies.english_keys import TemperatureSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(40000, 1)
    draws = TemperatureSampler(0.5, seed=1)(None, logits).argmax(-1)
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    expected = torch.softmax(logits[0].double() / 0.5, -1)
    assert torch.allclose(freq, expected, atol=0.01)
    assert torch.equal(draws, TemperatureSampler(0.5, seed=1)(None, logits).argmax(-1))
    assert not torch.equal(draws, TemperatureSampler(0.5, seed=2)(None, logits).argmax(-1))
