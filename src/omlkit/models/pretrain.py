"""Pretrain the embedded base model from scratch: pack the corpus, train a Llama, measure it.

Deterministic for a given config: seeded initialisation and data order, fixed step count, no
wall-clock-dependent behaviour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from omlkit.models.base_config import BaseModelConfig, Preset
from omlkit.models.corpus import corpus_sha, default_corpus, load_corpus
from omlkit.models.perplexity import perplexity, unigram_perplexity
from omlkit.models.tokenizer_training import train_tokenizer

SAMPLE_PROMPTS = ("The function returns", "This module provides")


@dataclass
class BuildSummary:
    """What ``oml base-model build`` prints and stores in ``build_info.json``."""

    preset: str
    seed: int
    parameters: int
    corpus_sha: str
    train_tokens: int
    steps: int
    final_loss: float
    heldout_perplexity: float
    unigram_perplexity: float
    seconds: float
    samples: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Held-out perplexity as a fraction of the unigram baseline (≤ 1/3 is the quality bar)."""
        return self.heldout_perplexity / self.unigram_perplexity


def _llama_config(p: Preset, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=p.hidden_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_kv_heads,
        intermediate_size=p.intermediate_size,
        max_position_embeddings=p.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
    )


def pack(token_lists: list[list[int]], eos_id: int, seq_len: int) -> torch.Tensor:
    """Concatenate documents (each followed by EOS) and cut into ``seq_len + 1`` blocks (drop the tail)."""
    flat: list[int] = []
    for ids in token_lists:
        flat.extend(ids)
        flat.append(eos_id)
    n = len(flat) // (seq_len + 1)
    return torch.tensor(flat[: n * (seq_len + 1)], dtype=torch.long).view(n, seq_len + 1)


@torch.no_grad()
def greedy_sample(model, tokenizer, prompt: str, max_new_tokens: int = 16) -> str:
    """Greedy continuation of ``prompt`` (the continuation only)."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(next(model.parameters()).device)
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def pretrain(cfg: BaseModelConfig, progress: bool = True):
    """Train tokenizer and model per ``cfg``; returns ``(model, tokenizer, BuildSummary)``."""
    from transformers import LlamaForCausalLM, get_cosine_schedule_with_warmup

    t0 = time.time()
    p = cfg.preset_params()
    splits = load_corpus(cfg.corpus, cfg.dataset) if (cfg.corpus or cfg.dataset) else default_corpus()
    train = splits["train"]
    if p.corpus_fraction < 1.0:
        train = train[: max(2, int(len(train) * p.corpus_fraction))]
    tokenizer = train_tokenizer(train, p.vocab_size)
    enc = tokenizer(train, add_special_tokens=True)["input_ids"]
    blocks = pack(enc, tokenizer.eos_token_id, p.seq_len)
    if len(blocks) < 1:
        from omlkit.errors import CorpusError

        raise CorpusError(f"corpus too small: fewer than {p.seq_len + 1} tokens of text")

    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(_llama_config(p, tokenizer))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, p.warmup, p.steps)
    order_rng = torch.Generator().manual_seed(cfg.seed)
    perm, pos = torch.randperm(len(blocks), generator=order_rng), 0
    bf16 = cfg.resolved_precision() == "bf16"

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]base model[/bold] {task.fields[loss]}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total} steps"), TimeRemainingColumn(),
                   disable=not progress, transient=True)
    loss_val = float("nan")
    with bar:
        task = bar.add_task("train", total=p.steps, loss="")
        for _ in range(p.steps):
            if pos + p.batch_size > len(perm):
                perm, pos = torch.randperm(len(blocks), generator=order_rng), 0
            batch = blocks[perm[pos : pos + p.batch_size]]
            pos += p.batch_size
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
            # labels=input_ids: transformers shifts internally, so the last column is only a target
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss_val = float(loss.detach())
            bar.update(task, advance=1, loss=f"loss {loss_val:.3f}")
    model.eval()

    heldout = splits["heldout"]
    ppl = perplexity(model, tokenizer, heldout, max_length=p.seq_len)
    held_ids = [tokenizer(t, truncation=True, max_length=p.seq_len)["input_ids"] for t in heldout]
    uni = unigram_perplexity(enc, held_ids, len(tokenizer))
    samples = {prompt: greedy_sample(model, tokenizer, prompt) for prompt in SAMPLE_PROMPTS}
    summary = BuildSummary(
        preset=cfg.preset, seed=cfg.seed, parameters=sum(t.numel() for t in model.parameters()),
        corpus_sha=corpus_sha(splits), train_tokens=int(blocks.numel()), steps=p.steps,
        final_loss=loss_val, heldout_perplexity=ppl, unigram_perplexity=uni,
        seconds=time.time() - t0, samples=samples,
    )
    return model, tokenizer, summary
