"""Sweeps: grid expansion and point ids, the dry run, and small end-to-end sweeps on the micro model."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
import yaml

from omlkit.errors import ConfigError, RunDirError
from omlkit.sweep.config import SweepConfig


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


GRID = {
    "name": "g",
    "model": "omlkit-micro",
    "generate": {"n": 8, "key_strategy": "random-words", "response_strategy": "random-word"},
    "insert": {"recipe": "published", "max_steps": 2,
               "forgetting_regularizer_strength": {"grid": [0, 0.5, 0.9]}},
    "grid": {
        "generate.n": [8, 16],
        "strategy": [
            {
                "label": "rw",
                "generate.key_strategy": "random-words",
                "generate.response_strategy": "random-word",
            },
            {"generate.key_strategy": "english", "generate.response_strategy": "perinucleus"},
        ],
    },
}


# --- grid expansion and ids ------------------------------------------------------------------------------


def test_grid_is_the_ordered_cartesian_product(tmp_path):
    cfg = SweepConfig.load(write(tmp_path / "s.yaml", GRID))
    points = cfg.points()
    assert len(points) == 3 * 2 * 2
    assert list(points[0].labels) == ["insert.forgetting_regularizer_strength", "generate.n", "strategy"]
    # the last axis varies fastest; a linked axis without a label is named by its values
    assert [p.labels["strategy"] for p in points[:2]] == ["rw", "english/perinucleus"]
    assert [p.labels["generate.n"] for p in points[:4]] == [8, 8, 16, 16]
    assert [p.labels["insert.forgetting_regularizer_strength"] for p in points[::4]] == [0, 0.5, 0.9]
    p = points[1]
    assert p.sections["generate"]["key_strategy"] == "english"
    assert p.sections["generate"]["target_model"] == "omlkit-micro"  # the top-level model fills it
    assert p.sections["insert"]["model"] == "omlkit-micro"
    assert p.resolved["insert"]["epochs"] == 60  # defaults are part of the resolved config
    assert len({q.id for q in points}) == len(points)


def test_point_ids_hash_the_resolved_config(tmp_path):
    ids = [p.id for p in SweepConfig.load(write(tmp_path / "a.yaml", GRID)).points()]
    assert ids == [p.id for p in SweepConfig.load(write(tmp_path / "b.yaml", GRID)).points()]
    # a field outside the grid changes every id; where/how to run (device) changes none
    changed = {**GRID, "insert": {**GRID["insert"], "max_steps": 3}}
    assert not set(ids) & {p.id for p in SweepConfig.load(write(tmp_path / "c.yaml", changed)).points()}
    moved = {**GRID, "insert": {**GRID["insert"], "device": "cpu"}}
    assert ids == [p.id for p in SweepConfig.load(write(tmp_path / "d.yaml", moved)).points()]
    # spelling a default out explicitly is the same resolved config, hence the same id
    explicit = {**GRID, "insert": {**GRID["insert"], "epochs": 60}}
    assert ids == [p.id for p in SweepConfig.load(write(tmp_path / "e.yaml", explicit)).points()]


def test_duplicate_points_are_merged(tmp_path):
    data = {"model": "omlkit-micro", "stages": ["generate"], "generate": {"n": {"grid": [8, 8, 4]}}}
    points = SweepConfig.load(write(tmp_path / "s.yaml", data)).points()
    assert [p.labels["generate.n"] for p in points] == [8, 4]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid": {"insert.forgeting_regularizer_strength": [0]}}, "did you mean forgetting_regularizer"),
        ({"grid": {"insert.fingerprints": ["a.json"]}}, "set by the sweep itself"),
        ({"insert": {"out_dir": "x"}}, "out_dir is set by the sweep itself"),
        ({"grid": {"strategy": [1, 2]}}, "linked axis"),
        ({"grid": {"generate.n": []}}, "non-empty list"),
        ({"generate": {"n": {"grid": [8]}}, "grid": {"generate.n": [4]}}, "swept twice"),
        ({"stages": ["insert", "generate"]}, "insert needs generate before it"),
        ({"stages": ["generate", "insert"]}, "section verify is given but verify is not in stages"),
        ({"generat": {"n": 3}}, "did you mean 'generate'"),
        ({"generate": {"n": {"grid": [8, 0]}}}, "n: Input should be greater than or equal to 1"),
    ],
)
def test_bad_sweep_files_are_refused_in_one_line(tmp_path, change, message):
    data = {
        "model": "omlkit-micro",
        "generate": {"n": 8},
        "insert": {"max_steps": 2},
        "verify": {},
        **change,
    }
    with pytest.raises(ConfigError) as err:
        SweepConfig.load(write(tmp_path / "bad.yaml", data))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "bad.yaml" in str(err.value)


def test_shipped_sweeps_expand(tmp_path):
    root = Path(__file__).resolve().parents[1] / "benchmarks" / "sweeps"
    files = sorted(root.glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"capacity", "anti_forgetting", "persistence", "robustness", "false_positives"} <= names
    for f in files:
        points = SweepConfig.load(f).points()
        assert points, f


def test_dry_run_prints_the_grid_and_runs_nothing(tmp_path, capsys):
    from omlkit.cli import main

    cfg = write(tmp_path / "s.yaml", GRID)
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for p in SweepConfig.load(cfg).points():
        assert p.id in text
    assert "12 point(s)" in text and "todo" in text
    assert not out.exists()


def test_sweep_help():
    from omlkit.cli import main

    assert main(["sweep", "--help"]) == 0


# --- end to end on the micro model -------------------------------------------------------------------------

MICRO = {
    "name": "micro",
    "stages": ["generate", "insert", "verify", "evaluate"],
    "generate": {"n": 8, "key_strategy": "random-words", "response_strategy": "random-word", "key_length": 6},
    "insert": {
        "recipe": "published",
        "max_steps": 3,
        "early_stop": False,
        "checkpoint_every": 0,
        "benign_fraction": 0.0,
        "forgetting_regularizer_strength": {"grid": [0.0, 0.5]},
    },
    "verify": {"batch_size": 8},
    "evaluate": {"benchmarks": False, "heldout_texts": 4, "max_length": 32},
}


@pytest.fixture(scope="module")
def micro_sweep(micro_model, tmp_path_factory):
    """A 2-point sweep run once: (config path, out folder, summary)."""
    from omlkit.sweep.runner import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    path = write(root / "micro.yaml", {**MICRO, "model": str(micro_model)})
    out = root / "out"
    summary = run_sweep(SweepConfig.load(path), out, progress=False)
    return path, out, summary


def test_two_point_sweep_runs_end_to_end(micro_sweep):
    path, out, summary = micro_sweep
    points = SweepConfig.load(path).points()
    assert summary.ran == [p.id for p in points] and not summary.failed
    assert len(list((out / "fingerprints").glob("*.json"))) == 1  # both points share one set
    assert len([d for d in (out / "runs").iterdir() if d.is_dir()]) == 2  # one run per λ
    for p in points:
        rec = json.loads((out / "points" / p.id / "point.json").read_text())
        assert rec["status"] == "done" and rec["id"] == p.id
        assert (
            rec["config"]["insert"]["forgetting_regularizer_strength"]
            == p.labels["insert.forgetting_regularizer_strength"]
        )
        assert list(rec["stages"]) == ["generate", "insert", "verify", "evaluate"]
        assert all(s["status"] == "done" and s["seconds"] >= 0 for s in rec["stages"].values())
        verify = rec["stages"]["verify"]["result"]
        assert verify["checked"] == 8 and 0 <= verify["accuracy"] <= 1
        assert rec["metrics"]["recovery"] == verify["accuracy"]
        assert rec["metrics"]["verdict"] in ("owned", "not owned")
        ppl = rec["stages"]["evaluate"]["result"]["perplexity"]
        assert rec["metrics"]["ppl_delta"] == pytest.approx(ppl["model"] - ppl["base"])
        assert rec["stages"]["insert"]["result"]["global_step"] == 3
    # the second point reused the first point's fingerprint set
    second = json.loads((out / "points" / points[1].id / "point.json").read_text())
    assert second["stages"]["generate"]["reused"] is True
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [p.id for p in points]
    md = (out / "results.md").read_text()
    assert all(p.id in md for p in points) and "| recovery |" not in md.splitlines()[0]
    assert (out / "plots" / "vs_insert_forgetting_regularizer_strength.png").is_file()
    # no λ=0 model averaging pulls the weights furthest from the base
    deltas = {x["labels"]["insert.forgetting_regularizer_strength"]: x["metrics"]["ppl_delta"] for x in lines}
    assert deltas[0.0] > deltas[0.5]


def test_second_invocation_skips_both_points(micro_sweep):
    from omlkit.sweep.runner import run_sweep

    path, out, _ = micro_sweep
    points = SweepConfig.load(path).points()
    before = {p.id: (out / "points" / p.id / "point.json").stat().st_mtime_ns for p in points}
    summary = run_sweep(SweepConfig.load(path), out, progress=False)
    assert summary.skipped == [p.id for p in points] and not summary.ran and not summary.failed
    assert before == {p.id: (out / "points" / p.id / "point.json").stat().st_mtime_ns for p in points}


def test_a_lost_stage_output_is_redone_alone(micro_sweep):
    from omlkit.sweep.runner import run_sweep

    path, out, _ = micro_sweep
    point = SweepConfig.load(path).points()[0]
    (out / "points" / point.id / "eval" / "utility.json").unlink()
    summary = run_sweep(SweepConfig.load(path), out, progress=False)
    assert summary.ran == [point.id]
    rec = json.loads((out / "points" / point.id / "point.json").read_text())
    assert rec["stages"]["insert"]["status"] == "done"
    assert (out / "points" / point.id / "eval" / "utility.json").is_file()


def test_a_point_another_process_is_running_is_left_alone(micro_sweep):
    from omlkit.locking import exclusive
    from omlkit.sweep.runner import run_sweep

    path, out, _ = micro_sweep
    first, second = SweepConfig.load(path).points()
    (out / "points" / first.id / "eval" / "utility.json").unlink()  # so the point would run again
    with exclusive(out / "points" / f".{first.id}.lock"):  # as a second sweep process would hold it
        summary = run_sweep(SweepConfig.load(path), out, progress=False)
    assert summary.busy == [first.id] and summary.skipped == [second.id] and not summary.ran
    assert not (out / "points" / first.id / "eval" / "utility.json").exists()  # not touched
    assert run_sweep(SweepConfig.load(path), out, progress=False).ran == [first.id]  # lock released


def test_a_failed_point_is_recorded_and_the_sweep_goes_on(micro_sweep):
    from omlkit.sweep.runner import run_sweep

    path, out, _ = micro_sweep
    data = yaml.safe_load(path.read_text())
    data["insert"]["forgetting_regularizer_strength"] = 0.0  # the finished run is reused
    data["verify"]["sample"] = {"grid": [100, 4]}  # 100 > 8 fingerprints: refused at verify
    cfg = SweepConfig.load(write(path.parent / "failing.yaml", data))
    bad, good = cfg.points()
    summary = run_sweep(cfg, out, progress=False)
    assert summary.failed == [bad.id] and summary.ran == [good.id]
    rec = json.loads((out / "points" / bad.id / "point.json").read_text())
    assert rec["status"] == "failed" and rec["error"]["stage"] == "verify"
    assert "--sample" in rec["error"]["message"]
    assert rec["stages"]["insert"]["reused"] is True  # insertion was not repeated
    assert (out / "points" / bad.id / "error.txt").is_file()
    assert "Failed points" in (out / "results.md").read_text()
    ok = json.loads((out / "points" / good.id / "point.json").read_text())
    assert ok["stages"]["verify"]["result"]["checked"] == 4


def test_optional_stages_attack_robustness_false_positives(micro_sweep, micro_model):
    from omlkit.sweep.runner import run_sweep

    path, out, _ = micro_sweep
    data = yaml.safe_load(path.read_text())
    data["stages"] = ["generate", "insert", "robustness", "attack", "false_positives"]
    data["insert"]["forgetting_regularizer_strength"] = 0.0
    for name in ("verify", "evaluate"):
        data.pop(name)
    data["robustness"] = {"batch_size": 8}
    data["attack"] = {
        "kind": "finetune",
        "steps": [1],
        "heldout_texts": 4,
        "seq_len": 32,
        "train_batch_size": 2,
    }
    data["false_positives"] = {"models": [str(micro_model)], "batch_size": 8}
    cfg = SweepConfig.load(write(path.parent / "more.yaml", data))
    (point,) = cfg.points()
    summary = run_sweep(cfg, out, progress=False)
    assert not summary.failed, (out / "points" / point.id / "error.txt").read_text()
    assert summary.ran == [point.id]
    rec = json.loads((out / "points" / point.id / "point.json").read_text())
    rob = rec["stages"]["robustness"]["result"]
    assert set(rob["rows"]) >= {"none", "test-1"} and 0 <= rob["mean_heldout_accuracy"] <= 1
    att = rec["stages"]["attack"]["result"]
    assert [r["strength"] for r in att["results"]] == [1]
    fps = rec["stages"]["false_positives"]["result"]["models"]
    assert [m["model"] for m in fps] == ["base", str(micro_model)]
    for m in fps:
        assert m["checked"] == 8 and 0 <= m["match_rate"] <= 1 and 0 <= m["p_value"] <= 1
    assert (out / "plots" / "persistence.png").is_file()
    assert (out / "plots" / "false_positives.png").is_file()


def test_out_folder_of_something_else_is_refused(tmp_path):
    from omlkit.sweep.runner import prepare_out

    cfg = SweepConfig.load(write(tmp_path / "s.yaml", GRID))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(RunDirError, match="not empty"):
        prepare_out(cfg, tmp_path / "busy")
    prepare_out(cfg, tmp_path / "mine")
    other = cfg.model_copy(update={"name": "other"})
    with pytest.raises(RunDirError, match="--force"):
        prepare_out(other, tmp_path / "mine")
    prepare_out(other, tmp_path / "mine", force=True)


def test_only_refuses_an_unknown_point(tmp_path, capsys):
    from omlkit.cli import main

    cfg = write(tmp_path / "s.yaml", GRID)
    assert main(["sweep", str(cfg), "--only", "nope", "--out", str(tmp_path / "out")]) == 2
    assert "--only: nope is not a point" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_plot_axes_follow_the_span_of_the_values(tmp_path):
    from omlkit.sweep import plots

    assert plots._log_axis([16, 64, 256, 1024]) and not plots._log_axis([0, 0.5, 0.9])
    assert plots._symlog_threshold([0.18, 2.7, 1.0e6]) == pytest.approx(0.18)
    assert plots._symlog_threshold([-3.0, 0.0, 12.0]) is None  # one order of magnitude: linear
    rows = [
        {"status": "done", "labels": {"lam": lam}, "metrics": {"recovery": rec, "ppl_delta": d}}
        for lam, rec, d in [(0, 0.94, 1.0e6), (0.5, 0.03, 18.8), (0.9, 0.0, 0.18)]
    ]
    path = plots.plot_metric_vs_axis(rows, "lam", tmp_path / "p.png")
    assert path is not None and path.stat().st_size > 1000


#: The fields each id-hashing config had when run and sweep-point ids were first published. A field
#: added since must carry OMIT_DEFAULT_FROM_ID, or every finished run and sweep point would get a new
#: id (and be trained again) the day it lands.
PUBLISHED_FIELDS = {
    "AttackConfig": (
        "base bits chat data device fingerprints force gates heldout_texts kind lambdas lora_rank "
        "lr match model out seed seq_len steps thresholds train_batch_size"
    ),
    "UtilityConfig": "base batch_size benchmarks device force heldout_texts limit max_length model out tasks",
    "FalsePositivesConfig": (
        "alpha base batch_size device fingerprints include_base match models preset seeds"
    ),
    "GenerateConfig": (
        "batch_size device force functional_vocab functional_words generator_model k key_length "
        "key_strategy keys_file n out progress response_length response_strategy seed t "
        "target_model temperature"
    ),
    "InsertConfig": (
        "added_params averaging_interval batch_size benign_corpus benign_dataset benign_fraction "
        "benign_new_tokens benign_prompt_tokens benign_target chat check_every checkpoint_every "
        "confidence_cap device early_stop epochs fingerprints force forgetting_regularizer_strength "
        "freeze_embeddings grad_accum kl_batch_size kl_length kl_on_prompts kl_strength l2_strength "
        "learning_rate logging_steps lora lora_alpha lora_merge lora_r lora_target_modules "
        "loss_threshold lr_schedule max_grad_norm max_steps model out_dir precision "
        "prompt_augmentation recipe regularizers response_boundary response_eos resume run_id seed "
        "warmup_steps weight_decay"
    ),
    "RobustnessConfig": "batch_size chat device fingerprints force label match model out",
    "VerifyConfig": (
        "alpha api_key backend batch_size chat concurrency device dtype endpoint fingerprints force "
        "match max_new_tokens model out rank_k rate_limit retries reveal sample seed served_model "
        "system_prompt timeout"
    ),
    "AddedParamsConfig": "kind width",
    "DummyConfig": "kind",
    "KLToBaseConfig": "batch_size kind length on_prompts strength",
    "L2ToBaseConfig": "kind strength",
    "LoraConfig": "alpha dropout kind merge r target_modules",
    "ModelAveragingConfig": "interval kind strength",
    "PersistenceConfig": "kind",  # new: everything else is left out of ids at its default
}


def test_fields_added_since_ids_were_published_are_left_out_of_ids_at_their_default():
    import omlkit.insertion.config as icfg
    from omlkit.sweep.config import _stages

    registry = _stages()
    classes = {stage.config_cls for _, stage in registry.items()}
    classes |= set(typing.get_args(typing.get_args(icfg.RegularizerConfig)[0]))  # each regularizer's
    assert {c.__name__ for c in classes} == set(PUBLISHED_FIELDS), "a new id-hashing config: add it here"
    for cls in classes:
        for name, field in cls.model_fields.items():
            if name in PUBLISHED_FIELDS[cls.__name__].split():
                continue
            extra = field.json_schema_extra
            assert isinstance(extra, dict) and extra.get("omit_default_from_id"), (
                f"{cls.__name__}.{name} is new: give it json_schema_extra=OMIT_DEFAULT_FROM_ID so existing "
                "run and sweep-point ids stay valid"
            )
