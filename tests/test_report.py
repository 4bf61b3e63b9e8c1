"""``oml report``: report.md and PNG plots from small synthetic result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omlkit.errors import RunDirError
from omlkit.evaluation.report import MARKER, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _verdict(matched: int, checked: int) -> dict:
    owned = matched >= 5
    return {
        "checked": checked,
        "matched": matched,
        "accuracy": matched / checked,
        "p_value": 1e-15 if owned else 0.3,
        "verdict": "owned" if owned else "not owned",
    }


def make_run(root: Path, name: str, n: int, recovered: int, ppl_delta: float, attacks: bool = True) -> Path:
    """A run directory with the files `oml insert`, `oml evaluate` and `oml attack` write."""
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "status": "finished",
                "n_fingerprints": n,
                "recovered": recovered,
                "recovery": recovered / n,
                "global_step": 40,
                "train_loss": 0.01,
                "early_stop": "recovered",
            }
        )
    )
    (run / "eval" / "utility.json").write_text(
        json.dumps(
            {
                "format": "omlkit.eval.utility/1",
                "model": str(run / "model"),
                "base": "omlkit-micro",
                "perplexity": {
                    "model": 100.0 + ppl_delta,
                    "base": 100.0,
                    "delta": ppl_delta,
                    "relative": ppl_delta / 100,
                    "n_texts": 8,
                    "max_length": 256,
                },
                "benchmarks": {
                    "status": "unavailable",
                    "message": "tinyBenchmarks unavailable: offline; reporting held-out perplexity only",
                    "tasks": ["tinyArc"],
                    "limit": None,
                    "scores": {},
                },
            }
        )
    )
    prompts = [("none", None)] + [(f"test-{i}", f"You are helper {i}.") for i in range(1, 11)]
    rows = [
        {
            "prompt": p,
            "system_prompt": sp,
            "results": {
                "augmented": _verdict(recovered if sp is None else recovered - i % 3, n),
                "plain": _verdict(recovered if sp is None else max(0, recovered - 4 - i % 2), n),
            },
        }
        for i, (p, sp) in enumerate(prompts)
    ]
    (run / "eval" / "robustness.json").write_text(
        json.dumps(
            {
                "format": "omlkit.eval.robustness/1",
                "n_fingerprints": n,
                "chat": False,
                "match": "exact",
                "models": [
                    {"label": "augmented", "model": str(run / "model"), "run_dir": str(run)},
                    {"label": "plain", "model": "/elsewhere/model", "run_dir": None},
                ],
                "rows": rows,
                "mean_heldout_accuracy": {"augmented": 0.8, "plain": 0.4},
            }
        )
    )
    if attacks:
        (run / "attacks" / "finetune").mkdir(parents=True)
        results = [
            {
                "strength": s,
                "path": str(run / f"attacks/finetune/steps-{s}"),
                **_verdict(m, n),
                "survived": m,
                "persistence": m / recovered,
                "perplexity": 100 + ppl_delta - s / 10,
                "utility_delta": -s / 10,
                "side_effects": {},
            }
            for s, m in ((10, recovered), (50, recovered - 2), (200, recovered - 5))
        ]
        (run / "attacks" / "finetune" / "attack.json").write_text(
            json.dumps(
                {
                    "format": "omlkit.attack/1",
                    "kind": "finetune",
                    "n_fingerprints": n,
                    "strength_name": "step",
                    "stronger": "higher",
                    "before": {**_verdict(recovered, n), "perplexity": 100.0 + ppl_delta},
                    "base_perplexity": 100.0,
                    "results": results,
                }
            )
        )
    return run


def test_report_opens_with_recovery_utility_and_verdict(tmp_path):
    run = make_run(tmp_path, "run-8", n=8, recovered=8, ppl_delta=2.5)
    path = write_report([run])
    text = path.read_text()
    assert path == run / "report.md" and text.startswith(MARKER + "\n# omlkit report: run-8")
    head = text.split("## ")[0]
    assert "**Recovery**: 100.0% (8/8 keys" in head
    assert "Δ +2.50" in head and "tinyBenchmarks unavailable" in head
    assert "**Ownership**: **owned** (p = 1e-15" in head
    assert "| test-10 |" in text and "**mean (held-out)**" in text
    assert "### finetune" in text and "| 200 | 3/8 | 37.5% | not owned |" in text
    for png in ("robustness.png", "persistence_finetune.png"):
        assert f"]({png})" in text and (run / png).read_bytes().startswith(PNG_MAGIC)
    assert not (run / "scaling.png").exists()  # a single run has no scaling plot


def test_several_runs_plot_recovery_and_utility_against_fingerprints(tmp_path):
    runs = [
        make_run(tmp_path, f"run-{n}", n=n, recovered=r, ppl_delta=d, attacks=False)
        for n, r, d in ((8, 8, 1.0), (64, 60, 4.0), (256, 230, 9.0))
    ]
    out = tmp_path / "summary"
    text = write_report(runs, out=out).read_text()
    assert (out / "scaling.png").read_bytes().startswith(PNG_MAGIC)
    assert "| run-64 | 64 | 93.8% | +4.00 | owned |" in text
    order = [text.index(f"| run-{n} |") for n in (8, 64, 256)]
    assert order == sorted(order)
    assert "## Attacks" not in text


def test_report_regenerates_its_own_file_but_not_a_foreign_one(tmp_path):
    run = make_run(tmp_path, "run", n=8, recovered=8, ppl_delta=0.0)
    write_report([run])
    write_report([run])  # its own report: regenerated
    (run / "report.md").write_text("# hand-written notes\n")
    with pytest.raises(RunDirError, match="--force"):
        write_report([run])
    write_report([run], force=True)
    assert (run / "report.md").read_text().startswith(MARKER)


def test_report_of_a_bare_run_says_what_is_missing(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    text = write_report([run]).read_text()
    assert "not measured" in text and "not tested" in text


def test_cli_report(tmp_path, capsys):
    from omlkit.cli import main

    run = make_run(tmp_path, "run", n=8, recovered=7, ppl_delta=1.0)
    assert main(["report", str(run)]) == 0
    assert "report.md" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
