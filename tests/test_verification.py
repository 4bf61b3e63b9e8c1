"""Verification: matching, the ownership test, every backend, verify_fingerprints, resume, `oml verify`."""

from __future__ import annotations

import json
import stat

import pytest
from scipy import stats

from _helpers import ANSWER_WORDS as WORDS
from _helpers import make_set, self_fingerprints
from omlkit.errors import ConfigError, FingerprintFileError, RunDirError
from omlkit.fingerprints.fingerprint_set import Generator
from omlkit.fingerprints.matching import first_token_rank, response_matches
from omlkit.verification.backends import BACKENDS, Answer, Backend
from omlkit.verification.backends.dummy import DummyBackend
from omlkit.verification.ownership import binomial_upper_bound, ownership_test, poisson_binomial_sf
from omlkit.verification.verify import (
    default_max_new_tokens,
    select_fingerprints,
    verify_fingerprints,
    verify_model,
)

# -- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "answer", "mode", "expected"),
    [
        ("apple", "apple", "exact", True),
        (" apple", "apple pie", "exact", True),
        ("apple", " apple. And more", "exact", True),
        ("apple", "applesauce", "exact", False),
        ("apple", "applesauce", "prefix", True),
        ("apple", "an apple", "exact", False),
        ("apple", "an apple", "prefix", False),
        ("end.", "end.x", "exact", True),  # the response ends in punctuation: any continuation is a boundary
        (" ハリネズミ", "ハリネズミネ", "exact", True),  # Japanese puts no spaces between words
        ("ハリネズミ", "ハリネ", "exact", False),
        ("über", "überall", "exact", False),  # Latin letters beyond ASCII still join words
        ("apple", None, "exact", False),
        ("apple", None, "prefix", False),
    ],
)
def test_response_matches(response, answer, mode, expected):
    assert response_matches(response, answer, mode) is expected


def test_response_matches_refuses_unknown_mode():
    with pytest.raises(ValueError, match="match mode"):
        response_matches("a", "a", "fuzzy")


def test_first_token_rank():
    assert first_token_rank([" the", " apple", "x"], "apple") == 1
    assert first_token_rank([" the", " apple"], " the") == 0
    assert first_token_rank([" the", " apples"], "apple") is None
    assert first_token_rank(None, "apple") is None


# -- ownership test ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "n", "p"), [(0, 10, 0.2), (3, 10, 0.2), (10, 10, 0.2), (7, 64, 0.05), (40, 256, 0.2)]
)
def test_poisson_binomial_equal_rates_is_binomial(m, n, p):
    assert poisson_binomial_sf([p] * n, m) == pytest.approx(stats.binom.sf(m - 1, n, p), rel=1e-9, abs=1e-300)


def test_poisson_binomial_hand_values():
    assert poisson_binomial_sf([0.5, 0.5], 1) == pytest.approx(0.75)
    assert poisson_binomial_sf([0.2, 0.5], 2) == pytest.approx(0.1)
    # P(X >= 1) = 1 - 0.9 * 0.8 * 0.7
    assert poisson_binomial_sf([0.1, 0.2, 0.3], 1) == pytest.approx(1 - 0.9 * 0.8 * 0.7)
    # P(X >= 2) over (0.1, 0.2, 0.3): pairs and the triple
    both = 0.1 * 0.2 * 0.7 + 0.1 * 0.8 * 0.3 + 0.9 * 0.2 * 0.3 + 0.1 * 0.2 * 0.3
    assert poisson_binomial_sf([0.1, 0.2, 0.3], 2) == pytest.approx(both)
    assert poisson_binomial_sf([0.3], 2) == 0.0


def test_ownership_verdict_threshold():
    # 16 of 16 keys at null rate 0.2: 0.2**16 = 6.6e-12 < 1e-9 -> owned; 12 of 16 is not enough
    assert ownership_test([0.2] * 16, 16).owned
    assert ownership_test([0.2] * 16, 16).p_value == pytest.approx(0.2**16)
    weak = ownership_test([0.2] * 16, 12)
    assert not weak.owned and weak.p_value == pytest.approx(stats.binom.sf(11, 16, 0.2))
    assert not ownership_test([0.2] * 16, 0).owned
    assert weak.as_dict()["verdict"] == "not owned"


# -- fingerprint sets ----------------------------------------------------------------------------


def dummy_pairs(n: int = 40) -> list[tuple[str, str]]:
    return [
        (f"key number {i} about {WORDS[i % len(WORDS)]}", WORDS[(i * 7 + 3) % len(WORDS)]) for i in range(n)
    ]


# -- registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS.names())
def test_every_backend_is_a_documented_backend(name):
    cls = BACKENDS.get(name)
    assert issubclass(cls, Backend)
    assert cls.__doc__ and cls.generate.__doc__
    assert not getattr(cls, "__abstractmethods__", None), f"{name} leaves abstract methods unimplemented"


def test_registry_knows_the_four_backends():
    assert {"transformers", "http", "vllm", "dummy"} <= set(BACKENDS.names())


def test_vllm_backend_refuses_clearly_when_unavailable():
    from omlkit.verification.backends.vllm_backend import VllmBackend, vllm_available

    ok, why = vllm_available()
    if ok:
        pytest.skip("vllm and a GPU are present")
    with pytest.raises(ConfigError, match="vllm unavailable"):
        VllmBackend("omlkit-micro")
    assert why


# -- dummy backend and verify_fingerprints --------------------------------------------------------


def test_verify_with_dummy_backend_owned_and_not_owned():
    pairs = dummy_pairs()
    fp_set = make_set(pairs)
    owner = DummyBackend(dict(pairs))
    res = verify_fingerprints(fp_set, owner)
    assert (res.checked, res.matched, res.errors, res.accuracy) == (40, 40, 0, 1.0)
    assert res.verdict.owned and res.verdict.p_value == pytest.approx(0.2**40)
    assert [r["id"] for r in res.records] == list(range(40))
    assert set(res.records[0]) >= {"id", "matched", "answer", "error"}

    stranger = DummyBackend({k: "something else" for k, _ in pairs})
    res = verify_fingerprints(fp_set, stranger)
    assert res.matched == 0 and not res.verdict.owned


def test_verify_counts_partial_matches_and_system_prompt_and_chat():
    pairs = dummy_pairs(20)
    answers = {k: (r if i % 2 == 0 else "nope") for i, (k, r) in enumerate(pairs)}
    backend = DummyBackend(answers)
    res = verify_fingerprints(make_set(pairs), backend, system_prompt="You are helpful.")
    assert res.matched == 10 and res.checked == 20
    assert res.verdict.p_value == pytest.approx(stats.binom.sf(9, 20, 0.2))
    assert backend.calls[0].startswith("You are helpful.\n\n")
    backend.calls.clear()
    res_chat = verify_fingerprints(make_set(pairs), backend, system_prompt="Sys", chat=True)
    assert res_chat.matched == 10 and backend.calls[0] == pairs[0][0]  # the user message is the bare key


def test_failed_keys_are_reported_and_left_out_of_the_test():
    pairs = dummy_pairs(10)
    backend = DummyBackend(dict(pairs), fail={pairs[3][0], pairs[7][0]})
    res = verify_fingerprints(make_set(pairs), backend)
    assert res.errors == 2 and res.checked == 8 and res.matched == 8
    failed = [r for r in res.records if r["error"]]
    assert [r["id"] for r in failed] == [3, 7] and all(
        r["answer"] is None and not r["matched"] for r in failed
    )


def test_sample_draws_a_seeded_subset():
    fp_set = make_set(dummy_pairs(40))
    a = [fp.id for fp in select_fingerprints(fp_set, 10, seed=1)]
    assert a == [fp.id for fp in select_fingerprints(fp_set, 10, seed=1)] and len(set(a)) == 10
    assert a != [fp.id for fp in select_fingerprints(fp_set, 10, seed=2)]
    backend = DummyBackend(dict(dummy_pairs(40)))
    res = verify_fingerprints(fp_set, backend, sample=10, seed=1)
    assert [r["id"] for r in res.records] == a and len(backend.calls) == 10
    with pytest.raises(ConfigError, match="--sample"):
        verify_fingerprints(fp_set, backend, sample=41)


def test_within_mode_finds_a_response_after_a_detour_and_calibrates_on_the_null_model():
    pairs = dummy_pairs(10)
    # even keys answer the response after a detour, odd keys inside a longer word (no match)
    detoured = {k: (f"well, {r} indeed" if i % 2 == 0 else f"x{r.strip()}y")
                for i, (k, r) in enumerate(pairs)}
    fp_set = make_set(pairs)
    exact = verify_fingerprints(fp_set, DummyBackend(detoured), match="exact")
    assert exact.matched == 0
    res = verify_fingerprints(fp_set, DummyBackend(detoured), match="within", null_model=DummyBackend({}))
    assert res.matched == 5 and res.settings["within"] == 8 and res.settings["null_matched"] == 0
    assert res.settings["max_new_tokens"] == default_max_new_tokens(fp_set.fingerprints) + 8
    # a model never fingerprinted that says the same answers gives no evidence
    same = verify_fingerprints(fp_set, DummyBackend(detoured), match="within",
                               null_model=DummyBackend(detoured))
    assert same.matched == 5 and same.verdict.p_value == 1.0 and not same.verdict.owned
    assert res.null_ids == frozenset() and len(same.null_ids) == 5 and exact.null_ids is None
    # an earlier result's null matches are reused as they are: the null model is not asked again
    unasked = DummyBackend({})
    again = verify_fingerprints(fp_set, DummyBackend(detoured), match="within", null_model=unasked,
                                null_ids=same.null_ids)
    assert unasked.calls == [] and again.verdict.p_value == 1.0 and again.null_ids == same.null_ids
    with pytest.raises(ConfigError, match="--within"):
        verify_fingerprints(fp_set, DummyBackend(detoured), match="within", within=0)


def test_rank_mode_with_dummy():
    pairs = dummy_pairs(10)
    # the answer's first word is the default's for odd keys -> rank 1 (second candidate) for those
    answers = {k: (r if i % 2 == 0 else "filler") for i, (k, r) in enumerate(pairs)}
    fp_set = make_set(pairs)
    null = DummyBackend({}, default="x")
    asked = DummyBackend(answers, default="x")
    res1 = verify_fingerprints(fp_set, asked, match="rank", rank_k=1, null_model=null)
    assert res1.matched == 5 and all(r["rank"] == 0 for r in res1.records if r["matched"])
    assert res1.settings["null_matched"] == 0
    # a key the never-fingerprinted model matches too is no evidence, however many match
    everything = DummyBackend(dict(pairs))
    res2 = verify_fingerprints(fp_set, everything, match="rank", rank_k=1, null_model=everything)
    assert res2.matched == 10 and res2.verdict.p_value == 1.0 and not res2.verdict.owned
    with pytest.raises(ConfigError, match="--null-model"):
        verify_fingerprints(fp_set.model_copy(update={"generator": Generator()}), null, match="rank")
    with pytest.raises(ConfigError, match="rank-k"):
        verify_fingerprints(fp_set, DummyBackend(answers), match="rank", rank_k=0)
    with pytest.raises(ConfigError, match="--match"):
        verify_fingerprints(fp_set, DummyBackend(answers), match="fuzzy")
    multi = fp_set.model_copy(
        update={"strategy": fp_set.strategy.model_copy(update={"params": {"response_length": 3}})}
    )
    with pytest.raises(FingerprintFileError, match="1-token"):
        verify_fingerprints(multi, DummyBackend(answers), match="rank")


@pytest.mark.parametrize(("hits", "n"), [(0, 8), (3, 256), (31, 64), (63, 64)])
def test_calibration_bound_is_clopper_pearson(hits, n):
    expected = stats.beta.ppf(1 - 1e-3, hits + 1, n - hits)
    assert binomial_upper_bound(hits, n, 1e-3) == pytest.approx(expected, rel=1e-6)
    assert binomial_upper_bound(n, n) == 1.0


def test_base_backend_without_logits_refuses_rank():
    class TextOnly(Backend):
        """Answers every prompt with "a"."""

        def generate(self, prompts, max_new_tokens):
            """Always "a"."""
            return ["a"] * len(prompts)

    with pytest.raises(ConfigError, match="cannot rank"):
        verify_fingerprints(make_set(dummy_pairs(3)), TextOnly(), match="rank", null_model=DummyBackend({}))
    assert TextOnly().answer(["p"], 1) == [Answer("a")]


# -- output files and resume ---------------------------------------------------------------------


def test_output_files_are_private_and_a_partial_run_resumes(tmp_path):
    pairs = dummy_pairs(30)
    fp_set = make_set(pairs)
    flaky = {pairs[i][0] for i in (2, 11, 29)}
    first = DummyBackend(dict(pairs), fail=flaky)
    out = tmp_path / "verify"
    res = verify_fingerprints(fp_set, first, out=out, chunk_size=7)
    assert res.errors == 3
    lines = [json.loads(x) for x in (out / "verify.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == list(range(30)) and sum(1 for r in lines if r["error"]) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["errors"] == 3 and summary["ownership"]["matched"] == 27
    for name in ("verify.jsonl", "summary.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    text = (out / "verify.jsonl").read_text() + (out / "summary.json").read_text()
    assert not any(k in text for k, _ in pairs), "keys must never be written to the outputs"

    second = DummyBackend(dict(pairs))
    res2 = verify_fingerprints(fp_set, second, out=out)
    assert sorted(second.calls) == sorted(flaky)  # only the keys that failed are asked again
    assert res2.errors == 0 and res2.matched == 30 and res2.verdict.owned

    third = DummyBackend(dict(pairs))
    verify_fingerprints(fp_set, third, out=out)
    assert third.calls == []  # a complete result is not asked again


def test_resume_refuses_other_settings_unless_forced(tmp_path):
    pairs = dummy_pairs(6)
    fp_set = make_set(pairs)
    verify_fingerprints(fp_set, DummyBackend(dict(pairs)), out=tmp_path)
    with pytest.raises(RunDirError, match="match"):
        verify_fingerprints(fp_set, DummyBackend(dict(pairs)), out=tmp_path, match="prefix")
    other = make_set(pairs, null_prob=0.1)
    with pytest.raises(RunDirError, match="fingerprints_sha256"):
        verify_fingerprints(other, DummyBackend(dict(pairs)), out=tmp_path)
    again = DummyBackend(dict(pairs))
    assert verify_fingerprints(fp_set, again, out=tmp_path, alpha=1e-3).verdict.alpha == 1e-3
    assert again.calls == []  # another alpha reuses the answers: keys are not spent twice
    forced = DummyBackend(dict(pairs))
    verify_fingerprints(fp_set, forced, out=tmp_path, match="prefix", force=True)
    assert len(forced.calls) == 6


def test_interrupted_run_keeps_finished_chunks(tmp_path):
    pairs = dummy_pairs(20)
    fp_set = make_set(pairs)

    class Crashing(DummyBackend):
        def generate(self, prompts, max_new_tokens):
            if len(self.calls) >= 10:
                raise KeyboardInterrupt
            return super().generate(prompts, max_new_tokens)

    with pytest.raises(KeyboardInterrupt):
        verify_fingerprints(fp_set, Crashing(dict(pairs)), out=tmp_path, chunk_size=5)
    assert not json.loads((tmp_path / "summary.json").read_text())["complete"]
    rest = DummyBackend(dict(pairs))
    res = verify_fingerprints(fp_set, rest, out=tmp_path, chunk_size=5)
    assert len(rest.calls) == 10 and res.matched == 20


# -- transformers backend on the micro model ------------------------------------------------------


@pytest.fixture(scope="module")
def micro_backend(micro_model):
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    return TransformersBackend(str(micro_model), batch_size=8)


def test_batched_left_padded_equals_one_at_a_time(micro_backend):
    tok = micro_backend.tokenizer
    texts = [
        "The",
        "Return the value of",
        "A list of",
        "This module provides functions for working with",
        "If the",
        "Raise an exception when the",
        "x",
        "Create a new",
        "The default is",
        "It is",
        "When called with no arguments, return the",
        "Format",
    ]
    prompts = [tok(t)["input_ids"] for t in texts]
    assert len({len(p) for p in prompts}) > 4  # really different lengths, so padding is exercised
    batched = micro_backend.generate_token_ids(prompts, 6)
    single = [micro_backend.generate_token_ids([p], 6)[0] for p in prompts]
    assert batched == single
    # and one-at-a-time agrees with transformers' own greedy generate (no padding involved)
    import torch

    model = micro_backend.model
    for p, ours in zip(prompts[:3], single[:3], strict=True):
        ref = model.generate(
            torch.tensor([p]), max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id
        )[0, len(p) :].tolist()
        eos = tok.eos_token_id
        assert ours == (ref[: ref.index(eos)] if eos in ref else ref)


def test_transformers_backend_refuses_bad_prompts_per_prompt(micro_backend):
    too_long = [1] * (micro_backend.max_length + 1)
    answers = micro_backend.answer_ids([[], too_long, micro_backend.encode("The")], 4)
    assert answers[0].error == "empty prompt" and "context length" in answers[1].error
    assert answers[2].ok and answers[2].error is None


def test_transformers_rank_agrees_with_greedy(micro_backend):
    prompts = [micro_backend.encode(t) for t in ("The", "Return the", "A list of")]
    tops = micro_backend.top_first_tokens_ids(prompts, 5)
    firsts = micro_backend.generate_token_ids(prompts, 1)
    tok = micro_backend.tokenizer
    for top, first in zip(tops, firsts, strict=True):
        assert len(top) == 5 and top[0] == tok.decode(first[:1])


def test_verify_finds_the_models_own_continuations(micro_backend):
    own, random_words = self_fingerprints(micro_backend, 24)
    res = verify_fingerprints(own, micro_backend)
    assert res.errors == 0 and res.matched == res.checked == len(own)
    assert res.verdict.owned  # >= 14 matches at null rate 0.2: p <= 0.2**14 = 1.6e-10
    neg = verify_fingerprints(random_words, micro_backend)
    assert neg.matched == 0 and not neg.verdict.owned
    ranked = verify_fingerprints(own, micro_backend, match="rank", rank_k=1, null_model=DummyBackend({}))
    n_tokens = {fp.id: fp.meta["response_tokens"] for fp in own.fingerprints}
    assert any(n == 1 for n in n_tokens.values())
    for r in ranked.records:  # a 1-token response is the greedy first token, so it ranks first
        assert r["matched"] is (n_tokens[r["id"]] == 1 or r["rank"] == 0)
        if n_tokens[r["id"]] == 1:
            assert r["rank"] == 0
    micro_backend.model.train()  # a model mid-training is decoded in eval mode and given back as it was
    via_model = verify_model(micro_backend.model, own, tokenizer=micro_backend.tokenizer)
    assert micro_backend.model.training
    micro_backend.model.eval()
    assert [r["answer"] for r in via_model.records] == [r["answer"] for r in res.records]


@pytest.mark.parametrize(
    ("system_prompt", "chat"), [(None, False), ("Be brief.", False), (None, True), ("Sys", True)]
)
def test_local_prompts_are_token_exact(micro_backend, system_prompt, chat):
    from omlkit.models.prompts import prompt_ids
    from omlkit.verification.verify import _prompts

    tok = micro_backend.tokenizer
    fps = make_set(dummy_pairs(4)).fingerprints
    expected = [
        prompt_ids(tok, tok(fp.key, add_special_tokens=False)["input_ids"], system_prompt, chat) for fp in fps
    ]
    assert _prompts(fps, micro_backend, system_prompt, chat) == expected


def test_fingerprints_for_another_tokenizer_are_refused(micro_backend):
    fp_set = make_set(dummy_pairs(3), tokenizer_sha="0123456789abcdef")
    with pytest.raises(FingerprintFileError, match="another tokenizer"):
        verify_fingerprints(fp_set, micro_backend)


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_help_smoke():
    from omlkit.cli import main

    for cmd in ("verify", "serve"):
        assert main([cmd, "--help"]) == 0


def test_cli_refuses_both_or_neither_target(tmp_path, capsys):
    from omlkit.cli import main

    path = make_set(dummy_pairs(2)).save(tmp_path / "fp.json")
    assert main(["verify", "--fingerprints", str(path)]) == 2
    assert main(["verify", "--fingerprints", str(path), "--model", "m", "--endpoint", "http://x"]) == 2
    assert "exactly one of --model or --endpoint" in capsys.readouterr().err


def test_cli_verify_local_model(micro_backend, micro_model, tmp_path, capsys):
    from omlkit.cli import main

    own, _ = self_fingerprints(micro_backend, 16, seed=3)
    path = own.save(tmp_path / "fp.json")
    out = tmp_path / "out"
    assert main(["verify", "--fingerprints", str(path), "--model", str(micro_model), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "owned" in printed and "not owned" not in printed
    assert not any(fp.key in printed for fp in own.fingerprints), "keys are printed only with --reveal"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["matched"] == len(own) and summary["ownership"]["verdict"] == "owned"
    assert (
        main(
            [
                "verify",
                "--fingerprints",
                str(path),
                "--model",
                str(micro_model),
                "--out",
                str(out),
                "--match",
                "prefix",
            ]
        )
        == 2
    )  # other settings in the same --out: refused
    assert (
        main(
            ["verify", "--fingerprints", str(path), "--model", str(micro_model), "--reveal", "--sample", "2"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert sum(fp.key[:20] in printed for fp in own.fingerprints) == 2


def test_greedy_decoding_ignores_the_models_shipped_generation_settings(micro):
    """A model whose generation config asks for sampling and a repetition penalty still decodes greedily:
    the decoder gives generate its settings in full."""
    import copy

    import torch

    from omlkit.models.decoding import greedy_batch
    from omlkit.models.logits import pad_batch, pad_id

    model, tok = micro
    prompts = [tok(t)["input_ids"] for t in ("The river", "In the morning the old", "A")]
    ids, mask = pad_batch(prompts, pad_id(tok), left=True)
    plain = greedy_batch(model, ids, mask, 6, pad_id(tok), [tok.eos_token_id]).ids
    odd = copy.deepcopy(model)
    odd.generation_config.do_sample, odd.generation_config.repetition_penalty = True, 50.0
    odd.generation_config.temperature = 5.0
    again = greedy_batch(odd, ids, mask, 6, pad_id(tok), [tok.eos_token_id]).ids
    assert torch.equal(plain, again)
    # and the first step is the argmax of one plain forward over the left-padded batch
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    first = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].argmax(-1)
    assert torch.equal(plain[:, 0], first)
