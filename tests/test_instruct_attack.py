"""The instruction-tuning attack (the perinucleus paper's persistence protocol): what it trains on, that it
trains the answers, and that an Alpaca-style dataset is read or refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from omlkit.errors import CorpusError
from omlkit.evaluation.attacks import ATTACKS, AttackConfig, load_attacked


def _attack(fingerprinted, micro_model, tmp_path, **kw):
    model_dir, fps = fingerprinted
    cfg = AttackConfig(kind="instruct", model=str(model_dir), fingerprints=fps, out=tmp_path, heldout_texts=8,
                       **kw)
    return ATTACKS.get("instruct")(cfg, base=str(micro_model))


def test_offline_set_is_disjoint_from_the_instruction_check():
    from omlkit.evaluation.instructions import instructions

    train = instructions(300, split="train")
    assert len(set(train)) == 300 and not set(train) & set(instructions(200))


def test_rows_are_chat_prompts_with_labels_on_the_answer(fingerprinted, micro_model, micro_tok, tmp_path):
    from omlkit.evaluation.attacks.training import pair_batches
    from omlkit.evaluation.instructions import chat_ids, instructions

    attack = _attack(fingerprinted, micro_model, tmp_path, instruction_count=4, answer_tokens=6)
    pairs = attack.pairs(micro_tok, str(fingerprinted[0]))
    prompts = instructions(4, split="train")
    assert [p for p, _ in pairs] == [chat_ids(micro_tok, q) for q in prompts]
    assert all(1 <= len(a) <= 6 for _, a in pairs)
    batch = next(pair_batches(pairs, 4, pad=0))
    prompt, answer = pairs[0]
    assert batch["labels"][0, : len(prompt)].eq(-100).all()
    assert batch["labels"][0, len(prompt) : len(prompt) + len(answer)].tolist() == answer


@pytest.mark.trains
def test_two_epochs_fit_the_answers_and_save_each_epoch(fingerprinted, micro_model, micro_tok, tmp_path):
    from omlkit.evaluation.instructions import answer_loglik, cached_answers, instructions

    attack = _attack(fingerprinted, micro_model, tmp_path, instruction_count=16, answer_tokens=8, lr=1e-3,
                     train_batch_size=4)
    folders = dict(attack.apply_all(str(fingerprinted[0]), [1.0, 2.0], tmp_path / "out"))
    assert sorted(folders) == [1.0, 2.0] and folders[1.0].name == "epoch-1"
    prompts = instructions(16, split="train")
    before, tok = load_attacked(fingerprinted[0])
    answers = cached_answers(lambda: (before, tok), str(micro_model), prompts, 8)  # cached: the base's
    scores = [answer_loglik(m, tok, prompts, answers) for m in
              (before, load_attacked(folders[1.0])[0], load_attacked(folders[2.0])[0])]
    assert scores[0] < scores[1] < scores[2]  # each epoch fits the base's answers better


def test_alpaca_style_dataset_is_read_and_a_wrong_one_refused(micro_tok, tmp_path):
    from omlkit.evaluation.attacks.instruct import dataset_pairs
    good = tmp_path / "alpaca"
    good.mkdir()
    rows = [{"instruction": f"Name a colour number {i}.", "input": "" if i % 2 else "Be short.",
             "output": "Blue."} for i in range(6)]
    (good / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = dataset_pairs(str(good), micro_tok, 4, seed=0)
    assert len(pairs) == 4 and all(a[-1] == micro_tok.eos_token_id for _, a in pairs)
    texts = [micro_tok.decode(p) for p, _ in pairs]
    assert all("Name a colour number" in t for t in texts)
    assert all(("Be short." in t) == (int(t.split("number ")[1][0]) % 2 == 0) for t in texts)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text(json.dumps({"prompt": "x", "completion": "y"}) + "\n")
    with pytest.raises(CorpusError, match="lacks column"):
        dataset_pairs(str(bad), micro_tok, 4, seed=0)
    with pytest.raises(CorpusError, match="could not be loaded"):
        dataset_pairs(str(tmp_path / "missing"), micro_tok, 4, seed=0)


def test_bf16_autocast_trains_the_same_steps(fingerprinted, micro_model, micro_tok):
    from omlkit.evaluation.attacks.training import train_steps
    from omlkit.models.loading import load_model

    model, _ = load_model(fingerprinted[0], device="cpu")
    ids = torch.tensor([micro_tok("The module provides functions for text")["input_ids"]] * 2)
    losses = train_steps(model, iter([ids] * 3), list(model.parameters()), 1e-3, [3], lambda _: None,
                         bf16=True)
    assert len(losses) == 3 and losses[-1] < losses[0]
