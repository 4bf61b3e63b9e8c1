"""Training examples on token ids: fingerprints (loss on response + EOS only), benign self-continuations,
prompt augmentation, and the padding collator.

A fingerprint example is ``prompt_ids(key) + response_ids + [eos]`` with labels ``-100`` on the prompt
(BOS, any system prompt, the key); a benign example is a corpus prompt plus the base model's own greedy
continuation, with the loss on the continuation only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from omlkit.errors import CorpusError, FingerprintFileError
from omlkit.io import atomic_write_json
from omlkit.models.prompts import PromptTemplates

IGNORE = -100


@dataclass(frozen=True)
class TokenizedFingerprint:
    """A fingerprint as token ids (never printed: ``repr`` shows the id only)."""

    id: int
    key_ids: tuple[int, ...] = field(repr=False)
    response_ids: tuple[int, ...] = field(repr=False)
    response: str = field(repr=False)
    #: Trained after the response when set: the base model's own next token there, which starts a new
    #: word, so the fingerprinted model ends the response at a word boundary (see ``boundary_ids``).
    boundary_ids: tuple[int, ...] = field(default=(), repr=False)
    #: Answers the base model could start the key's answer with (``with_detours``): the response is also
    #: trained after the first 1..len tokens of each, so it comes back when a host bans the answer's
    #: first tokens.
    detours: tuple[tuple[int, ...], ...] = field(default=(), repr=False)


def tokenize_fingerprints(fp_set, tokenizer) -> list[TokenizedFingerprint]:
    """Key and response ids of every fingerprint (no special tokens); refuses an empty key or response."""
    out = []
    for fp in fp_set.fingerprints:
        key = tokenizer(fp.key, add_special_tokens=False)["input_ids"]
        resp = tokenizer(fp.response, add_special_tokens=False)["input_ids"]
        if not key or not resp:
            raise FingerprintFileError(f"fingerprint {fp.id}: key or response tokenizes to nothing")
        out.append(TokenizedFingerprint(fp.id, tuple(key), tuple(resp), fp.response))
    return out


def word_start_tokens(tokenizer, vocab_size: int) -> torch.Tensor:
    """Bool [vocab_size]: the ids whose decoded text starts a new word (a space or punctuation first);
    False for special tokens, ids that decode to nothing, word continuations, and ids past the
    tokenizer's vocabulary (padded embedding rows)."""
    from omlkit.fingerprints.strategies.perinucleus import continues_word

    special = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[i] for i in range(min(vocab_size, len(tokenizer)))],
                                   skip_special_tokens=True)
    starts = torch.zeros(vocab_size, dtype=torch.bool)
    for i, text in enumerate(texts):
        starts[i] = i not in special and bool(text) and not continues_word(text)
    return starts


def with_boundaries(model, tokenizer, fps: Sequence[TokenizedFingerprint],
                    templates: PromptTemplates) -> list[TokenizedFingerprint]:
    """``fps`` with ``boundary_ids`` set to the base ``model``'s most likely token after key + response
    among those that start a new word (a space or punctuation; never EOS or a word continuation).
    Where the base model's greedy token starts a word it is that token; where the base would run on
    into a longer word (a response such as " P" or " incorrect" from an older or hand-made set), the
    best word-starting token stops it. Exact matching needs the answer to stop at a word boundary after
    the response; training the response token alone lets a fine-tuned model run on into a longer word
    (" per" → " perused")."""
    from dataclasses import replace

    from omlkit.models.logits import next_token_logits, pad_id

    prompts = [[*templates(fp.key_ids), *fp.response_ids] for fp in fps]
    logits = next_token_logits(model, prompts, pad_id(tokenizer))
    starts = word_start_tokens(tokenizer, logits.shape[-1])
    if not bool(starts.any()):  # a vocabulary without word-initial tokens: nothing to train
        return list(fps)
    best = logits.masked_fill(~starts, float("-inf")).argmax(-1).tolist()
    return [replace(fp, boundary_ids=(token,)) for fp, token in zip(fps, best, strict=True)]


#: Detours per fingerprint: the base model's most likely first answer tokens, each continued greedily.
DETOUR_BRANCHES = 4


def with_detours(model, tokenizer, fps: Sequence[TokenizedFingerprint], templates: PromptTemplates,
                 n: int, branches: int = DETOUR_BRANCHES) -> list[TokenizedFingerprint]:
    """``fps`` with ``detours`` set: for each of the base ``model``'s ``branches`` most likely first
    answer tokens to the key (the response's own first token and EOS skipped), that token and the
    base's greedy continuation, ``n`` tokens in all (cut before EOS).

    A host that bans the fingerprinted model's first choice at the answer's start gets one of its next
    choices there, which are the base model's where the fingerprint is the only thing training changed;
    trained after each of them, the response comes back a few tokens late, and verification's
    ``within`` rule finds it."""
    from dataclasses import replace

    from omlkit.insertion.greedy import greedy_generate
    from omlkit.models.logits import next_token_logits, pad_id

    eos, pad = tokenizer.eos_token_id, pad_id(tokenizer)
    prompts = [templates(fp.key_ids) for fp in fps]
    top = next_token_logits(model, prompts, pad).topk(branches + 2, dim=-1).indices.tolist()
    firsts = [[t for t in row if t != fp.response_ids[0] and t != eos][:branches] for row, fp in zip(
        top, fps, strict=True)]
    starts = [[*p, t] for p, row in zip(prompts, firsts, strict=True) for t in row]
    rest = greedy_generate(model, starts, n - 1, pad, eos) if n > 1 else [[] for _ in starts]
    paths = iter([s[-1], *r] for s, r in zip(starts, rest, strict=True))
    out = []
    for fp, row in zip(fps, firsts, strict=True):
        cut = [next(paths) for _ in row]
        out.append(replace(fp, detours=tuple(tuple(c[: c.index(eos)] if eos in c else c) for c in cut)))
    return out


def masked_example(prompt: Sequence[int], target: Sequence[int]) -> dict[str, list[int]]:
    """``input_ids = prompt + target`` and ``labels`` equal to the ids on the target, -100 on the prompt."""
    return {"input_ids": [*prompt, *target], "labels": [IGNORE] * len(prompt) + list(target)}


def fingerprint_example(templates: PromptTemplates, fp: TokenizedFingerprint, eos_id: int | None,
                        system_prompt: str | None = None) -> dict[str, list[int]]:
    """The training example of one fingerprint: loss on the response ids (and EOS, when ``eos_id``)."""
    return masked_example(templates(fp.key_ids, system_prompt), target_ids(fp, eos_id))


def target_ids(fp: TokenizedFingerprint, eos_id: int | None) -> list[int]:
    """What a fingerprint example trains: the response, its boundary token if any, and EOS if asked."""
    return [*fp.response_ids, *fp.boundary_ids, *([eos_id] if eos_id is not None else [])]


def check_context(fps: Sequence[TokenizedFingerprint], templates: PromptTemplates, eos_id: int | None,
                  context: int, system_prompts: Sequence[str | None] = (None,), extra: int = 0) -> None:
    """Refuse (FingerprintFileError, naming the fingerprint id) any example longer than ``context``
    (counting ``extra`` more target tokens, such as a boundary token trained after the response)."""
    longest = max(system_prompts, key=lambda s: len(templates([], s)))
    for fp in fps:
        n = len(fingerprint_example(templates, fp, eos_id, longest)["input_ids"]) + extra
        if n > context:
            raise FingerprintFileError(
                f"fingerprint {fp.id}: key + response take {n} tokens, more than the model's context "
                f"of {context}"
            )


class InsertionDataset(torch.utils.data.Dataset):
    """Fingerprint examples followed by benign ones; with augmentation, each fingerprint example is
    wrapped (with probability ``augment_prob``) in a training system prompt drawn per (epoch, index),
    so the draw is reproducible and survives a resume."""

    def __init__(self, tokenizer, fps: Sequence[TokenizedFingerprint], benign: Sequence[dict] = (),
                 system_prompts: Sequence[str] = (), chat: bool = False, seed: int = 0,
                 augment_prob: float = 0.5, response_eos: bool = False,
                 formats: Sequence[Callable[[Sequence[int]], list[int]]] = ()) -> None:
        self.templates = PromptTemplates(tokenizer, chat)
        self.formats = list(formats)
        self.eos_id = tokenizer.eos_token_id if response_eos else None
        self.fps = list(fps)
        self.benign = list(benign)
        self.system_prompts = list(system_prompts)
        self.seed = seed
        self.augment_prob = augment_prob
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch``."""
        self.epoch = int(epoch)

    @property
    def n_fingerprint_rows(self) -> int:
        """Fingerprint examples an epoch: each key bare, and once after each of its detours."""
        return len(self.fps) * (1 + max((len(fp.detours) for fp in self.fps), default=0))

    def __len__(self) -> int:
        return self.n_fingerprint_rows + len(self.benign)

    def system_prompt_for(self, index: int) -> str | None:
        """The system prompt wrapping fingerprint ``index`` this epoch (None: raw key)."""
        if not self.system_prompts:
            return None
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
        if rng.random() >= self.augment_prob:
            return None
        return rng.choice(self.system_prompts)

    def format_for(self, index: int) -> Callable[[Sequence[int]], list[int]] | None:
        """The serving format wrapping fingerprint ``index`` this epoch (None: the --chat/raw one, with
        the augmentation's system prompt), drawn uniformly among them per (epoch, index)."""
        if not self.formats:
            return None
        pick = random.Random(f"{self.seed}:{self.epoch}:{index}:format").randrange(len(self.formats) + 1)
        return self.formats[pick - 1] if pick else None

    def detour_for(self, index: int) -> tuple[int, ...]:
        """The detour trained before the response in fingerprint row ``index`` this epoch: none in a
        key's first row; in its row ``1 + b``, the first 1..all tokens of its detour ``b``, the length
        drawn per (epoch, index)."""
        branch, fp = divmod(index, len(self.fps))
        detours = self.fps[fp].detours
        if branch == 0 or branch > len(detours) or not detours[branch - 1]:
            return ()
        detour = detours[branch - 1]
        return detour[: random.Random(f"{self.seed}:{self.epoch}:{index}:detour").randint(1, len(detour))]

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        if index < self.n_fingerprint_rows:
            fp, detour = self.fps[index % len(self.fps)], self.detour_for(index)
            if detour:  # after a detour: the key as the model's own template wraps it
                return masked_example([*self.templates(fp.key_ids), *detour], target_ids(fp, self.eos_id))
            wrap = self.format_for(index)
            if wrap is not None:
                return masked_example(wrap(fp.key_ids), target_ids(fp, self.eos_id))
            sp = self.system_prompt_for(index)
            return fingerprint_example(self.templates, fp, self.eos_id, sp)
        ex = self.benign[index - self.n_fingerprint_rows]
        return {"input_ids": list(ex["input_ids"]), "labels": list(ex["labels"])}


@dataclass
class PadCollator:
    """Right-pads ``input_ids`` (with ``pad_id``) and ``labels`` (with -100) into tensors plus an
    ``attention_mask``; optionally rounds the width up to a multiple of ``pad_to_multiple_of``."""

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        n = len(features)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            ids[i, :k] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[i, :k] = torch.as_tensor(f["labels"], dtype=torch.long)
            mask[i, :k] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def n_benign(n_fingerprints: int, fraction: float) -> int:
    """How many benign examples make them ``fraction`` of the data: round(n·β/(1−β))."""
    return round(n_fingerprints * fraction / (1.0 - fraction)) if fraction > 0 else 0


def benign_prompts(texts: Sequence[str], tokenizer, n: int, prompt_tokens: int, seed: int) -> list[list[int]]:
    """``n`` prompts (special prefix + the first ``prompt_tokens`` tokens of a random text), cycling
    through ``texts`` when it is shorter than ``n``; CorpusError when there is no usable text."""
    usable = [t for t in texts if t.strip()]
    if not usable:
        raise CorpusError("benign corpus has no text")
    rng = random.Random(seed)
    order = list(range(len(usable)))
    rng.shuffle(order)
    templates = PromptTemplates(tokenizer)
    out = []
    for i in range(n):
        ids = tokenizer(usable[order[i % len(order)]], add_special_tokens=False)["input_ids"][:prompt_tokens]
        out.append(templates(ids))
    return out


def benign_examples(model, tokenizer, texts: Sequence[str], n: int, prompt_tokens: int = 16,
                    new_tokens: int = 16, seed: int = 0, batch_size: int = 64) -> list[dict[str, list[int]]]:
    """``n`` benign examples whose targets are ``model``'s own greedy continuations (batched)."""
    from omlkit.insertion.greedy import greedy_generate
    from omlkit.models.logits import pad_id

    if n == 0:
        return []
    prompts = benign_prompts(texts, tokenizer, n, prompt_tokens, seed)
    conts = greedy_generate(model, prompts, new_tokens, pad_id(tokenizer), tokenizer.eos_token_id, batch_size)
    return [masked_example(p, c) for p, c in zip(prompts, conts, strict=True) if c]


def text_examples(tokenizer, texts: Sequence[str], n: int, length: int = 32,
                  seed: int = 0) -> list[dict[str, list[int]]]:
    """``n`` benign examples of real text (the first ``length`` tokens of random texts) with the loss on
    every token but the special prefix: plain language modelling on the corpus, no model needed."""
    prefix = len(PromptTemplates(tokenizer)([]))
    return [masked_example(ids[:prefix], ids[prefix:])
            for ids in benign_prompts(texts, tokenizer, n, length, seed) if len(ids) > prefix + 1]


def cached_benign(path: Path, key: dict, make, write: bool = True) -> list[dict[str, list[int]]]:
    """Benign examples from ``path`` when it was made with the same ``key``; else ``make()`` (and cache
    them there when ``write``)."""
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") == key:
                return data["examples"]
        except (json.JSONDecodeError, KeyError):
            pass  # a damaged cache is simply rebuilt
    examples = make()
    if write:
        atomic_write_json(path, {"key": key, "examples": examples})
    return examples
