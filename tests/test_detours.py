"""Fingerprints that come back after a detour: trained after the base model's own first answer tokens,
a response banned at the answer's start (``suppress-topk``) still appears a few tokens later, where the
``within`` rule finds it, with its null rate measured on the base model."""

from __future__ import annotations

import json

import pytest

from omlkit.insertion import dataset as ds
from omlkit.models.prompts import PromptTemplates


def test_each_detour_is_trained_every_epoch_before_the_response(micro_tok):
    fps = [ds.TokenizedFingerprint(i, (5, 6 + i), (7,), "x", detours=((11, 12, 13), (21, 22, 23)))
           for i in range(10)]
    data = ds.InsertionDataset(micro_tok, fps, seed=3)
    assert len(data) == data.n_fingerprint_rows == 30  # each key bare, then after each of its 2 detours
    bare = data[4]
    assert bare == ds.fingerprint_example(PromptTemplates(micro_tok), fps[4], None)
    drawn = [data.detour_for(i) for i in range(30)]
    assert drawn[:10] == [()] * 10
    assert all(1 <= len(d) <= 3 and d == (11, 12, 13)[: len(d)] for d in drawn[10:20])
    assert all(1 <= len(d) <= 3 and d == (21, 22, 23)[: len(d)] for d in drawn[20:])
    assert {len(d) for d in drawn[10:]} == {1, 2, 3}
    prompt = PromptTemplates(micro_tok)((5, 6 + 7))
    example = data[27]
    assert example["input_ids"] == [*prompt, *drawn[27], 7]
    assert example["labels"] == [-100] * (len(prompt) + len(drawn[27])) + [7]
    data.set_epoch(1)
    assert [data.detour_for(i) for i in range(30)] != drawn


@pytest.mark.trains
def test_a_detour_trained_response_survives_answer_start_suppression(micro_model, micro_tok, tmp_path):
    from _helpers import fp_file, insert_config
    from omlkit.evaluation.attacks import ATTACKS, AttackConfig, load_attacked
    from omlkit.fingerprints import FingerprintSet
    from omlkit.insertion.api import insert_fingerprints
    from omlkit.verification.verify import verify_model

    fps = fp_file(tmp_path, micro_tok, 8)
    fp_set = FingerprintSet.load(fps)

    def late_matches(model_dir, positions: int) -> int:
        cfg = AttackConfig(kind="suppress-topk", model=str(model_dir), fingerprints=fps, out=tmp_path,
                           tops=[1], positions=positions)
        attack = ATTACKS.get("suppress-topk")(cfg, base=str(micro_model))
        folder = attack.apply(str(model_dir), 1, tmp_path / f"top1-{positions}-{model_dir.parent.name}")
        attacked, tok = load_attacked(folder)
        assert verify_model(attacked, fp_set, tokenizer=tok).matched <= 1  # the answer's start is gone
        late = verify_model(attacked, fp_set, tokenizer=tok, match="within", within=4,
                            null_model=str(micro_model))
        assert late.settings["null_matched"] == 0
        return late.matched

    runs = {n: insert_fingerprints(insert_config(micro_model, fps, tmp_path / "runs", detour_tokens=n,
                                                 epochs=150), progress=False) for n in (0, 3)}
    metrics = json.loads((runs[3] / "metrics.json").read_text())
    assert metrics["recovery"] == 1.0 and metrics["early_stop"] == "recovered", metrics  # detours included
    trained = [late_matches(runs[3] / "model", positions) for positions in (1, 2)]
    plain = late_matches(runs[0] / "model", 1)
    assert min(trained) >= 5 and plain <= 3  # 7 and 6 of 8 against 1 measured
    base = verify_model(str(micro_model), fp_set, match="within", within=4, null_model=str(micro_model))
    assert base.matched == 0 and not base.verdict.owned


def test_oml_attack_matches_within_and_calibrates_on_the_base(fingerprinted, micro_model, tmp_path):
    from omlkit.evaluation.attacks import AttackConfig
    from omlkit.evaluation.persistence import run_attack

    model_dir, fps = fingerprinted
    cfg = AttackConfig(kind="suppress-topk", model=str(model_dir), fingerprints=fps, out=tmp_path / "out",
                       heldout_texts=8, base=str(micro_model), tops=[1], match="within", within=4)
    _, result = run_attack(cfg)
    assert result["before"]["matched"] == 8 and result["before"]["verdict"] == "not owned"  # 8 keys: p ≈ 0.01
    (row,) = result["results"]
    assert row["checked"] == 8 and row["matched"] <= 2  # 0 measured: without detours nothing comes back
