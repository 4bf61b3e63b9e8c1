"""The attacks of arXiv 2509.26598 and MEraser: each removes what it targets at the answer's start and
leaves ordinary text mostly alone; ``run_attack`` reports attack success and generation utility."""

from __future__ import annotations

import pytest
import torch

from omlkit.evaluation.attacks import ATTACKS, AttackConfig, load_attacked


def _attack(kind: str, fingerprinted, micro_model, tmp_path, **kw):
    model_dir, fps = fingerprinted
    cfg = AttackConfig(
        kind=kind, model=str(model_dir), fingerprints=fps, out=tmp_path, heldout_texts=32, **kw
    )
    return ATTACKS.get(kind)(cfg, base=str(micro_model))


def _wrapped(kind: str, strength: float, fingerprinted, micro_model, tmp_path, **kw):
    attack = _attack(kind, fingerprinted, micro_model, tmp_path, **kw)
    return load_attacked(attack.apply(str(fingerprinted[0]), strength, tmp_path / f"{kind}-{strength}"))


def _generation(fingerprinted, micro_model):
    from omlkit.evaluation.generated import GenerationCheck
    from omlkit.evaluation.utility import heldout_texts
    from omlkit.models.loading import load_model

    model, tok = load_model(fingerprinted[0], device="cpu")
    judge, _ = load_model(micro_model, device="cpu")
    return GenerationCheck.build(model, judge, tok, heldout_texts(32))


def test_leading_ban_acts_on_the_first_positions_only():
    from omlkit.evaluation.attacks.suppress_topk import BanTop

    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 5.0, 2.0]])
    ban = BanTop(torch.ones(2, 3, dtype=torch.long), positions=2, k=2)
    first = ban(torch.zeros(2, 3, dtype=torch.long), scores)  # no answer token yet
    assert torch.isinf(first[0, :2]).all() and torch.isfinite(first[0, 2:]).all()
    assert torch.isinf(first[1, [2, 3]]).all() and first[1].argmax() == 1
    assert torch.equal(ban(torch.zeros(2, 5, dtype=torch.long), scores), scores)  # two answer tokens out
    everything = BanTop(torch.ones(2, 3, dtype=torch.long), positions=1, k=4)
    assert torch.equal(everything(torch.zeros(2, 3, dtype=torch.long), scores), scores)  # never a dead row


def test_neighbours_are_the_spellings_of_a_token():
    from omlkit.evaluation.attacks.suppress_neighbor import Spellings

    vocab = [" above", "above", " Above", " ab", "ove", " abovementioned", " cat", " ", "ABOVE "]
    spellings = Spellings(vocab)
    assert sorted(spellings.neighbours(0)) == [0, 1, 2, 3, 5, 8]
    assert spellings.neighbours(6) == [6]
    assert spellings.neighbours(7) == [7]  # whitespace has no spellings


@pytest.mark.trains
@pytest.mark.parametrize(("kind", "strength"), [("suppress-topk", 1), ("suppress-neighbor", 1)])
def test_answer_start_suppression_removes_fingerprints_and_little_else(
    kind, strength, fingerprinted, micro_model, tmp_path
):
    from omlkit.verification.verify import verify_model

    wrapped, tok = _wrapped(kind, strength, fingerprinted, micro_model, tmp_path)
    assert verify_model(str(fingerprinted[0]), fingerprinted[1]).matched == 8
    assert verify_model(wrapped, fingerprinted[1], tokenizer=tok).matched == 0
    # the answers change, but only where they start: most of what follows stays fluent
    assert _generation(fingerprinted, micro_model).measure(wrapped)["generation_utility"] > 0.5


@pytest.mark.trains
def test_neighbor_bans_what_topk_lets_through(fingerprinted, micro_model, tmp_path):
    from omlkit.evaluation.attacks.suppress_neighbor import Spellings

    model, tok = load_attacked(fingerprinted[0])
    topk, _ = _wrapped("suppress-topk", 1, fingerprinted, micro_model, tmp_path)
    neighbor, _ = _wrapped("suppress-neighbor", 1, fingerprinted, micro_model, tmp_path)
    spellings = Spellings.of(tok, model.config.vocab_size)
    ids = tok(fingerprinted_key(fingerprinted), return_tensors="pt")["input_ids"]
    top = int(model(input_ids=ids).logits[0, -1].argmax())
    banned_by_neighbor = set(spellings.neighbours(top))
    assert len(banned_by_neighbor) > 1  # a word-initial token has other spellings in any BPE vocabulary
    first_topk = int(topk.generate(ids, max_new_tokens=1, do_sample=False)[0, -1])
    first_neighbor = int(neighbor.generate(ids, max_new_tokens=1, do_sample=False)[0, -1])
    assert first_topk != top and first_neighbor not in banned_by_neighbor


def fingerprinted_key(fingerprinted) -> str:
    """The first key of the micro fingerprint set."""
    from omlkit.fingerprints import FingerprintSet

    return FingerprintSet.load(fingerprinted[1]).fingerprints[0].key


class _Chain(torch.nn.Module):
    """A 4-token model: after token 0 it is sure the next is EOS (3); after anything else it is unsure."""

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        last = input_ids[..., None]
        sure, unsure = torch.tensor([0.0, 0.0, 0.0, 9.0]), torch.tensor([1.0, 1.1, 1.2, 0.0])
        logits = torch.where(last == 0, sure, unsure)
        return type("Out", (), {"logits": logits})()


def test_lookahead_bans_a_top_token_only_when_a_confident_run_follows():
    from omlkit.evaluation.attacks.suppress_lookahead import BanMemorisedRun

    ban = BanMemorisedRun(torch.ones(2, 2, dtype=torch.long), 1, _Chain(), gate=0.9, horizon=3, eos=[3])
    prompts = torch.tensor([[1, 2], [1, 2]])
    scores = torch.tensor([[5.0, 1.0, 0.0, 0.0], [1.0, 5.0, 0.0, 0.0]])  # tops: 0 (then EOS), 1 (unsure)
    confidence = ban.run_confidence(prompts, torch.tensor([0, 1])).tolist()
    assert confidence == pytest.approx([0.9996, 0.3306], abs=1e-3)
    out = ban(prompts, scores)
    assert out[0, 0] == float("-inf") and out[0].argmax() == 1
    assert torch.equal(out[1], scores[1])
    assert ban.run_confidence(prompts, torch.tensor([3, 3])).tolist() == [0.0, 0.0]  # EOS first: no run


@pytest.mark.trains
def test_lookahead_wrapper_decodes_fingerprint_keys(fingerprinted, micro_model, tmp_path):
    from omlkit.verification.verify import verify_model

    # the micro fingerprints are one word then EOS at p > 0.7: gate 0.5 bans each first word
    wrapped, tok = _wrapped("suppress-lookahead", 0.5, fingerprinted, micro_model, tmp_path, horizon=1)
    assert verify_model(wrapped, fingerprinted[1], tokenizer=tok).matched <= 2


def test_meraser_pairs_mismatch_then_match(micro_tok):
    from omlkit.evaluation.attacks.meraser import mismatched, opening_pairs, pair_batches

    texts = ["one two three four five six seven eight", "alpha beta gamma delta epsilon zeta eta theta"]
    pairs = opening_pairs(micro_tok, texts, seq_len=16)
    swapped = mismatched(pairs)
    assert [p[0] for p in swapped] == [p[0] for p in pairs]
    assert [p[1] for p in swapped] == [pairs[1][1], pairs[0][1]]
    batch = next(pair_batches(pairs, 2, pad=0))
    opening, rest = pairs[0]
    assert batch["labels"][0, : len(opening)].eq(-100).all()
    assert batch["labels"][0, len(opening) : len(opening) + len(rest)].tolist() == rest


@pytest.mark.trains
def test_meraser_removes_fingerprints_at_a_small_perplexity_cost(fingerprinted, micro_model, tmp_path):
    from omlkit.evaluation.utility import heldout_perplexity, heldout_texts
    from omlkit.verification.verify import verify_model

    attack = _attack("meraser", fingerprinted, micro_model, tmp_path, lr=2e-3, train_batch_size=4)
    model, tok = load_attacked(attack.apply(str(fingerprinted[0]), 100, tmp_path / "meraser"))
    assert verify_model(model, fingerprinted[1], tokenizer=tok).matched <= 2  # 0 measured
    plain, _ = load_attacked(fingerprinted[0])
    texts = heldout_texts(16)
    assert heldout_perplexity(model, tok, texts) < 1.5 * heldout_perplexity(plain, tok, texts)


@pytest.mark.trains
def test_run_attack_reports_attack_success_and_generation_utility(fingerprinted, micro_model, tmp_path):
    from omlkit.evaluation.persistence import markdown_table, run_attack

    model_dir, fps = fingerprinted
    cfg = AttackConfig(
        kind="suppress-topk", model=str(model_dir), fingerprints=fps, out=tmp_path / "out", heldout_texts=16,
        base=str(micro_model), tops=[1],
    )
    _, result = run_attack(cfg)
    (row,) = result["results"]
    assert row["attack_success"] == 1.0 and row["verdict_flipped"] is True
    # every answer's first token changed; the micro model's judge may even prefer what follows
    assert row["changed_continuations"] > 0.5 and 0.0 < row["generation_utility"] < 10.0
    assert row["utility_delta"] == pytest.approx(0.0, abs=1e-6)  # the weights are the model's own
    assert "| 1 | 0/8 | 0.0% | not owned |" in markdown_table(result)
