"""Load any causal LM and its tokenizer from a Hugging Face id or a local path.

The embedded defaults (``omlkit-tiny``, ``omlkit-micro``) resolve to the cache and are built on first
use; the reference model's short name (``smollm2-135m-instruct``) resolves to its verified local copy,
fetched on first use (:mod:`omlkit.models.reference`). Everything else goes through
``from_pretrained``, the real path; when the hub is out of reach the error says so in one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from omlkit.errors import ModelLoadError
from omlkit.hub import hub_reachable, quiet_transformers
from omlkit.io import sha256_bytes, sha256_file

#: Name of the embedded default base model; any command whose ``--model`` is left alone uses it.
DEFAULT_MODEL = "omlkit-tiny"
EMBEDDED_PREFIX = "omlkit-"


def is_embedded(name: str) -> bool:
    """True for embedded preset names (``omlkit-tiny``, ``omlkit-micro``): no slash, not an existing path."""
    name = str(name)
    return name.startswith(EMBEDDED_PREFIX) and "/" not in name and not Path(name).exists()


def resolve_model(name_or_path: str | os.PathLike, progress: bool = True) -> str:
    """Return a loadable id or path: embedded preset names are built (once) in the cache, reference
    model names fetched (once) into it."""
    from omlkit.models.reference import ensure_reference_model, is_reference

    name = str(name_or_path)
    if is_embedded(name):
        from omlkit.models.embedded import ensure_base_model

        return str(ensure_base_model(name[len(EMBEDDED_PREFIX) :], progress=progress))
    if is_reference(name):
        return str(ensure_reference_model(name, progress=progress))
    return name


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """``dtype`` if given (name or dtype); else bf16 on CUDA and fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype and dtype != "auto":
        try:
            return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                    "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}[dtype]
        except KeyError:
            raise ModelLoadError(f"unknown dtype {dtype!r} (expected bf16, fp16, fp32 or auto)") from None
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _from_pretrained(cls, name: str, what: str, **kwargs: Any):
    """``cls.from_pretrained``; for a hub id with the hub out of reach, only a locally cached copy is tried.

    (transformers probes the hub for adapter files even with ``local_files_only``, retrying for most
    of a minute, so an uncached id is refused before it is asked.)
    """
    quiet_transformers()
    if not Path(name).expanduser().exists():
        if _looks_like_path(name):
            raise ModelLoadError(f"model path {name} does not exist")
        if not hub_reachable():
            from huggingface_hub import try_to_load_from_cache

            try:
                cached = try_to_load_from_cache(name, "config.json")
            except ValueError:  # HFValidationError: not a well-formed repo id
                raise ModelLoadError(f"{name!r} is neither an existing path nor a valid model id") from None
            if not isinstance(cached, str):
                raise _explain(name, FileNotFoundError(name), what)
            kwargs["local_files_only"] = True
    try:
        return cls.from_pretrained(name, **kwargs)
    except Exception as exc:  # transformers raises OSError/ValueError/hub errors with long messages
        raise _explain(name, exc, what) from exc


def _looks_like_path(name: str) -> bool:
    """Names a hub id can never be: absolute/relative paths and anything with more than one slash."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def _explain(name: str, exc: Exception, what: str) -> ModelLoadError:
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            return ModelLoadError(f"{name} is not a model directory (no config.json)")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ModelLoadError(f"cannot load {what} from {name}: {first}")
    if _looks_like_path(name):
        return ModelLoadError(f"model path {name} does not exist")
    if not hub_reachable():
        return ModelLoadError(
            f"model {name!r} is not a local path and is not available offline "
            "(the Hugging Face Hub cannot be reached and it is not in the local cache)"
        )
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ModelLoadError(f"cannot load {what} {name!r} from the Hugging Face Hub: {first}")


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs: Any):
    """Load the tokenizer of ``name_or_path`` (pad token set to EOS when it has none)."""
    from transformers import AutoTokenizer

    name = resolve_model(name_or_path)
    tok = _from_pretrained(AutoTokenizer, name, "tokenizer", **kwargs)
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return tok


def pretrained_causal_lm(name: str, **kwargs: Any):
    """``AutoModelForCausalLM.from_pretrained`` with hub kernels off unless ``use_kernels=True`` is
    passed (ModelLoadError on failure): every model omlkit loads comes through here.

    transformers (5.x, with ``kernels`` installed) otherwise swaps layers for kernels it downloads from
    the Hub when a model is put in training mode on CUDA, which fails offline (seen on an H200 without
    network) and would make a verdict depend on remote code; without ``kernels`` in the version range
    it wants, transformers 5.25 refuses to load any model that does not turn them off.
    """
    from transformers import AutoModelForCausalLM

    kwargs.setdefault("use_kernels", False)
    return _from_pretrained(AutoModelForCausalLM, name, "model", **kwargs)


def load_model(
    name_or_path: str | os.PathLike,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    tokenizer: bool = True,
    **kwargs: Any,
):
    """Load ``(model, tokenizer)`` in eval mode on the chosen device and dtype.

    Refuses (ModelLoadError) an unknown id offline, a path that is not a model, and a tokenizer whose
    vocabulary does not fit the model's embedding matrix. Hub kernels stay off unless ``use_kernels=True``
    is passed (:func:`pretrained_causal_lm`).
    """
    name = resolve_model(name_or_path)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    model = pretrained_causal_lm(name, dtype=dt, **kwargs)
    model.to(dev).eval()
    tok = load_tokenizer(name) if tokenizer else None
    if tok is not None:
        check_tokenizer_fits(model, tok, name)
    return model, tok


def check_tokenizer_fits(model, tokenizer, name: str = "model") -> None:
    """Raise ModelLoadError when the tokenizer can emit ids the model has no embedding for."""
    n_emb = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_emb:
        raise ModelLoadError(
            f"tokenizer of {name} has {len(tokenizer)} tokens but the model embeds only {n_emb}: "
            "they do not belong together"
        )


def tokenizer_sha(tokenizer) -> str:
    """A content hash of a tokenizer (its vocabulary, merges and special tokens) — 16 hex chars."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        import json

        state = json.loads(backend.to_str())
        # truncation/padding are call-time settings a tokenizer picks up as it is used, not its identity
        state.pop("truncation", None)
        state.pop("padding", None)
        blob = json.dumps(state, sort_keys=True)
    else:
        vocab = tokenizer.get_vocab()
        blob = repr(sorted(vocab.items()))
    blob += repr(sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items()))
    return sha256_bytes(blob.encode())[:16]


def model_sha(name_or_path: str | os.PathLike) -> str:
    """A content hash of a local model's weight files (16 hex chars), or the id itself for hub models."""
    path = Path(str(name_or_path))
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else []
    if not files:
        return str(name_or_path)
    return sha256_bytes("".join(sha256_file(f) for f in files).encode())[:16]


def context_length(model_or_config) -> int:
    """The model's maximum sequence length (``max_position_embeddings`` or equivalent)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if getattr(cfg, attr, None):
            return int(getattr(cfg, attr))
    return 2048
