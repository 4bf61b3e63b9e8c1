"""Utility (perplexity delta, lm-eval fallback) and the system-prompt robustness table."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from omlkit.errors import ConfigError, RunDirError
from omlkit.evaluation.config import RobustnessConfig, UtilityConfig

pytestmark = pytest.mark.trains  # asserts training outcomes: run by `make test-sweep`


def test_perplexity_delta_of_the_base_against_itself_is_zero(micro_model, tmp_path):
    from omlkit.evaluation.utility import evaluate_utility

    cfg = UtilityConfig(
        model=str(micro_model), base=str(micro_model), benchmarks=False, heldout_texts=8, out=tmp_path
    )
    path, result = evaluate_utility(cfg)
    assert (
        path == tmp_path / "utility.json"
        and json.loads(path.read_text())["format"] == "omlkit.eval.utility/1"
    )
    ppl = result["perplexity"]
    assert ppl["delta"] == 0.0 and ppl["relative"] == 0.0 and ppl["model"] > 1.0 and ppl["n_texts"] == 8
    assert result["benchmarks"]["status"] == "skipped"
    with pytest.raises(RunDirError, match="--force"):
        evaluate_utility(cfg)


def test_fingerprinted_model_costs_perplexity(fingerprinted, micro_model, tmp_path):
    from omlkit.evaluation.utility import evaluate_utility

    model_dir, _ = fingerprinted
    cfg = UtilityConfig(
        model=str(model_dir), base=str(micro_model), benchmarks=False, heldout_texts=8, out=tmp_path
    )
    _, result = evaluate_utility(cfg)
    assert result["perplexity"]["delta"] == pytest.approx(
        result["perplexity"]["model"] - result["perplexity"]["base"]
    )
    assert result["perplexity"]["delta"] != 0.0


@pytest.mark.slow
def test_tiny_benchmarks_fall_back_to_perplexity_with_one_line(micro_model, tmp_path, capsys):
    """The real lm-eval path: here (offline, no tinyBenchmarks package) it must fall back; where it can
    run, it must report scores."""
    from omlkit.cli import main

    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "utility",
        "--model",
        str(micro_model),
        "--base",
        str(micro_model),
        "--tasks",
        "tinyArc",
        "--limit",
        "2",
        "--heldout-texts",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads((out / "utility.json").read_text())
    assert "Traceback" not in captured.err + captured.out
    assert result["perplexity"]["delta"] == 0.0
    bench = result["benchmarks"]
    if bench["status"] == "unavailable":
        msg = bench["message"]
        assert msg.startswith("tinyBenchmarks unavailable:") and "perplexity only" in msg and "\n" not in msg
        assert msg in captured.err
    else:
        assert bench["status"] == "ok" and bench["scores"]["tinyArc"]


def test_benchmark_failure_is_reported_not_raised(micro_model, monkeypatch):
    import lm_eval

    from omlkit.evaluation.utility import run_benchmarks
    from omlkit.models.loading import load_model

    def offline(**_kw):
        raise ConnectionError("Failed to resolve 'huggingface.co'\nsecond line")

    monkeypatch.setattr(lm_eval, "simple_evaluate", offline)
    model, tok = load_model(micro_model, device="cpu")
    outcome = run_benchmarks(model, tok, ["tinyArc"], limit=1)
    assert outcome.status == "unavailable" and outcome.scores == {}
    assert "ConnectionError" in outcome.message and "second line" not in outcome.message


def test_unknown_task_is_refused_with_a_suggestion():
    from omlkit.evaluation.utility import check_tasks

    with pytest.raises(ConfigError, match="did you mean tinyArc"):
        check_tasks(["tinyArk"])


def test_robustness_table_has_a_row_per_held_out_prompt_and_none(
    fingerprinted, micro_model, tmp_path, capsys
):
    from omlkit.cli import main
    from omlkit.insertion.augmentation import test_system_prompts

    model_dir, fps = fingerprinted
    argv = [
        "evaluate",
        "robustness",
        "--model",
        str(model_dir),
        "--model",
        str(micro_model),
        "--label",
        "fingerprinted",
        "--label",
        "base",
        "--fingerprints",
        str(fps),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    result = json.loads((tmp_path / "robustness.json").read_text())
    rows = result["rows"]
    assert len(rows) == 11 and rows[0]["prompt"] == "none" and rows[0]["system_prompt"] is None
    assert [r["system_prompt"] for r in rows[1:]] == test_system_prompts()
    none = rows[0]["results"]
    assert none["fingerprinted"]["accuracy"] == 1.0 and none["fingerprinted"]["verdict"] == "owned"
    assert none["base"]["matched"] == 0 and none["base"]["verdict"] == "not owned"
    assert all(r["results"]["fingerprinted"]["checked"] == 8 for r in rows)
    assert set(result["mean_heldout_accuracy"]) == {"fingerprinted", "base"}
    table = capsys.readouterr().out
    assert table.count("\n| test-") == 10 and "| none |" in table


def test_robustness_config_needs_one_label_per_model(tmp_path):
    with pytest.raises(ValidationError, match="one --label per --model"):
        RobustnessConfig(model=["a", "b"], label=["x"], fingerprints=tmp_path / "f.json")


def test_bare_model_without_out_is_refused(micro_model):
    from omlkit.evaluation.utility import evaluate_utility

    with pytest.raises(ConfigError, match="--out: required"):
        evaluate_utility(UtilityConfig(model=str(micro_model), benchmarks=False))


def test_evaluate_help():
    from typer.testing import CliRunner

    from omlkit.commands import app

    for sub in ("utility", "robustness"):
        res = CliRunner().invoke(app, ["evaluate", sub, "--help"])
        assert res.exit_code == 0 and "--model" in res.output


def test_instruction_check_is_zero_for_the_base_and_negative_for_a_damaged_copy(micro_model, omlkit_home):
    import torch

    from omlkit.evaluation.instructions import InstructionCheck, instructions
    from omlkit.models.loading import load_model

    assert instructions(20) == instructions(20) and len(set(instructions(20))) == 20
    model, tok = load_model(micro_model)
    check = InstructionCheck.for_base(model, tok, str(micro_model), n=20)
    assert check.delta(model, tok)["delta"] == pytest.approx(0.0, abs=1e-4)
    cached = InstructionCheck.for_base(model, tok, str(micro_model), n=20)  # read back from the cache
    assert cached.answers == check.answers and cached.base_score == pytest.approx(check.base_score)
    assert list((omlkit_home / "instructions").glob("*.json"))
    with torch.no_grad():
        for p in model.model.layers.parameters():
            p.add_(torch.randn_like(p) * p.std() * 0.5)
    assert check.delta(model, tok)["delta"] < -0.05
    assert InstructionCheck.for_base(model, tok, str(micro_model), n=0) is None
