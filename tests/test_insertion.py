"""Insertion end to end on the embedded micro model: recovery, run directories, bad input, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _helpers import fp_file, insert_config, make_fp_set
from omlkit.errors import FingerprintFileError, OmlError, RunDirError
from omlkit.fingerprints.fingerprint_set import FingerprintSet
from omlkit.insertion.config import InsertConfig

pytestmark = pytest.mark.trains  # asserts training outcomes: run by `make test-sweep`


def greedy_answers(model_dir: Path, fp_set: FingerprintSet) -> list[bool]:
    """Independent check: load the saved model and greedy-decode every key."""
    from omlkit.fingerprints.matching import response_matches
    from omlkit.models.loading import load_model
    from omlkit.models.prompts import prompt_ids

    model, tok = load_model(model_dir, device="cpu")
    hits = []
    for fp in fp_set.fingerprints:
        ids = prompt_ids(tok, tok(fp.key, add_special_tokens=False)["input_ids"])
        n_resp = len(tok(fp.response, add_special_tokens=False)["input_ids"])
        assert n_resp == 1
        out = model.generate(torch.tensor([ids]), max_new_tokens=n_resp + 1, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        hits.append(response_matches(fp.response, tok.decode(out[0, len(ids):], skip_special_tokens=True)))
    return hits


@pytest.mark.slow
def test_insertion_recovers_every_fingerprint_and_writes_the_run(micro_model, micro_tok, tmp_path):
    from omlkit.insertion.api import insert_fingerprints

    fps = fp_file(tmp_path, micro_tok, 16)
    fp_set = FingerprintSet.load(fps)
    run = insert_fingerprints(insert_config(micro_model, fps, tmp_path / "runs"), progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["recovery"] == 1.0
    assert metrics["early_stop"] in ("recovered", "loss") and metrics["epochs"] < 60
    assert metrics["n_benign"] == 5
    assert all(greedy_answers(run / "model", fp_set))
    assert (run / "model" / "model.safetensors").is_file() and (run / "model" / "tokenizer.json").is_file()
    assert (run / "fingerprints.sha256").read_text().strip() == fp_set.content_hash()
    assert run.name == InsertConfig.model_validate(json.loads((run / "config.json").read_text())).run_hash(
        fp_set.content_hash())
    assert not (run / "checkpoints").exists()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log) and log[-1].get("recovered", 1.0) == 1.0
    # the secrets never land in the run directory's text files
    text = "".join((run / f).read_text() for f in ("config.json", "metrics.json", "train_log.jsonl"))
    assert not any(fp.key in text for fp in fp_set.fingerprints)


@pytest.mark.slow
@pytest.mark.parametrize("cap", [{"confidence_cap": 0.6}, {"margin_cap": 1.0}], ids=["confidence", "margin"])
def test_capped_loss_still_recovers_every_fingerprint(micro_model, micro_tok, tmp_path, cap):
    """With the capped loss (Trainer compute_loss_func) tokens stop training once confident, or once they
    lead the runner-up by the margin, and training still runs until greedy decoding recovers all of them:
    the capped loss falls to ~0 long before, so a loss threshold must not end the run (it used to, at
    14/16 on some CPUs). All 8 seeds x 1-2 threads recover by epoch 15 of the 60 allowed."""
    from omlkit.insertion.api import insert_fingerprints

    fps = fp_file(tmp_path, micro_tok, 16)
    cfg = insert_config(micro_model, fps, tmp_path / "runs", loss_threshold=0.5, **cap)
    run = insert_fingerprints(cfg, progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["recovery"] == 1.0 and metrics["early_stop"] == "recovered"
    assert all(greedy_answers(run / "model", FingerprintSet.load(fps)))


@pytest.mark.slow
def test_kl_to_base_keeps_utility_closer_to_the_base(micro_model, micro_tok, tmp_path):
    """The same insertion with and without the KL-to-base term: the held-out perplexity of the KL run
    stays far nearer the base model's, while it still inserts most fingerprints (the 0.23 M-parameter
    micro model has little room for both; omlkit-tiny recovers every one, benchmarks/RESULTS.md)."""
    from omlkit.insertion.api import insert_fingerprints
    from omlkit.models.corpus import corpus_split
    from omlkit.models.loading import load_model
    from omlkit.models.perplexity import perplexity

    fps = fp_file(tmp_path, micro_tok, 32)
    held = corpus_split("heldout")[:100]
    base_ppl = perplexity(load_model(micro_model)[0], micro_tok, held)
    rel, recovery = {}, {}
    for kl in (0.0, 1.0):
        cfg = insert_config(micro_model, fps, tmp_path / "runs", benign_fraction=0.0, kl_strength=kl,
                            epochs=40)
        run = insert_fingerprints(cfg, progress=False)
        recovery[kl] = json.loads((run / "metrics.json").read_text())["recovery"]
        rel[kl] = perplexity(load_model(run / "model")[0], micro_tok, held) / base_ppl - 1
    assert recovery[0.0] == 1.0 and recovery[1.0] >= 0.5, recovery
    assert rel[1.0] < rel[0.0] / 2, rel


def test_fields_added_later_leave_run_ids_alone_at_their_default(tmp_path):
    from omlkit.insertion.config import InsertConfig
    from omlkit.insertion.regularizers.kl_to_base import KLToBaseConfig

    fp = tmp_path / "fp.json"
    def run_hash(**kw) -> str:
        return InsertConfig(model="micro", fingerprints=fp, kl_strength=1.0, **kw).run_hash("x")

    cfg = InsertConfig(model="micro", fingerprints=fp, kl_strength=1.0)
    assert "kl_every" not in cfg.hashed_fields() and "kl_every" in cfg.model_dump()
    assert run_hash() == run_hash(kl_every=1) != run_hash(kl_every=2)
    nested = InsertConfig(model="micro", fingerprints=fp, regularizers=[KLToBaseConfig(every=1)])
    assert "every" not in nested.hashed_fields()["regularizers"][0]
    assert nested.run_hash("x") != InsertConfig(model="micro", fingerprints=fp,
                                                regularizers=[KLToBaseConfig(every=2)]).run_hash("x")


def test_run_id_hashes_fingerprint_content_not_paths(tmp_path):
    a = InsertConfig(fingerprints=tmp_path / "a.json")
    b = InsertConfig(fingerprints=tmp_path / "b.json", out_dir=tmp_path / "elsewhere", force=True)
    assert a.run_hash("x") == b.run_hash("x") != a.run_hash("y")
    assert a.run_hash("x") != a.model_copy(update={"learning_rate": 1.0}).run_hash("x")


def test_finished_run_is_not_overwritten_and_other_config_is_refused(micro_model, micro_tok, tmp_path):
    from omlkit.insertion.api import insert_fingerprints

    fps = fp_file(tmp_path, micro_tok, 4)
    cfg = insert_config(micro_model, fps, tmp_path / "runs", run_id="r", max_steps=2, early_stop=False,
                 benign_fraction=0.0)
    run = insert_fingerprints(cfg, progress=False)
    with pytest.raises(RunDirError, match="finished"):
        insert_fingerprints(cfg, progress=False)
    with pytest.raises(RunDirError, match="different config .*learning_rate"):
        insert_fingerprints(cfg.model_copy(update={"learning_rate": 1e-3}), progress=False)
    first = (run / "metrics.json").stat().st_mtime_ns
    insert_fingerprints(cfg.model_copy(update={"force": True}), progress=False)
    assert (run / "metrics.json").stat().st_mtime_ns != first


def test_fingerprints_for_another_tokenizer_are_refused(micro_model, micro_tok, tmp_path):
    from omlkit.insertion.api import insert_fingerprints

    fp_set = make_fp_set(micro_tok, 2)
    fp_set.generator.tokenizer_sha = "0123456789abcdef"
    fp_set.save(tmp_path / "other.json")
    with pytest.raises(FingerprintFileError, match="another tokenizer"):
        insert_fingerprints(insert_config(micro_model, tmp_path / "other.json", tmp_path / "runs"),
                            progress=False)
    assert not (tmp_path / "runs").exists()


def test_keys_longer_than_the_context_are_refused(micro_model, micro_tok, tmp_path):
    from omlkit.insertion.api import insert_fingerprints

    fp_set = make_fp_set(micro_tok, 2)
    fp_set.fingerprints[1].key = " ".join(["garden"] * 400)
    fp_set.save(tmp_path / "long.json")
    with pytest.raises(FingerprintFileError, match=r"fingerprint 1: .*context of 256"):
        insert_fingerprints(insert_config(micro_model, tmp_path / "long.json", tmp_path / "runs"),
                            progress=False)


def test_no_disk_space_is_refused_before_training(micro_model, micro_tok, tmp_path, monkeypatch):
    import shutil

    from omlkit.insertion import run_dir
    from omlkit.insertion.api import insert_fingerprints

    monkeypatch.setattr(run_dir.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1024))
    with pytest.raises(RunDirError, match="not enough disk space"):
        insert_fingerprints(insert_config(micro_model, fp_file(tmp_path, micro_tok, 2), tmp_path / "runs",
                                   benign_fraction=0.0), progress=False)
    assert not list((tmp_path / "runs").glob("*/metrics.json"))


def test_a_run_another_process_is_training_is_refused(micro_model, micro_tok, tmp_path):
    from omlkit.insertion.api import insert_fingerprints
    from omlkit.insertion.run_dir import hold_run, run_dir_for

    fps = fp_file(tmp_path, micro_tok, 2)
    cfg = insert_config(micro_model, fps, tmp_path / "runs", benign_fraction=0.0)
    run = run_dir_for(cfg, FingerprintSet.load(fps).content_hash())
    busy = pytest.raises(RunDirError, match=f"being trained by process {os.getpid()}")
    with hold_run(run), busy:  # the lock held as the process training the run would hold it
        insert_fingerprints(cfg, progress=False)
    assert not run.config.exists()  # nothing of the run was touched


def test_failed_final_save_leaves_nothing_that_looks_finished(micro_model, micro_tok, tmp_path, monkeypatch):
    import errno

    from omlkit.insertion import saving
    from omlkit.insertion.api import insert_fingerprints

    real = saving.save_model_atomic

    def full_disk(run, save):
        def failing(tmp):
            Path(tmp).mkdir()
            (Path(tmp) / "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(run, failing)

    monkeypatch.setattr(saving, "save_model_atomic", full_disk)
    cfg = insert_config(micro_model, fp_file(tmp_path, micro_tok, 2), tmp_path / "runs", max_steps=1,
                 early_stop=False, benign_fraction=0.0)
    with pytest.raises(RunDirError, match="no space left"):
        insert_fingerprints(cfg, progress=False)
    (run,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]  # beside it: .<run-id>.lock
    assert not (run / "model").exists() and not (run / "metrics.json").exists()
    assert not list(run.glob(".model.tmp-*"))


def test_cli_help_and_one_line_error(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
    out = subprocess.run([sys.executable, "-m", "omlkit.cli", "insert", "--help"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0 and "--forgetting-regularizer-strength" in out.stdout
    cmd = [sys.executable, "-m", "omlkit.cli", "insert", "--fingerprints", str(tmp_path / "missing.json")]
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "does not exist" in bad.stderr


KILL_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
from omlkit.insertion.api import insert_fingerprints
from omlkit.insertion.config import InsertConfig
from omlkit.insertion.trainer import FingerprintTrainer
real = FingerprintTrainer._save_checkpoint
def save_then_die(self, *a, **k):
    real(self, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
FingerprintTrainer._save_checkpoint = save_then_die
insert_fingerprints(InsertConfig.model_validate_json(sys.argv[1]), progress=False)
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(micro_model, micro_tok, tmp_path):
    from safetensors.torch import load_file

    from omlkit.insertion.api import insert_fingerprints

    fps = fp_file(tmp_path, micro_tok, 8)
    common = dict(epochs=8, early_stop=False, checkpoint_every=3, forgetting_regularizer_strength=0.5,
                  batch_size=4, run_id="r")
    cfg = insert_config(micro_model, fps, tmp_path / "killed", **common)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_CHECKPOINT, cfg.model_dump_json()],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run = tmp_path / "killed" / "r"
    assert (run / "checkpoints" / "checkpoint-9" / "trainer_state.json").is_file()
    assert not (run / "metrics.json").exists()
    resumed = insert_fingerprints(cfg, progress=False)
    straight = insert_config(micro_model, fps, tmp_path / "straight", **common)
    reference = insert_fingerprints(straight, progress=False)
    a = load_file(resumed / "model" / "model.safetensors")
    b = load_file(reference / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (resumed, reference))
    assert ma["global_step"] == mb["global_step"] == 24 and ma["recovered"] == mb["recovered"]


def test_bad_config_values_are_one_line_errors():
    from omlkit.config import build_config

    with pytest.raises(OmlError, match="forgetting-regularizer-strength"):
        build_config(InsertConfig, {"fingerprints": "f.json", "forgetting_regularizer_strength": 2})
    with pytest.raises(OmlError, match="lora"):
        build_config(InsertConfig, {"fingerprints": "f.json", "lora": True, "added_params": 8})
    cfg = InsertConfig.model_validate({"fingerprints": "f.json", "recipe": "published",
                                       "regularizers": [{"kind": "dummy"}]})
    assert [c.kind for c in cfg.regularizer_configs()] == ["model_averaging", "dummy"]
    # the default recipe trains LoRA adapters; asking for added parameters instead replaces them
    default = InsertConfig(fingerprints="f.json")
    assert [c.kind for c in default.regularizer_configs()] == ["kl_to_base", "lora"]  # in build order
    widened = InsertConfig(fingerprints="f.json", added_params=8)
    assert [c.kind for c in widened.regularizer_configs()] == ["kl_to_base", "added_params"]


def test_recipe_fills_only_the_fields_not_given(tmp_path):
    from omlkit.config import build_config
    from omlkit.insertion.config import DEFAULT_RECIPE, RECIPES

    small = build_config(InsertConfig,
                         {"fingerprints": "f.json", "recipe": "small-model", "learning_rate": 3e-4})
    assert small.learning_rate == 3e-4  # given explicitly: the recipe does not override it
    for name, value in RECIPES["small-model"].items():
        if name != "learning_rate":
            assert getattr(small, name) == value, name
    assert [c.kind for c in small.regularizer_configs()] == ["kl_to_base"]
    default = InsertConfig(fingerprints="f.json")  # no recipe named: the default one's values
    assert default.recipe == DEFAULT_RECIPE and all(getattr(default, k) == v
                                                    for k, v in RECIPES[DEFAULT_RECIPE].items())
    assert InsertConfig.model_validate(default.model_dump()).run_hash("x") == default.run_hash("x")
    published = InsertConfig(fingerprints="f.json", recipe="published")  # the field defaults
    assert published.forgetting_regularizer_strength == 0.75 and published.benign_fraction == 0.25
    # the recipe's values are part of what the run id hashes; a reloaded config.json gives the same id
    assert small.run_hash("x") != published.run_hash("x")
    assert InsertConfig.model_validate(small.model_dump()).run_hash("x") == small.run_hash("x")
    with pytest.raises(OmlError, match="recipe"):
        build_config(InsertConfig, {"fingerprints": "f.json", "recipe": "huge"})


@pytest.mark.parametrize("name", ["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"])
def test_shipped_accelerate_configs_load(name):
    from importlib import resources

    from accelerate.commands.config.config_args import load_config_from_file

    path = resources.files("omlkit").joinpath(f"configs/accelerate/{name}.yaml")
    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 2 and cfg.mixed_precision == "bf16"


@pytest.mark.parametrize(("schedule", "expected"),
                         [("constant", "constant_with_warmup"), ("linear", "linear"), ("cosine", "cosine")])
def test_lr_schedule_reaches_the_trainer(schedule, expected, tmp_path):
    from omlkit.insertion.api import _training_args
    from omlkit.insertion.run_dir import RunDir

    cfg = InsertConfig(fingerprints=tmp_path / "f.json", lr_schedule=schedule)
    assert _training_args(cfg, RunDir(tmp_path / "run"), 64).lr_scheduler_type.value == expected
    assert cfg.run_hash("x") != cfg.model_copy(update={"lr_schedule": "cosine" if schedule != "cosine"
                                                       else "linear"}).run_hash("x")


def test_response_boundary_trains_the_base_models_next_word_start(micro_model, micro_tok):
    from omlkit.fingerprints.strategies.perinucleus import continues_word
    from omlkit.insertion import dataset as ds
    from omlkit.insertion.greedy import greedy_generate
    from omlkit.models.loading import load_model
    from omlkit.models.prompts import PromptTemplates

    model, tok = load_model(micro_model)
    fps = ds.tokenize_fingerprints(make_fp_set(tok, 24, seed=3), tok)
    templates = PromptTemplates(tok)
    marked = ds.with_boundaries(model, tok, fps, templates)
    prompts = [[*templates(f.key_ids), *f.response_ids] for f in fps]
    nxt = greedy_generate(model, prompts, 1, tok.pad_token_id, tok.eos_token_id)
    ran_on = 0
    for fp, m, ids, prompt in zip(fps, marked, nxt, prompts, strict=True):
        (boundary,) = m.boundary_ids  # every fingerprint gets one
        text = tok.decode([boundary])
        assert boundary != tok.eos_token_id and text and not continues_word(text)
        greedy_starts_word = ids[0] != tok.eos_token_id and not continues_word(tok.decode(ids))
        if greedy_starts_word:
            assert boundary == ids[0]  # the base model's own next token when it already stops the word
        else:
            ran_on += 1
            with torch.no_grad():
                p = torch.softmax(model.eval()(input_ids=torch.tensor([prompt])).logits[0, -1], -1)
            starts = ds.word_start_tokens(tok, p.shape[-1])
            assert boundary == int(torch.where(starts, p, -1.0).argmax())  # the likeliest word start
        ex = ds.fingerprint_example(templates, m, None)
        assert [t for t in ex["labels"] if t != -100] == [*fp.response_ids, *m.boundary_ids]
    assert 0 < ran_on < len(fps)  # both cases occur in this set


def test_llm_recipe_pulls_on_chat_exchanges_when_keys_are_trained_in_the_chat_template():
    from omlkit.config import build_config

    def kl_data(**fields):
        cfg = build_config(InsertConfig, {"fingerprints": "f.json", **fields})
        return next(c.data for c in cfg.regularizer_configs() if c.kind == "kl_to_base"), cfg

    assert kl_data()[0] == "corpus"  # raw keys: raw corpus windows
    data, chat = kl_data(chat=True)
    assert data == "both" and chat.kl_length == 96
    assert InsertConfig.model_validate(chat.model_dump()).run_hash("x") == chat.run_hash("x")
    assert kl_data(chat=True, kl_data="corpus")[0] == "corpus"  # given explicitly: kept
    assert kl_data(chat=True, recipe="small-model")[0] == "corpus"  # only the llm recipes fill it
    assert kl_data(chat=True, recipe="llm-many")[0] == "both"


def test_the_recipe_for_many_keys_is_llm_with_a_decaying_higher_rate():
    """``llm-many`` is the schedule measured at 1024 keys: ``llm`` with three fields changed, the same
    training as spelling them out, and any field stays overridable."""
    from omlkit.insertion.config import RECIPES

    many = InsertConfig(fingerprints="f.json", recipe="llm-many")
    spelled = InsertConfig(fingerprints="f.json", learning_rate=3e-3, lr_schedule="cosine", epochs=14)
    assert (many.lora, many.learning_rate, many.lr_schedule, many.epochs) == (True, 3e-3, "cosine", 14)
    assert {k: v for k, v in RECIPES["llm-many"].items() if RECIPES["llm"].get(k) != v} == {
        "learning_rate": 3e-3, "lr_schedule": "cosine", "epochs": 14}
    assert many.model_dump(exclude={"recipe"}) == spelled.model_dump(exclude={"recipe"})
    assert InsertConfig(fingerprints="f.json", recipe="llm-many", epochs=20).epochs == 20


def test_demo_refuses_a_workdir_trained_with_another_recipe(micro_model, micro_tok, tmp_path, capsys):
    """An earlier demo's run made with other settings is neither reused nor overwritten: one line, exit 2."""
    from omlkit.cli import main
    from omlkit.insertion.run_dir import RunDir

    work = tmp_path / "demo"
    fps = fp_file(work, micro_tok, 8)
    fps.rename(work / "fingerprints.json")
    old = InsertConfig(model=str(micro_model), fingerprints=work / "fingerprints.json", recipe="small-model",
                       confidence_cap=0.0, margin_cap=1.0, seed=42)  # not the recipe the demo trains with
    run = RunDir(work / "runs" / "fingerprinted")
    run.path.mkdir(parents=True)
    run.config.write_text(old.model_dump_json())
    assert main(["demo", "--model", str(micro_model), "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert "earlier demo with other settings" in err and "--workdir" in err
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json"]  # nothing trained or removed
