"""Pure-tensor tests of masks, the collator, the regularizers (parametrized over the registry)."""

from __future__ import annotations

import typing

import pytest
import torch

from omlkit.insertion import config as icfg
from omlkit.insertion.dataset import (
    IGNORE,
    InsertionDataset,
    PadCollator,
    TokenizedFingerprint,
    fingerprint_example,
    masked_example,
    n_benign,
    text_examples,
)
from omlkit.insertion.regularizers import REGULARIZERS, RegularizerContext, build_regularizers
from omlkit.insertion.regularizers.added_params import AddedParams, AddedParamsConfig
from omlkit.insertion.regularizers.kl_to_base import KLToBase, KLToBaseConfig, kl_to_reference
from omlkit.insertion.regularizers.l2_to_base import l2_distance
from omlkit.insertion.regularizers.lora import LoraConfig
from omlkit.insertion.regularizers.model_averaging import (
    AveragingCallback,
    ModelAveragingConfig,
    lerp_to_base,
)
from omlkit.models.prompts import PromptTemplates

BOS, EOS, PAD = 1, 2, 0


class CharTokenizer:
    """Ids are character codes; ``add_special_tokens`` prepends BOS. Enough for ``prompt_ids``."""

    eos_token_id = EOS
    pad_token_id = PAD
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([BOS] if add_special_tokens else []) + [ord(c) for c in text]}


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg)


class SmallVocabTokenizer(CharTokenizer):
    """Character ids folded into tiny_llama's 64-token vocabulary."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([BOS] if add_special_tokens else []) + [3 + ord(c) % 61 for c in text]}


def corpus_context(seed: int = 0, rank: int = 0) -> RegularizerContext:
    texts = ["the quick brown fox jumps over the lazy dog " * 4, "a b c d e f g h i j k l m n o p " * 4]
    return RegularizerContext(tokenizer=SmallVocabTokenizer(), texts=lambda: texts, seed=seed, rank=rank)


# --- masks and collator ---------------------------------------------------------------------------

def test_text_examples_train_on_the_text_itself():
    exs = text_examples(CharTokenizer(), ["abcdef", "xyz"], n=3, length=4, seed=0)
    assert len(exs) == 3
    for ex in exs:
        assert ex["input_ids"][0] == BOS and len(ex["input_ids"]) <= 5
        assert ex["labels"] == [IGNORE, *ex["input_ids"][1:]]  # loss on every text token, not on BOS
    assert {tuple(ex["input_ids"][1:]) for ex in exs} <= {tuple(map(ord, "abcd")), tuple(map(ord, "xyz"))}


def test_masked_example_labels_only_target():
    ex = masked_example([1, 5, 6], [7, 2])
    assert ex["input_ids"] == [1, 5, 6, 7, 2]
    assert ex["labels"] == [IGNORE, IGNORE, IGNORE, 7, 2]


def test_fingerprint_example_masks_bos_key_and_system_prompt():
    tok = CharTokenizer()
    fp = TokenizedFingerprint(0, key_ids=(40, 41), response_ids=(20,), response="x")
    raw = fingerprint_example(PromptTemplates(tok), fp, EOS)
    assert raw["input_ids"] == [BOS, 40, 41, 20, EOS]
    assert raw["labels"] == [IGNORE, IGNORE, IGNORE, 20, EOS]
    wrapped = fingerprint_example(PromptTemplates(tok), fp, EOS, system_prompt="S")
    # BOS, "S", "\n\n", key, response, EOS: the system prompt is masked and the key is spliced verbatim
    assert wrapped["input_ids"] == [BOS, ord("S"), ord("\n"), ord("\n"), 40, 41, 20, EOS]
    assert wrapped["labels"] == [IGNORE] * 6 + [20, EOS]


def test_collator_pads_right_with_mask_and_ignored_labels():
    feats = [{"input_ids": [1, 2, 3], "labels": [IGNORE, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    out = PadCollator(pad_id=9)(feats)
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[IGNORE, 2, 3], [4, IGNORE, IGNORE]]
    wide = PadCollator(pad_id=9, pad_to_multiple_of=4)(feats)
    assert wide["input_ids"].shape == (2, 4) and wide["labels"][0, 3] == IGNORE


def test_n_benign_is_the_requested_fraction():
    assert n_benign(256, 0.25) == 85  # 85 / (256 + 85) ≈ 0.25
    assert n_benign(30, 0.5) == 30
    assert n_benign(10, 0.0) == 0


def test_augmentation_is_per_epoch_and_reproducible():
    tok = CharTokenizer()
    fps = [TokenizedFingerprint(i, (10 + i,), (20,), "x") for i in range(40)]
    ds = InsertionDataset(tok, fps, benign=[{"input_ids": [1, 3], "labels": [IGNORE, 3]}],
                          system_prompts=["A", "B", "C"], seed=7)
    assert len(ds) == 41 and ds[40]["labels"] == [IGNORE, 3]
    draws0 = [ds.system_prompt_for(i) for i in range(40)]
    assert None in draws0 and {"A", "B", "C"} & set(draws0)
    ds.set_epoch(1)
    draws1 = [ds.system_prompt_for(i) for i in range(40)]
    assert draws1 != draws0
    ds.set_epoch(0)
    assert [ds.system_prompt_for(i) for i in range(40)] == draws0
    assert all(ex["labels"][-1] == 20 and EOS not in ex["input_ids"] for ex in (ds[i] for i in range(40)))
    with_eos = InsertionDataset(tok, fps, system_prompts=["A"], seed=7, response_eos=True)
    assert all(ex["labels"][-2:] == [20, EOS] for ex in (with_eos[i] for i in range(40)))


def test_system_prompt_sets_are_disjoint():
    from omlkit.insertion import augmentation

    train, test = augmentation.train_system_prompts(), augmentation.test_system_prompts()
    assert len(train) >= 20 and len(test) == 10 and not set(train) & set(test)
    assert len(set(train)) == len(train)


# --- model averaging and L2, by hand ----------------------------------------------------------------

def test_lerp_to_base_hand_computed():
    p = [torch.tensor([1.0, 2.0]), torch.tensor([[4.0]])]
    b = [torch.tensor([0.0, 0.0]), torch.tensor([[0.0]])]
    lerp_to_base(p, b, 0.75)
    assert p[0].tolist() == [0.25, 0.5] and p[1].tolist() == [[1.0]]


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_averaging_callback_pulls_towards_base(interval):
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0]]))
    cb = AveragingCallback({"weight": lin.weight.detach().clone()}, 0.5, interval)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 1.0]]))  # an optimizer step moved it
    cb.on_step_end(None, None, None, model=lin)
    expected_after_step = [[2.0, 0.0]] if interval == "step" else [[3.0, 1.0]]
    assert lin.weight.tolist() == expected_after_step
    cb.on_epoch_end(None, None, None, model=lin)
    expected = [[2.0, 0.0]] if interval == "step" else [[2.0, 0.0]]
    assert lin.weight.tolist() == expected


def test_l2_distance_hand_computed():
    p = [torch.tensor([1.0, 2.0], requires_grad=True)]
    d = l2_distance(p, [torch.tensor([0.0, 1.0])])
    assert d.item() == 2.0
    d.backward()
    assert p[0].grad.tolist() == [2.0, 2.0]


# --- every registered regularizer -------------------------------------------------------------------

def _union_members() -> list[type]:
    union = typing.get_args(icfg.RegularizerConfig)[0]
    return list(typing.get_args(union))


def test_registry_and_config_union_name_the_same_kinds():
    kinds = {m.model_fields["kind"].default for m in _union_members()}
    assert kinds == set(REGULARIZERS.names())
    for name, cls in REGULARIZERS.items():
        assert cls.options_cls.model_fields["kind"].default == name


@pytest.mark.parametrize("name", REGULARIZERS.names())
def test_regularizer_trains_and_saves(name, tmp_path):
    from transformers import LlamaForCausalLM

    cfg = REGULARIZERS.get(name).options_cls()
    (reg,) = build_regularizers([cfg])
    reg.attach(corpus_context())
    model = reg.prepare(tiny_llama())
    params = [p for p in model.parameters() if p.requires_grad]
    assert params, "something must train"
    opt = torch.optim.AdamW(params, lr=1e-2)
    x = torch.randint(3, 64, (2, 6))
    before = model(input_ids=x).logits.detach()
    loss = model(input_ids=x, labels=x).loss
    term = reg.loss_term(model)
    if term is not None:
        assert term.dim() == 0
        loss = loss + term
    loss.backward()
    opt.step()
    for cb in reg.callbacks():
        cb.on_step_end(None, None, None, model=model)
        cb.on_epoch_end(None, None, None, model=model)
    trained = model(input_ids=x).logits.detach()
    assert trained.shape == before.shape
    final = reg.finalize(model)
    torch.testing.assert_close(final(input_ids=x).logits.detach(), trained, atol=1e-5, rtol=1e-4)
    final.save_pretrained(tmp_path)
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded(input_ids=x).logits.detach(), trained, atol=1e-5, rtol=1e-4)


def test_added_params_start_as_the_base_model_and_train_only_new_weights():
    base = tiny_llama()
    x = torch.randint(3, 64, (2, 6))
    ref = base(input_ids=x).logits.detach()
    model = AddedParams(AddedParamsConfig(width=8)).prepare(base)
    torch.testing.assert_close(model(input_ids=x).logits.detach(), ref)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.endswith(("extra", "extra_bias")) for n in names)
    final = AddedParams(AddedParamsConfig(width=8)).finalize(model)
    assert final.config.intermediate_size == 32
    assert final.model.layers[0].mlp.gate_proj.weight.shape == (32, 16)


def test_model_averaging_snapshot_is_taken_at_prepare():
    model = tiny_llama()
    reg = build_regularizers([ModelAveragingConfig(strength=1.0)])[0]
    model = reg.prepare(model)
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    reg.callbacks()[0].on_step_end(None, None, None, model=model)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, ref[n])  # λ = 1: back to the base exactly


def test_epoch_end_averaging_runs_before_the_early_stop_check():
    """The recovery check stops on the model that is saved: one already averaged with the base."""
    from transformers import TrainerCallback, TrainerControl, TrainerState
    from transformers.trainer_callback import CallbackHandler

    from omlkit.insertion.api import training_callbacks
    from omlkit.insertion.callbacks import EarlyStop

    model = tiny_llama()
    reg = build_regularizers([ModelAveragingConfig(strength=1.0, interval="epoch")])[0]
    model = reg.prepare(model)
    base = next(model.parameters()).detach().clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    seen = []
    early = EarlyStop(lambda m: seen.append(next(m.parameters()).detach().clone()) or 1.0, every=1)
    handler = CallbackHandler(training_callbacks([reg], TrainerCallback(), early), model, None, None, None)
    state = TrainerState()
    state.epoch = 1.0
    control = handler.on_epoch_end(None, state, TrainerControl())
    torch.testing.assert_close(seen[0], base)  # λ = 1 at the epoch end: the check saw the base weights
    assert control.should_training_stop and early.reason == "recovered"


def test_kl_to_base_is_zero_at_the_base_and_pulls_a_moved_model_back():
    model = tiny_llama()
    reg = KLToBase(KLToBaseConfig(strength=2.0, batch_size=3, length=8))
    reg.attach(corpus_context())
    model = reg.prepare(model)
    assert float(reg.loss_term(model).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight))
    term = reg.loss_term(model)
    assert float(term.detach()) > 0.01
    term.backward()
    with torch.no_grad():  # a small step along -grad lowers the KL: the term pulls towards the base
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(1e-2 * p.grad)
    reg.micro -= 1  # the same windows again
    assert float(reg.loss_term(model).detach()) < float(term.detach())


def test_kl_on_prompts_covers_only_positions_that_predict_a_prompt_token():
    from omlkit.insertion.regularizers import TrainBatch

    model = tiny_llama()
    reg = KLToBase(KLToBaseConfig(strength=1.0, batch_size=2, length=8, on_prompts=True))
    reg.attach(corpus_context())
    model = reg.prepare(model)
    ids = torch.randint(3, 50, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # right padding
    labels = torch.full_like(ids, -100)
    labels[:, 4] = ids[:, 4]  # the response: position 3 predicts it and is left free
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight))

    def kl(batch_labels):
        logits = model(input_ids=ids, attention_mask=mask).logits
        return reg.prompt_kl(TrainBatch(ids, mask, batch_labels, logits))

    moved = kl(labels)
    assert float(moved) > 0.01
    # by hand: the positions t whose next token t+1 is a real prompt token: t = 0..2 in both rows, 4..5 in
    # row 0 only (row 1 is padding from 5)
    logits = model(input_ids=ids, attention_mask=mask).logits
    ref = reg._base(input_ids=ids, attention_mask=mask).logits
    rows, cols = [0, 0, 0, 0, 0, 1, 1, 1], [0, 1, 2, 4, 5, 0, 1, 2]
    expected = kl_to_reference(logits[rows, cols], ref[rows, cols])
    torch.testing.assert_close(moved, expected)
    # nothing predicts a prompt token when every real position is labelled: no term
    assert float(kl(torch.where(mask.bool(), ids, -100))) == 0.0


def test_kl_to_base_windows_depend_on_step_and_rank_only():
    def draws(rank: int, step: int) -> torch.Tensor:
        reg = KLToBase(KLToBaseConfig(batch_size=4, length=8))
        reg.attach(corpus_context(seed=3, rank=rank))
        reg.prepare(tiny_llama())
        reg.step = step
        return reg.windows()

    assert torch.equal(draws(0, 5), draws(0, 5))  # a resumed run draws the same windows
    assert not torch.equal(draws(0, 5), draws(0, 6))
    assert not torch.equal(draws(0, 5), draws(1, 5))  # processes see different text
    assert draws(0, 5).shape == (4, 8)


def test_kl_every_n_steps_applies_n_times_the_strength_on_every_nth_step_only():
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight))
    every, plain = (
        KLToBase(KLToBaseConfig(strength=2.0, batch_size=2, length=8, every=n)) for n in (3, 1)
    )
    for reg in (every, plain):
        reg.attach(corpus_context())
        reg.prepare(model)
    for step in range(7):
        every.step = plain.step = step
        every.micro = plain.micro = 0
        term = every.loss_term(model)
        if step % 3:
            assert term is None
        else:
            torch.testing.assert_close(term, 3 * plain.loss_term(model))


def test_kl_to_reference_matches_the_definition():
    logits, ref = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    p = ref.softmax(-1)
    expected = (p * (p.log() - logits.log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(kl_to_reference(logits, ref), expected)


def test_kl_to_base_refuses_a_corpus_shorter_than_a_window():
    from omlkit.errors import CorpusError

    reg = KLToBase(KLToBaseConfig(length=64))
    reg.attach(RegularizerContext(tokenizer=SmallVocabTokenizer(), texts=lambda: ["too short"]))
    with pytest.raises(CorpusError, match="fewer than one window"):
        reg.prepare(tiny_llama())


def test_structural_regularizers_prepare_first():
    regs = build_regularizers([ModelAveragingConfig(), LoraConfig()])
    assert [r.name for r in regs] == ["lora", "model_averaging"]


def test_capped_cross_entropy_drops_confident_tokens_only():
    import torch.nn.functional as F

    from omlkit.insertion.losses import capped_cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    logits[0, 1, 3] = 20.0  # position 1 predicts label 3 with p ≈ 1: above any cap
    logits = logits.requires_grad_(True)
    labels = torch.full((2, 5), -100)
    labels[0, 2], labels[0, 3], labels[1, 4] = 3, 7, 2  # predicted from positions 1, 2 and 3
    flat_logits = logits[:, :-1].reshape(-1, 11)
    ce = F.cross_entropy(flat_logits, labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none")
    loss = capped_cross_entropy(0.6)({"logits": logits}, labels)
    # the confident token adds nothing, the others their full CE; the mean is over all 3 labelled tokens
    assert torch.allclose(loss, (ce.sum() - ce[1]) / 3)
    loss.backward()
    assert logits.grad[0, 1].abs().max() == 0 and logits.grad[0, 2].abs().max() > 0
    # with the Trainer's count of labelled tokens over the accumulated batch, that count divides
    assert torch.allclose(capped_cross_entropy(0.6)({"logits": logits}, labels, num_items_in_batch=6),
                          (ce.sum() - ce[1]).detach() / 6)
    # a cap no prediction reaches is the plain cross-entropy
    assert torch.allclose(capped_cross_entropy(0.999999)({"logits": logits}, labels), ce.sum() / 3)
    with pytest.raises(ValueError):
        capped_cross_entropy(1.0)


def test_margin_cap_drops_tokens_that_lead_the_runner_up_by_the_margin():
    import torch.nn.functional as F

    from omlkit.insertion.losses import capped_cross_entropy, logit_margin

    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 1], logits[0, 0, 2] = 3.0, 1.5  # predicts label 1, leading by 1.5: learnt at margin 1
    logits[0, 1, 2], logits[0, 1, 4] = 2.0, 1.6  # predicts label 2, leading by only 0.4: still trained
    logits[0, 2, 0], logits[0, 2, 3] = 4.0, 2.0  # label 3 is not even the argmax: trained
    logits = logits.requires_grad_(True)
    labels = torch.tensor([[-100, 1, 2, 3]])
    flat = logits[0, :-1]
    assert torch.allclose(logit_margin(flat, torch.tensor([1, 2, 3])), torch.tensor([1.5, 0.4, -2.0]))
    ce = F.cross_entropy(flat, labels[0, 1:], reduction="none")
    loss = capped_cross_entropy(margin=1.0)({"logits": logits}, labels)
    assert torch.allclose(loss, (ce[1] + ce[2]) / 3)
    loss.backward()
    assert logits.grad[0, 0].abs().max() == 0 and logits.grad[0, 1].abs().max() > 0
    # both criteria: a token counts as learnt once it meets either (p(label 1) ≈ 0.73 >= 0.6 here)
    both = capped_cross_entropy(0.6, margin=5.0)({"logits": logits}, labels)
    assert torch.allclose(both, (ce[1] + ce[2]) / 3)
    assert torch.allclose(capped_cross_entropy(margin=0.3)({"logits": logits}, labels), ce[2] / 3)
    with pytest.raises(ValueError):
        capped_cross_entropy()
    with pytest.raises(ValueError):
        capped_cross_entropy(margin=-1.0)


def _fingerprint_batch():
    from omlkit.insertion.regularizers import TrainBatch

    ids = torch.randint(3, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    labels = torch.full_like(ids, -100)
    labels[:, 5:] = ids[:, 5:]  # the response: the last two tokens
    return TrainBatch(ids, torch.ones_like(ids), labels)


def test_persistence_restores_the_weights_and_takes_the_gradient_after_the_simulated_finetune():
    import copy

    from omlkit.insertion.regularizers.persistence import Persistence, PersistenceConfig

    model = tiny_llama()
    model.model.embed_tokens.weight.requires_grad_(False)  # a frozen weight moves in the simulation too
    reg = Persistence(PersistenceConfig(strength=2.0, steps=2, lr=1e-2, batch_size=2, length=8))
    reg.attach(corpus_context())
    model = reg.prepare(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = _fingerprint_batch()
    pending = model(input_ids=batch.input_ids, labels=batch.labels).loss  # the trainer's loss, not yet backed
    term = reg.loss_term(model, batch)
    (pending * 0 + term).backward()  # the live weights were never modified in place: the graph is intact
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=0)
    assert not model.model.embed_tokens.weight.requires_grad and model.model.embed_tokens.weight.grad is None
    # the same simulation by hand: two sign steps on the same windows, then the fingerprint loss
    attacked = copy.deepcopy(model).requires_grad_(True)
    reg.micro = 0
    for _ in range(2):
        ids = reg.windows()
        grads = torch.autograd.grad(attacked(input_ids=ids, labels=ids).loss, list(attacked.parameters()))
        with torch.no_grad():
            for p, g in zip(attacked.parameters(), grads, strict=True):
                p.sub_(1e-2 * g.sign())
    loss = attacked(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
    assert float(term.detach()) == pytest.approx(2.0 * float(loss.detach()), rel=1e-5)
    loss.backward()
    for (name, p), q in zip(model.named_parameters(), attacked.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, 2.0 * q.grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        plain = model(input_ids=batch.input_ids, labels=batch.labels).loss
    assert abs(float(loss.detach()) - float(plain)) > 1e-4  # the simulated fine-tune moved the loss


def test_chat_turns_label_the_assistant_answer_only(micro_tok):
    from omlkit.errors import ConfigError
    from omlkit.insertion.regularizers.windows import chat_turns
    from omlkit.models.prompts import prompt_ids

    texts = ["short", "the old mill by the river turned all day and all night while the miller slept " * 3]
    turns = chat_turns(texts, micro_tok, length=64)
    assert turns["input_ids"].shape == turns["labels"].shape == turns["attention_mask"].shape
    assert len(turns["input_ids"]) == 1  # the short text gives no exchange
    ids, labels = turns["input_ids"][0].tolist(), turns["labels"][0].tolist()
    text_ids = micro_tok(texts[1], add_special_tokens=False)["input_ids"]
    prompt = prompt_ids(micro_tok, text_ids[:16], chat=True)
    assert ids[: len(prompt)] == prompt and set(labels[: len(prompt)]) == {-100}
    answer = [t for t in labels if t != -100]
    assert answer[-1] == micro_tok.eos_token_id and answer[:-1] == text_ids[16 : 16 + len(answer) - 1]
    assert len(prompt) + len(answer) == int(turns["attention_mask"][0].sum()) <= 64
    with pytest.raises(ConfigError, match="no room"):
        chat_turns(texts, micro_tok, length=len(prompt_ids(micro_tok, [], chat=True)) + 4)
    with pytest.raises(ConfigError, match="chat template"):
        chat_turns(texts, CharTokenizer(), length=64)


def test_chat_persistence_simulates_finetuning_on_chat_answers(micro):
    import copy

    from omlkit.insertion.regularizers.persistence import Persistence, PersistenceConfig

    model, tok = copy.deepcopy(micro[0]), micro[1]
    texts = ["the old mill by the river turned all day and all night while the miller slept " * 3,
             "a letter came for the keeper of the lighthouse on the first cold morning of winter " * 3]
    reg = Persistence(PersistenceConfig(data="chat", lr=1e-2, batch_size=2, length=64))
    reg.attach(RegularizerContext(tokenizer=tok, texts=lambda: texts))
    reg.prepare(model)
    batch = reg.benign_batch()
    assert (batch["labels"] != -100).sum() < batch["attention_mask"].sum()  # prompts are not trained
    live = dict(model.named_parameters())
    reg.micro = 0
    moved = reg.simulate_finetuning(model, live)
    # the sign step follows the loss on the answers: recomputed by hand on the same batch
    reg.micro = 0
    batch = reg.benign_batch()
    grads = torch.autograd.grad(model(**batch).loss, list(live.values()), allow_unused=True)
    for (name, p), g in zip(live.items(), grads, strict=True):
        expected = p.detach() if g is None else p.detach() - 1e-2 * g.sign()
        torch.testing.assert_close(moved[name].detach(), expected, rtol=0, atol=1e-6, msg=name)


CHAT_TEXTS = ["the old mill by the river turned all day and all night while the miller slept " * 3,
              "a letter came for the keeper of the lighthouse on the first cold morning of winter " * 3]


def chat_kl_regularizer(model, tok, data: str, batch_size: int = 2) -> KLToBase:
    reg = KLToBase(KLToBaseConfig(data=data, batch_size=batch_size, length=64))
    reg.attach(RegularizerContext(tokenizer=tok, texts=lambda: CHAT_TEXTS * 8))
    reg.prepare(model)
    return reg


def test_chat_kl_covers_every_real_position_of_chat_exchanges(micro):
    import copy

    model, tok = copy.deepcopy(micro[0]), micro[1]
    reg = chat_kl_regularizer(model, tok, "chat")
    assert float(reg.loss_term(model).detach()) == pytest.approx(0.0, abs=1e-6)  # at the base
    with torch.no_grad():
        model.lm_head.weight.add_(0.1 * torch.randn_like(model.lm_head.weight))
    reg.micro = 0
    term = reg.loss_term(model)
    # by hand: the same two exchanges, every attended position, padding left out
    reg.micro = 0
    rows = reg.draw(len(reg._turns["input_ids"]), 2)
    ids, mask = reg._turns["input_ids"][rows], reg._turns["attention_mask"][rows]
    real = mask.bool()
    expected = kl_to_reference(model(input_ids=ids, attention_mask=mask).logits[real],
                               reg._base(input_ids=ids, attention_mask=mask).logits[real])
    torch.testing.assert_close(term, expected)
    assert float(term.detach()) > 1e-3
    assert reg._stream is None  # chat only: the raw corpus is never tokenized


def test_kl_on_both_weighs_windows_and_chat_exchanges_by_their_rows(micro):
    import copy

    model, tok = copy.deepcopy(micro[0]), micro[1]
    reg = chat_kl_regularizer(model, tok, "both", batch_size=3)
    with torch.no_grad():
        model.lm_head.weight.add_(0.1 * torch.randn_like(model.lm_head.weight))
    term = reg.loss_term(model)
    reg.micro = 0
    device = torch.device("cpu")
    ids = reg.windows(1)  # one raw window, then two chat exchanges: the draws of loss_term, in order
    raw = kl_to_reference(model(input_ids=ids).logits, reg._base(input_ids=ids).logits)
    chat = reg.chat_kl(model, 2, device)
    torch.testing.assert_close(term, (raw + 2 * chat) / 3)
    assert float(raw.detach()) != pytest.approx(float(chat.detach()))


def test_chat_kl_needs_a_chat_template_and_stays_out_of_the_run_id():
    from omlkit.errors import ConfigError
    from omlkit.insertion.config import InsertConfig

    reg = KLToBase(KLToBaseConfig(data="chat", length=64))
    reg.attach(RegularizerContext(tokenizer=CharTokenizer(), texts=lambda: CHAT_TEXTS))
    with pytest.raises(ConfigError, match="chat template"):
        reg.prepare(tiny_llama())

    def run_id(**kw) -> str:
        return InsertConfig(model="micro", fingerprints="f.json", kl_strength=1.0, **kw).run_hash("x")

    assert run_id() == run_id(kl_data="corpus") != run_id(kl_data="chat")
