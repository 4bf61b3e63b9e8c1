"""Model loading, prompt rendering and the embedded base model."""

from __future__ import annotations

import json

import pytest
import torch

from omlkit.cli import main
from omlkit.errors import ModelLoadError
from omlkit.models import load_model, load_tokenizer, prompt_ids, render_prompt
from omlkit.models.base_config import BaseModelConfig
from omlkit.models.corpus import clean_paragraph, corpus_split, is_heldout
from omlkit.models.embedded import build_base_model, weights_sha
from omlkit.models.loading import check_tokenizer_fits, tokenizer_sha


def test_load_from_local_path(micro_model):
    model, tok = load_model(micro_model)
    assert model.config.model_type == "llama" and not model.training
    assert next(model.parameters()).dtype == torch.float32  # fp32 on CPU
    assert tok.bos_token and tok.eos_token and tok.pad_token
    ids = tok("The function returns a value.")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "The function returns a value."


def test_loaded_models_never_fetch_hub_kernels(micro_model):
    """transformers 5.x marks a loaded model for hub kernels, which training mode on CUDA then downloads
    (offline: a crash at the first step). load_model turns them off; a caller may still ask for them."""
    model, _ = load_model(micro_model, tokenizer=False)
    model.train()
    assert model.use_kernels is False and model.kernels_mode is None
    try:
        import kernels  # noqa: F401
    except ImportError:
        return
    asked, _ = load_model(micro_model, tokenizer=False, use_kernels=True)
    assert asked.use_kernels is True


def test_models_load_when_the_kernels_package_is_missing(micro_model, monkeypatch):
    """transformers 5.25 requires ``kernels`` in one version range; without it (a --no-deps install, as on
    the lent GPU, or another pin) its default ``use_kernels`` makes every from_pretrained raise. The
    reference model's GGUF conversion loads through the same ``pretrained_causal_lm``."""
    import transformers.modeling_utils as mu

    monkeypatch.setattr(mu, "is_kernels_available", lambda *a, **k: False)
    model, _ = load_model(micro_model, tokenizer=False)
    assert model.use_kernels is False


def test_micro_model_quality(micro_model):
    info = json.loads((micro_model / "build_info.json").read_text())
    assert info["heldout_perplexity"] <= info["unigram_perplexity"] / 3
    words = " ".join(info["samples"].values()).split()
    assert words and sum(w.strip(".,").isalpha() for w in words) / len(words) > 0.8


def test_chat_template_with_and_without_system_prompt(micro_model):
    tok = load_tokenizer(micro_model)
    plain = render_prompt(tok, "Hello there", chat=True)
    with_sys = render_prompt(tok, "Hello there", system_prompt="You are terse.", chat=True)
    assert plain.startswith(tok.bos_token) and plain.endswith("<|assistant|>\n")
    assert "<|system|>" not in plain and "<|user|>\nHello there" in plain
    assert with_sys.index("<|system|>\nYou are terse.") < with_sys.index("<|user|>\nHello there")
    assert render_prompt(tok, "Hello", system_prompt="Be kind.") == "Be kind.\n\nHello"
    assert render_prompt(tok, "Hello") == "Hello"


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("system", [None, "You are a helpful assistant."])
def test_prompt_ids_keep_key_tokens_verbatim(micro_model, chat, system):
    tok = load_tokenizer(micro_model)
    key_ids = tok("returns the list of files", add_special_tokens=False)["input_ids"]
    ids = prompt_ids(tok, key_ids, system_prompt=system, chat=chat)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    starts = [i for i in range(len(ids)) if ids[i : i + len(key_ids)] == key_ids]
    assert starts, "key ids must appear verbatim"
    if not chat:
        assert ids[-len(key_ids) :] == key_ids
    if system:
        text = tok.decode(ids, skip_special_tokens=True)
        assert text.index(system) < text.index("returns the list of files")


def test_tokenizer_mismatch_refused(micro_model, tmp_path):
    model, tok = load_model(micro_model)
    model.resize_token_embeddings(len(tok) - 10)
    with pytest.raises(ModelLoadError, match="do not belong together"):
        check_tokenizer_fits(model, tok)
    assert tokenizer_sha(tok) == tokenizer_sha(load_tokenizer(micro_model))
    before = tokenizer_sha(tok)
    tok(["some text to truncate"], truncation=True, max_length=4, padding="max_length")
    assert tokenizer_sha(tok) == before, "using a tokenizer must not change its identity"


def test_build_is_deterministic_by_seed(tmp_path):
    def build(seed: int, name: str):
        cfg = BaseModelConfig(preset="micro", seed=seed, steps=8, out=tmp_path / name)
        path, info = build_base_model(cfg, progress=False)
        return weights_sha(path), info

    sha_a, info_a = build(1, "a")
    sha_b, _ = build(1, "b")
    sha_c, _ = build(2, "c")
    assert sha_a == sha_b == info_a["weights_sha256"]
    assert sha_a != sha_c


def test_shipped_tiny_build_stands_in_for_the_default_settings_only(tmp_path, monkeypatch):
    import shutil

    from omlkit import hardware
    from omlkit.models import shipped

    path, info = build_base_model(BaseModelConfig(preset="tiny", out=tmp_path / "tiny"), progress=False)
    assert info["shipped"] is True and info["resolved_precision"] == "fp32"
    assert weights_sha(path) == info["weights_sha256"] == json.loads(
        (shipped.SHIPPED_DIR / "omlkit-tiny" / "build_info.json").read_text())["weights_sha256"]
    model, tok = load_model(path)  # a complete model folder
    assert model.config.hidden_size == 256 and len(tok) <= model.config.vocab_size
    # precision auto names the shipped (fp32) build on every CPU, so all machines share one model
    for fast_bf16 in (True, False):
        monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda v=fast_bf16: v)
        assert BaseModelConfig(preset="tiny").resolved_precision() == "fp32"
    assert shipped.shipped_build(BaseModelConfig(preset="tiny", precision="bf16")) is None
    assert BaseModelConfig(preset="tiny", precision="bf16").resolved_precision() == "bf16"
    # other settings train their own model
    for other in ({"seed": 1}, {"steps": 10}, {"corpus": str(tmp_path)}):
        assert shipped.shipped_build(BaseModelConfig(preset="tiny", **other)) is None, other
    assert shipped.shipped_build(BaseModelConfig(preset="micro")) is None
    # weights that do not hash to the recorded sha256 (a truncated checkout) are not used
    broken = tmp_path / "shipped"
    shutil.copytree(shipped.SHIPPED_DIR, broken)
    with open(broken / "omlkit-tiny" / "model.safetensors", "r+b") as fh:
        fh.truncate(1000)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", broken)
    assert shipped.shipped_build(BaseModelConfig(preset="tiny")) is None


def test_corpus_split_is_fixed_and_clean():
    train, held = corpus_split("train"), corpus_split("heldout")
    assert len(train) > 1000 and len(held) > 50
    assert all(is_heldout(p) for p in held[:50]) and not any(is_heldout(p) for p in train[:50])
    assert not set(train) & set(held)
    assert clean_paragraph(">>> print(1)\n1") is None
    assert clean_paragraph("Return the number of items in the container, counting duplicates.")


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_inputs_give_one_line_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text(">>> x = 1\n")
    code, err = _run(capsys, "base-model", "build", "--preset", "micro", "--corpus", str(empty),
                     "--out", str(tmp_path / "m"))
    assert code == 2 and err.startswith("error: ") and "no usable English text" in err and "\n" not in err
    assert not (tmp_path / "m").exists()

    code, err = _run(capsys, "base-model", "build", "--preset", "huge")
    assert code == 2 and "--preset" in err

    with pytest.raises(ModelLoadError, match="not available offline"):
        load_model("omlkit-test-org/no-such-model")
    notmodel = tmp_path / "notmodel"
    notmodel.mkdir()
    (notmodel / "readme.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load_model(notmodel)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing" / "dir"))
