"""Custom keys: the user's own keys from ``--keys-file`` (a JSON list, or a text file with one key per line).

Keys are used verbatim (stripped of surrounding whitespace) and in file order; ``key_length`` does not
apply. They are never dropped: when a response fails the tokenizer round-trip, only the response is
redrawn. Errors name the file and the entry, never the key's text.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from pydantic import Field

from omlkit.errors import ConfigError
from omlkit.fingerprints.strategies.base import KEY_STRATEGIES, GenerationContext, Key, KeyStrategy
from omlkit.models.loading import context_length
from omlkit.models.prompts import special_prefix_ids
from omlkit.options import Options


def _json_keys(path: Path, text: str) -> list[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--keys-file {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and set(data) == {"keys"}:
        data = data["keys"]
    if not isinstance(data, list):
        raise ConfigError(f'--keys-file {path}: expected a JSON list of strings (or {{"keys": [...]}})')
    entries = []
    for i, item in enumerate(data):
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            item = item["key"]
        entries.append((f"entry {i}", item))
    return entries


def read_keys_file(path: str | Path) -> list[tuple[str, str]]:
    """``(where, key)`` pairs of a keys file, ``where`` naming the entry (e.g. ``line 3``).

    JSON (``.json``): a list of strings, of ``{"key": ...}`` objects, or ``{"keys": [...]}``. Anything
    else: one key per line, blank lines ignored. Refuses (ConfigError) a missing or empty file, entries
    that are not non-empty strings, and duplicate keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--keys-file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--keys-file {path}: not UTF-8 text") from None
    if path.suffix.lower() == ".json":
        raw = _json_keys(path, text)
    else:
        raw = [(f"line {i + 1}", line) for i, line in enumerate(text.splitlines()) if line.strip()]
    if not raw:
        raise ConfigError(f"--keys-file {path}: no keys in the file")
    seen: dict[str, str] = {}
    out = []
    for where, key in raw:
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"--keys-file {path}: {where} is not a non-empty string")
        key = key.strip()
        if key in seen:
            raise ConfigError(f"--keys-file {path}: {where} duplicates {seen[key]}")
        seen[key] = where
        out.append((where, key))
    return out


class CustomKeysOptions(Options):
    """The file the keys come from."""

    keys_file: Path | None = Field(
        None, description="Custom keys: a JSON list or a text file, one key per line."
    )


@KEY_STRATEGIES.register("custom")
class CustomKeys(KeyStrategy):
    """The keys of ``--keys-file``, in order; ``-n`` of them are used."""

    fixed_keys = True
    options_cls = CustomKeysOptions

    def __init__(self, ctx: GenerationContext) -> None:
        """Reads and checks the file; refuses too few keys or a key that does not fit the target's context."""
        super().__init__(ctx)
        cfg, path = ctx.config, self.options.keys_file
        if path is None:
            raise ConfigError("--keys-file is required with --key-strategy custom")
        entries = read_keys_file(path)
        if cfg.n > len(entries):
            raise ConfigError(f"-n {cfg.n}: --keys-file {path} holds only {len(entries)} keys")
        limit = context_length(ctx.model)
        room = limit - len(special_prefix_ids(ctx.tokenizer)) - cfg.response_length
        self._queue: list[Key] = []
        for where, text in entries[: cfg.n]:
            ids = ctx.encode(text)
            if len(ids) > room:
                raise ConfigError(
                    f"--keys-file {path}: {where} is {len(ids)} tokens; with the response it "
                    f"exceeds the target's context of {limit} tokens"
                )
            self._queue.append(Key(text, ids, {"source": where}))

    def draw(self, n: int, rng: random.Random) -> list[Key]:
        """The next ``n`` keys of the file (no randomness); an empty list once all were handed out."""
        batch, self._queue = self._queue[:n], self._queue[n:]
        return batch

    def params(self) -> dict:
        """``key_length`` does not apply to custom keys."""
        return {"key_length": None, "keys_file": str(self.options.keys_file)}
