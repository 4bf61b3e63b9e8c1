"""The instruction check: does a fingerprinted instruct model still answer as its base model did?

Offline and deterministic: instructions are built from the corpus's held-out paragraphs with a few
task templates (summarise, explain, ask, rewrite, continue). The base model answers each one greedily
through its chat template; the check is the mean log-likelihood per token that a model gives those
answers, reported as a delta against the base model's own (0 for the base; negative when the model
drifted away from the base's behaviour). The base's answers and score are cached per base-model content
hash in ``$OMLKIT_HOME/instructions/``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from omlkit.io import atomic_write_json, sha256_bytes
from omlkit.paths import omlkit_home

#: Task templates, each filled with a held-out sentence or paragraph.
TEMPLATES = (
    "Summarize the following text in one sentence.\n\n{text}",
    "Explain in simple words what this means: {text}",
    "Write one question that the following text answers.\n\n{text}",
    "Rewrite this sentence so that it is easier to read: {text}",
    "Continue the following text with one more sentence.\n\n{text}",
    "What is the main idea of this passage?\n\n{text}",
)


def instructions(n: int = 200, seed: int = 0, max_chars: int = 300, split: str = "heldout") -> list[str]:
    """``n`` instructions over a corpus split, the same for a seed: the held-out split (never trained
    on) for the check, the train split for an instruction-tuning set that the check never sees."""
    from omlkit.models.corpus import corpus_split

    texts = [t.strip()[:max_chars].rsplit(" ", 1)[0] if len(t) > max_chars else t.strip()
             for t in corpus_split(split) if len(t.split()) >= 6]
    rng = random.Random(seed)
    picked = rng.sample(texts, n) if n <= len(texts) else [rng.choice(texts) for _ in range(n)]
    return [TEMPLATES[i % len(TEMPLATES)].format(text=t) for i, t in enumerate(picked)]


def chat_ids(tokenizer, instruction: str) -> list[int]:
    """Token ids of ``instruction`` as a user turn of the chat template, ready for the answer."""
    from omlkit.models.prompts import prompt_ids

    return prompt_ids(tokenizer, tokenizer(instruction, add_special_tokens=False)["input_ids"], chat=True)


def base_answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 48) -> list[list[int]]:
    """The base model's greedy answers (token ids, EOS kept) to ``prompts`` in its chat template."""
    from omlkit.insertion.greedy import greedy_generate
    from omlkit.models.logits import pad_id

    ids = [chat_ids(tokenizer, p) for p in prompts]
    return greedy_generate(model, ids, max_new_tokens, pad_id(tokenizer), tokenizer.eos_token_id,
                           batch_size=32)


def _cache_path(model_name: str, prompts: Sequence[str], *extra) -> Path:
    """Where a model's answers to ``prompts`` are cached: keyed by the model's content hash."""
    from omlkit.models.loading import model_sha

    key = sha256_bytes(json.dumps([model_sha(model_name), list(prompts), *extra]).encode())[:16]
    return omlkit_home() / "instructions" / f"{key}.json"


def cached_answers(load: Callable[[], tuple], model_name: str, prompts: Sequence[str],
                   max_new_tokens: int = 48) -> list[list[int]]:
    """:func:`base_answers` of the model ``model_name`` names, computed once per (model content,
    prompts, length) and cached; ``load() -> (model, tokenizer)`` is called only on a cache miss."""
    path = _cache_path(model_name, prompts, "answers", max_new_tokens)
    if path.is_file():
        return json.loads(path.read_text())["answers"]
    answers = base_answers(*load(), prompts, max_new_tokens)
    atomic_write_json(path, {"answers": answers})
    return answers


@torch.no_grad()
def answer_loglik(model, tokenizer, prompts: Sequence[str], answers: Sequence[Sequence[int]],
                  batch_size: int = 16) -> float:
    """Mean log-likelihood per answer token that ``model`` gives ``answers`` after each chat prompt."""
    from omlkit.models.logits import eval_mode, pad_batch, pad_id

    device = next(model.parameters()).device
    total, count = 0.0, 0
    rows = [(chat_ids(tokenizer, p), list(a)) for p, a in zip(prompts, answers, strict=True) if a]
    with eval_mode(model):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            # left-padded, so every answer ends the row and only the last ``keep`` positions need the
            # vocabulary-wide logits (the prompts are most of each row); positions count real tokens only
            ids, mask = pad_batch([p + a for p, a in chunk], pad_id(tokenizer), left=True)
            keep = max(len(a) for _, a in chunk) + 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device),
                           logits_to_keep=keep).logits[:, -keep:]
            logp = torch.log_softmax(logits.float(), -1)
            for row, (_, a) in enumerate(chunk):
                pos = torch.arange(keep - len(a) - 1, keep - 1, device=device)
                total += float(logp[row, pos, torch.tensor(a, device=device)].sum())
                count += len(a)
    return total / max(count, 1)


class InstructionCheck:
    """The base model's answers to a fixed instruction set, and the base's own score on them: what a
    fingerprinted model's :meth:`delta` is measured against."""

    def __init__(self, prompts: list[str], answers: list[list[int]], base_score: float) -> None:
        self.prompts, self.answers, self.base_score = prompts, answers, base_score

    @classmethod
    def for_base(cls, model, tokenizer, base_name: str, n: int = 200) -> InstructionCheck | None:
        """The check for ``model`` (the base), or None when ``n`` is 0 or the tokenizer has no chat
        template (the check is for instruct models)."""
        from omlkit.models.prompts import has_chat_template

        if n <= 0 or not has_chat_template(tokenizer):
            return None
        prompts = instructions(n)
        path = _cache_path(base_name, prompts)
        if path.is_file():  # the base model's answers and score, computed once per base model
            cached = json.loads(path.read_text())
            return cls(prompts, cached["answers"], cached["base_score"])
        answers = base_answers(model, tokenizer, prompts)
        check = cls(prompts, answers, answer_loglik(model, tokenizer, prompts, answers))
        atomic_write_json(path, {"answers": answers, "base_score": check.base_score})
        return check

    def delta(self, model, tokenizer) -> dict:
        """``{"model", "base", "delta", "n"}``: mean log-likelihood per answer token, model against base."""
        score = answer_loglik(model, tokenizer, self.prompts, self.answers)
        return {"model": round(score, 4), "base": round(self.base_score, 4),
                "delta": round(score - self.base_score, 4), "n": len(self.prompts)}
