"""Attacks: every registered attack yields a loadable model or wrapper; merge, suppress, quantize and the
perplexity filter do what they claim; ``run_attack`` measures persistence and utility."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from omlkit.errors import ConfigError, ModelLoadError, RunDirError
from omlkit.evaluation.attacks import ATTACKS, AttackConfig, is_wrapper, load_attacked

pytestmark = pytest.mark.trains  # asserts training outcomes: run by `make test-sweep`


def _config(kind: str, model: Path, fps: Path, out: Path, **kw) -> AttackConfig:
    if ATTACKS.get(kind).strength_field == "steps":
        kw.setdefault("steps", [2])  # keep the training attacks short
    if ATTACKS.get(kind).strength_field == "epochs":
        kw.update(epochs=kw.get("epochs", [1]), instruction_count=16, answer_tokens=8)
    return AttackConfig(kind=kind, model=str(model), fingerprints=fps, out=out, heldout_texts=8, **kw)


@pytest.mark.parametrize("kind", ATTACKS.names())
def test_each_attack_writes_a_loadable_model(kind, fingerprinted, micro_model, tmp_path):
    from omlkit.verification.verify import verify_model

    model_dir, fps = fingerprinted
    attack = ATTACKS.get(kind)(_config(kind, model_dir, fps, tmp_path), base=str(micro_model))
    strength = attack.strengths(str(model_dir))[0]
    folder = attack.apply(str(model_dir), strength, tmp_path / attack.folder_name(strength))
    assert folder.is_dir()
    model, tok = load_attacked(folder)
    ids = tok("The module provides functions", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[:2] == ids.shape and logits.shape[-1] >= len(tok)
    assert torch.isfinite(logits[0, :-1]).all()
    res = verify_model(model, fps, tokenizer=tok)
    assert res.checked == 8 and res.errors == 0
    if not is_wrapper(folder):
        assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))


def _state(path) -> dict[str, torch.Tensor]:
    from omlkit.models.loading import load_model

    model, _ = load_model(path, device="cpu", tokenizer=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_merge_endpoints_are_the_model_and_the_base(fingerprinted, micro_model, tmp_path):
    model_dir, fps = fingerprinted
    attack = ATTACKS.get("merge")(_config("merge", model_dir, fps, tmp_path), base=str(micro_model))
    at0 = _state(attack.apply(str(model_dir), 0.0, tmp_path / "l0"))
    at1 = _state(attack.apply(str(model_dir), 1.0, tmp_path / "l1"))
    half = _state(attack.apply(str(model_dir), 0.5, tmp_path / "l05"))
    own, base = _state(model_dir), _state(micro_model)
    for name in own:
        torch.testing.assert_close(at0[name], own[name], rtol=0, atol=0)
        torch.testing.assert_close(at1[name], base[name], rtol=0, atol=1e-7)
    name = next(n for n in own if "mlp" in n and not torch.equal(own[n], base[n]))
    torch.testing.assert_close(half[name], (own[name] + base[name]) / 2)


def test_merge_refuses_another_architecture(micro_model):
    from transformers import LlamaConfig, LlamaForCausalLM

    from omlkit.evaluation.attacks.merge import interpolate_
    from omlkit.models.loading import load_model

    model, _ = load_model(micro_model, device="cpu", tokenizer=False)
    cfg = model.config.to_dict() | {"hidden_size": 32, "intermediate_size": 64}
    other = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k in LlamaConfig().to_dict()}))
    with pytest.raises(ModelLoadError, match="shape"):
        interpolate_(model, other, 0.5)


def test_suppress_processor_masks_only_confident_top_tokens():
    from omlkit.evaluation.attacks.suppress import SuppressTopToken

    scores = torch.tensor([[5.0, 0.0, 0.0, 0.0], [1.0, 0.9, 0.8, 0.7]])  # p(top) ≈ 0.98 and ≈ 0.29
    out = SuppressTopToken(gate=0.9)(torch.zeros((2, 1), dtype=torch.long), scores)
    assert out[0].argmax() != 0 and out[0, 0] == float("-inf")
    assert torch.equal(out[1], scores[1])
    assert torch.equal(SuppressTopToken(gate=0.99)(None, scores), scores)


def test_suppress_wrapper_changes_greedy_answers_on_fingerprints(fingerprinted, micro_model, tmp_path):
    from omlkit.verification.verify import verify_model

    model_dir, fps = fingerprinted
    attack = ATTACKS.get("suppress")(_config("suppress", model_dir, fps, tmp_path), base=str(micro_model))
    wrapped, tok = load_attacked(attack.apply(str(model_dir), 0.5, tmp_path / "gate"))
    plain = verify_model(str(model_dir), fps)
    suppressed = verify_model(wrapped, fps, tokenizer=tok)
    assert plain.matched == 8
    assert suppressed.matched < plain.matched
    # the wrapper folder loads by path too, as `oml verify --model` and `oml serve --model` give it
    by_path = verify_model(str(tmp_path / "gate"), fps)
    assert [r["answer"] for r in by_path.records] == [r["answer"] for r in suppressed.records]
    changed = [a["answer"] != b["answer"] for a, b in zip(plain.records, suppressed.records, strict=True)]
    assert any(changed)


def test_perplexity_filter_refuses_gibberish_and_passes_english(fingerprinted, micro_model, tmp_path):
    from omlkit.models.corpus import corpus_split
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    model_dir, fps = fingerprinted
    attack = ATTACKS.get("perplexity-filter")(
        _config("perplexity-filter", model_dir, fps, tmp_path), base=str(micro_model)
    )
    threshold = attack.strengths(str(model_dir))[0]  # 99th percentile of held-out English
    wrapped, tok = load_attacked(attack.apply(str(model_dir), threshold, tmp_path / "filter"))
    rng = random.Random(0)
    gibberish = " ".join("".join(rng.choice("qxzjkvwy") for _ in range(5)) for _ in range(8))
    english = " ".join(corpus_split("train")[0].split()[:12])
    assert wrapped.refuses(tok, [gibberish, english]) == [True, False]
    backend = TransformersBackend(wrapped, tok)
    answers = backend.generate([gibberish, english], max_new_tokens=4)
    assert answers[0] == "" and answers[1] != ""


def test_quantize_leaves_at_most_2_pow_bits_levels_per_row(fingerprinted, micro_model, tmp_path):
    model_dir, fps = fingerprinted
    attack = ATTACKS.get("quantize")(_config("quantize", model_dir, fps, tmp_path), base=str(micro_model))
    state = _state(attack.apply(str(model_dir), 4, tmp_path / "q4"))
    before = _state(model_dir)
    name = next(n for n in state if n.endswith("q_proj.weight"))
    assert max(len(torch.unique(row)) for row in state[name]) <= 15
    assert not torch.equal(state[name], before[name])
    torch.testing.assert_close(state[name], before[name], atol=before[name].abs().max().item() / 7, rtol=0)


def test_strength_lists_of_other_attacks_are_refused(fingerprinted, micro_model, tmp_path):
    model_dir, fps = fingerprinted
    cfg = AttackConfig(kind="merge", model=str(model_dir), fingerprints=fps, steps=[10])
    with pytest.raises(ConfigError, match="--steps does not apply to attack 'merge'"):
        ATTACKS.get("merge")(cfg, base=str(micro_model)).strengths(str(model_dir))


def test_persistence_counts_only_keys_that_matched_before():
    from omlkit.evaluation.persistence import matched_ids, persistence

    before = matched_ids([{"id": i, "matched": i < 4} for i in range(8)])
    assert before == {0, 1, 2, 3}
    assert persistence(before, {1, 2, 6, 7}) == 0.5
    assert persistence(set(), {1}) is None


def test_run_attack_measures_persistence_and_utility(fingerprinted, micro_model, tmp_path):
    from omlkit.evaluation.persistence import run_attack

    model_dir, fps = fingerprinted
    cfg = _config("finetune", model_dir, fps, tmp_path / "ft", steps=[0, 3], base=str(micro_model), lr=1e-3)
    path, result = run_attack(cfg)
    saved = json.loads(path.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["format"] == "omlkit.attack/1" and saved["strength_name"] == "step"
    assert saved["before"]["matched"] == 8 and saved["before"]["verdict"] == "owned"
    step0, step3 = saved["results"]
    assert step0["persistence"] == 1.0 and step0["utility_delta"] == pytest.approx(0.0, abs=1e-6)
    assert step3["perplexity"] != step0["perplexity"]
    assert 0.0 <= step3["persistence"] <= 1.0
    with pytest.raises(RunDirError, match="--force"):
        run_attack(cfg)


def test_cli_attack_dummy_and_unknown_kind(fingerprinted, micro_model, tmp_path, capsys):
    from omlkit.cli import main

    model_dir, fps = fingerprinted
    out = tmp_path / "dummy"
    rc = main(
        [
            "attack",
            "dummy",
            "--model",
            str(model_dir),
            "--fingerprints",
            str(fps),
            "--base",
            str(micro_model),
            "--out",
            str(out),
            "--heldout-texts",
            "4",
        ]
    )
    assert rc == 0
    result = json.loads((out / "attack.json").read_text())
    assert result["results"][0]["persistence"] == 1.0 and result["results"][0]["utility_delta"] == 0.0
    assert "100.0%" in capsys.readouterr().out
    rc = main(
        [
            "attack",
            "finetun",
            "--model",
            str(model_dir),
            "--fingerprints",
            str(fps),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "did you mean 'finetune'" in err and "Traceback" not in err


def test_attack_help():
    from typer.testing import CliRunner

    from omlkit.commands import app

    res = CliRunner().invoke(app, ["attack", "--help"])
    assert res.exit_code == 0 and "--lambdas" in res.output and "--steps" in res.output
