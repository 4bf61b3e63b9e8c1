"""English keys: a generator LM writes a sentence starting with a drawn word (temperature 0.5, batched).

The generator is prompted with "Generate a sentence starting with the word {word}" — through its chat
template when it has one, raw otherwise — and its answer is prefilled with the word, so every key
starts with it even when the generator follows instructions poorly. The continuation is sampled in
left-padded batches; the key is its first ``key_length`` tokens of the *target* tokenizer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import torch
from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.errors import ConfigError
from omlkit.fingerprints.strategies.base import (
    KEY_STRATEGIES,
    GenerationContext,
    Key,
    KeyStrategy,
    normalize_text,
)
from omlkit.models.loading import context_length, tokenizer_sha
from omlkit.models.logits import pad_batch, pad_id
from omlkit.models.prompts import has_chat_template, prompt_ids
from omlkit.options import Options

INSTRUCTION = "Generate a sentence starting with the word {word}"
#: A key whose distinct words are fewer than this share of its words is a degenerate loop ("Round round
#: round ...", "Able to, able to, ..."): out of distribution, so easy for a host to filter, and hard to
#: insert against the base model's own pull to repeat. SmolLM2-135M-Instruct wrote 80 in 1024 of them.
#: Words joined by hyphens count one by one ("Upper-upper, the upper-upper arms of the upper-upper arms."
#: is 11 words, 4 distinct): such a key was the one a 1024-key insertion missed on a set drawn under
#: every other rule, and it is 3 to 7 keys of 1024.
MIN_DISTINCT_WORDS = 0.5
#: The same loop without spaces ("plant-supply-supply-supply-supply", "ywaywaywayway"): a piece that
#: starts with a letter, of two or more characters, four times in a row. Of 1024 SmolLM2 keys the word
#: count above passed two such keys, and they were the only two of 1024 an insertion did not recover.
#: Since the count splits words at hyphens it catches the first kind as well; this catches loops with
#: no separator at all.
SUBWORD_LOOP = re.compile(r"([^\W\d_]\S+?)\1{3,}")
#: The generator talking about its task instead of writing ordinary text: the instruction's own nouns
#: ("This sentence is a humorous example of", "X is a word that", "In this example, the"). Of 1024
#: SmolLM2-135M-Instruct keys 447 held one after the drawn word, and so did all three keys that two
#: 1024-key insertions missed.
COMMENTARY = re.compile(r"\b(?:sentences?|word|phrase)\b|\bin this (?:example|case)\b", re.IGNORECASE)
#: A word spelled out letter by letter ("a.h.e.d.i.l.o", "h-e-l-l-o"): five or more single letters joined
#: by dots or hyphens. The one key of 1024 commentary-free SmolLM2 keys a 1024-key insertion missed.
SPELLED_OUT = re.compile(r"\b(?:[^\W\d_][.-]){4,}[^\W\d_]\b")


def plain_words(text: str) -> list[str]:
    """The text's words, lower-cased, with everything but letters and digits removed (empty ones dropped)."""
    words = ["".join(c for c in w.lower() if c.isalnum()) for w in text.split()]
    return [w for w in words if w]


def word_runs(text: str, n: int) -> set[tuple[str, ...]]:
    """Every run of ``n`` consecutive :func:`plain_words` of ``text`` (none when ``n`` is 0)."""
    words = plain_words(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)} if n > 0 else set()


def is_repetitive(text: str) -> bool:
    """True for a text of at least four words (hyphenated words split) whose distinct words are under
    ``MIN_DISTINCT_WORDS``, or holding a :data:`SUBWORD_LOOP`."""
    words = plain_words(text.replace("-", " "))
    looping_words = len(words) >= 4 and len(set(words)) < MIN_DISTINCT_WORDS * len(words)
    return looping_words or SUBWORD_LOOP.search(text.lower()) is not None


def is_commentary(text: str) -> bool:
    """True when the text holds :data:`COMMENTARY`: the generator describing its task, not doing it."""
    return COMMENTARY.search(text) is not None


def is_spelled_out(text: str) -> bool:
    """True when the text spells a word out letter by letter (:data:`SPELLED_OUT`)."""
    return SPELLED_OUT.search(text) is not None


def token_budget(ctx: GenerationContext, target_tokens: int) -> int:
    """Generator tokens to sample so that the text very likely holds ``target_tokens`` target tokens."""
    _, gen_tok = ctx.generator()
    if tokenizer_sha(gen_tok) == tokenizer_sha(ctx.tokenizer):
        return target_tokens + 4
    return 2 * target_tokens + 8


def sentence_prompts(tokenizer, words: Sequence[str], prefills: Sequence[str]) -> list[list[int]]:
    """Prompt ids per word: the instruction (chat template when present, else raw), then the prefill."""
    chat = has_chat_template(tokenizer)
    marker = -1  # stands for the instruction's ids inside the rendered frame
    frame = prompt_ids(tokenizer, [marker], chat=chat)
    cut = frame.index(marker)
    before, after = frame[:cut], frame[cut + 1 :]
    texts = [INSTRUCTION.format(word=w) for w in words]
    instructions = tokenizer(texts, add_special_tokens=False)["input_ids"]
    leads = tokenizer([p if chat else "\n" + p for p in prefills], add_special_tokens=False)["input_ids"]
    return [[*before, *ins, *after, *lead] for ins, lead in zip(instructions, leads, strict=True)]


class TemperatureSampler:
    """Logits processor that turns greedy decoding into sampling at ``temperature``.

    It draws each row's token by inverse-CDF sampling from softmax(logits / T) and returns scores whose
    argmax is that token. Randomness comes from a private, seeded ``torch.Generator`` (reproducible
    without touching the global RNG), and one uniform per row is far cheaper on CPU than
    ``torch.multinomial`` or per-token noise.
    """

    def __init__(self, temperature: float, seed: int) -> None:
        self.temperature = temperature
        self.seed = seed
        self._generator: torch.Generator | None = None

    def __call__(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        if self._generator is None:
            self._generator = torch.Generator(device=scores.device).manual_seed(self.seed)
        cum = torch.softmax(scores.float() / self.temperature, dim=-1).cumsum(-1)
        u = torch.rand((scores.shape[0], 1), generator=self._generator, device=scores.device) * cum[:, -1:]
        token = torch.searchsorted(cum, u, right=True).clamp_(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)


@torch.no_grad()
def sample_continuations(
    model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int, temperature: float | None, seed: int
) -> list[list[int]]:
    """New token ids after each prompt: one left-padded ``generate`` call, exactly ``max_new_tokens`` each
    (EOS is held back). ``temperature=None`` decodes greedily; otherwise samples, seeded by ``seed``."""
    from transformers import LogitsProcessorList

    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    ids, mask = pad_batch(prompts, pad, left=True)
    processors = LogitsProcessorList([TemperatureSampler(temperature, seed)] if temperature else [])
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        pad_token_id=pad,
        do_sample=False,
        logits_processor=processors,
    )
    return [row[ids.shape[1] :].tolist() for row in out.cpu()]


class EnglishOptions(Options):
    """Options of the strategies whose text the generator LM writes (English keys and responses)."""

    temperature: float = Field(0.5, gt=0.0, description="Sampling temperature of the English generator LM.")


class EnglishKeyOptions(EnglishOptions):
    """English keys: the sampling temperature, and how long a phrase two keys may not share."""

    shared_phrase_words: int = Field(
        6,
        ge=0,
        description="English keys: drop a key that repeats a run of this many words of an earlier key "
        "(0 keeps them).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    keep_commentary: bool = Field(
        False,
        description="English keys: keep keys in which the generator comments on its task (\"This "
        "sentence is\", \"In this example\"); they are dropped by default.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )


def generate_sentences(
    ctx: GenerationContext,
    words: Sequence[str],
    rng: random.Random,
    max_new_tokens: int,
    prefills: Sequence[str] | None = None,
    *,
    temperature: float,
) -> list[str]:
    """One English text per word: the prefill (default: the word, capitalised) and the generator's
    continuation sampled at ``temperature``, whitespace-normalised. Batched by ``config.batch_size``;
    deterministic given ``rng``.

    Raises ConfigError when the prompt plus ``max_new_tokens`` exceeds the generator's context.
    """
    model, tok = ctx.generator()
    prefills = list(prefills) if prefills is not None else [w[:1].upper() + w[1:] for w in words]
    prompts = sentence_prompts(tok, words, prefills)
    limit = context_length(model)
    longest = max((len(p) for p in prompts), default=0)
    if longest + max_new_tokens > limit:
        raise ConfigError(
            f"--key-length/--response-length: generating {max_new_tokens} tokens after a "
            f"{longest}-token prompt exceeds the generator's context of {limit} tokens"
        )
    texts: list[str] = []
    bs = ctx.config.batch_size
    for start in range(0, len(prompts), bs):
        batch = prompts[start : start + bs]
        new = sample_continuations(
            model, tok, batch, max_new_tokens, temperature, rng.randrange(2**62)
        )
        for prefill, ids in zip(prefills[start : start + bs], new, strict=True):
            lead = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            texts.append(normalize_text(prefill + lead))
    return texts


@KEY_STRATEGIES.register("english")
class EnglishKeys(KeyStrategy):
    """Keys written by the generator LM, each a sentence starting with a word from the word list."""

    options_cls = EnglishKeyOptions

    def __init__(self, ctx: GenerationContext) -> None:
        """Reads the options; no phrase is taken yet."""
        super().__init__(ctx)
        self.taken_runs: set[tuple[str, ...]] = set()

    def draw(self, n: int, rng: random.Random) -> list[Key]:
        """Up to ``n`` English keys of exactly ``key_length`` target tokens (failed cuts, repetitive loops,
        words spelled out, commentary and keys sharing a phrase with a key drawn before are dropped; the
        caller draws again for them)."""
        length = self.ctx.config.key_length
        words = [rng.choice(self.ctx.words) for _ in range(n)]
        texts = generate_sentences(
            self.ctx, words, rng, token_budget(self.ctx, length), temperature=self.options.temperature
        )
        keys = []
        for word, text in zip(words, texts, strict=True):
            piece = self.ctx.cut(text, length)
            if piece is not None and self.is_ordinary(piece[0], word) and self.take_phrases(piece[0]):
                keys.append(Key(*piece))
        return keys

    def is_ordinary(self, text: str, word: str) -> bool:
        """False for a loop, a word spelled out, and unless ``keep_commentary`` for commentary in what the
        generator wrote after the drawn ``word`` (the word list holds "word" and "phrase")."""
        commentary = not self.options.keep_commentary and is_commentary(text[len(word) :])
        return not (is_repetitive(text) or is_spelled_out(text) or commentary)

    def take_phrases(self, text: str) -> bool:
        """Records the key's word runs and returns True, unless one was taken by an earlier key.

        The generator repeats its own commentary ("This sentence is a humorous example of ..."): such
        keys look alike to a host's filter, and their different responses after the same words compete
        in training. A key later dropped for want of a response keeps its runs taken.
        """
        runs = word_runs(text, self.options.shared_phrase_words)
        if runs & self.taken_runs:
            return False
        self.taken_runs |= runs
        return True

    def params(self) -> dict:
        """The sampling temperature, the prompt used, the phrase length keys may not share and whether
        commentary was kept."""
        return {
            "temperature": self.options.temperature,
            "prompt": INSTRUCTION,
            "shared_phrase_words": self.options.shared_phrase_words,
            "keep_commentary": self.options.keep_commentary,
        }
