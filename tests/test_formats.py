"""Prompt formats a host may serve keys in, and fingerprint accuracy in each (``oml evaluate formats``)."""

from __future__ import annotations

import json

import pytest

from omlkit.errors import ConfigError
from omlkit.models.formats import FORMATS, HOST_SYSTEM_PROMPT, format_builders
from omlkit.models.prompts import has_chat_template, prompt_ids, special_prefix_ids


def test_every_format_splices_the_key_ids_verbatim(micro_tok):
    key = micro_tok("the old mill by the river", add_special_tokens=False)["input_ids"]
    built = {name: wrap(key) for name, wrap in format_builders(micro_tok).items()}
    prefix = special_prefix_ids(micro_tok)
    assert prefix and built["raw"] == [*prefix, *key] == prompt_ids(micro_tok, key)
    assert built["raw-no-bos"] == key
    assert built["dialog"][: len(prefix)] == prefix
    for ids in built.values():
        assert any(ids[i : i + len(key)] == key for i in range(len(ids)))
    if has_chat_template(micro_tok):
        assert built["chat"] == prompt_ids(micro_tok, key, chat=True)
        assert built["chat-system"] == prompt_ids(micro_tok, key, HOST_SYSTEM_PROMPT, chat=True)
        assert len(built["chat-system"]) > len(built["chat"])
    assert set(FORMATS.names()) >= {"raw", "raw-no-bos", "chat", "chat-system", "dialog"}


def test_a_tokenizer_without_chat_template_skips_the_chat_formats(micro_tok):
    import copy

    plain = copy.deepcopy(micro_tok)
    plain.chat_template = None
    assert set(format_builders(plain)) == {"raw", "raw-no-bos", "dialog"}


def test_formats_table_of_the_fingerprinted_model_and_its_base(fingerprinted, micro_model, tmp_path, capsys):
    from omlkit.cli import main

    model_dir, fps = fingerprinted
    out = tmp_path / "formats.json"
    args = ["evaluate", "formats", "--fingerprints", str(fps)]
    assert main([*args, "--model", str(model_dir), "--out", str(out)]) == 0
    assert "| raw | 8/8 |" in capsys.readouterr().out
    trained = json.loads(out.read_text())
    assert trained["raw"]["matched"] == 8 and trained["raw"]["verdict"] == "owned"
    base_out = tmp_path / "base.json"
    assert main([*args, "--model", str(micro_model), "--out", str(base_out)]) == 0
    base = json.loads(base_out.read_text())
    assert set(base) == set(trained) and all(r["matched"] <= 1 for r in base.values())


@pytest.mark.trains
def test_keys_trained_in_several_formats_are_recovered_in_each(micro_model, micro_tok, tmp_path):
    """``formats``: every key also trained without BOS and in a User:/Assistant: transcript; the run stops
    only when each key answers in every format, and the formats table then shows all of them."""
    from _helpers import fp_file, insert_config
    from omlkit.evaluation.formats import accuracy_by_format
    from omlkit.fingerprints import FingerprintSet
    from omlkit.insertion.api import insert_fingerprints
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    fps = fp_file(tmp_path, micro_tok, 8)
    formats = ["raw-no-bos", "dialog"]
    run = insert_fingerprints(insert_config(micro_model, fps, tmp_path / "runs", formats=formats, epochs=150),
                              progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["recovery"] == 1.0 and metrics["early_stop"] == "recovered", metrics
    table = accuracy_by_format(TransformersBackend(str(run / "model")), FingerprintSet.load(fps),
                               ["raw", *formats])
    assert all(table[name]["matched"] == 8 for name in ["raw", *formats]), table


def test_an_unknown_or_impossible_format_is_refused(micro_model, micro_tok, tmp_path):
    import copy

    from _helpers import fp_file, insert_config
    from omlkit.insertion.api import _serving_formats

    cfg = insert_config(micro_model, fp_file(tmp_path, micro_tok, 4), tmp_path / "a", formats=["dialogue"])
    with pytest.raises(ConfigError, match="unknown prompt-format 'dialogue'.*did you mean 'dialog'"):
        _serving_formats(cfg, micro_tok, [], 128)
    plain = copy.deepcopy(micro_tok)
    plain.chat_template = None
    with pytest.raises(ConfigError, match="--formats chat: this model's tokenizer has no chat template"):
        _serving_formats(cfg.model_copy(update={"formats": ["chat"]}), plain, [], 128)


def test_verification_probes_formats_and_spends_the_rest_in_the_one_that_answers(
    fingerprinted, micro_model
):
    from omlkit.fingerprints import FingerprintSet
    from omlkit.verification.backends.dummy import DummyBackend
    from omlkit.verification.backends.transformers_backend import TransformersBackend
    from omlkit.verification.formats import verify_across_formats

    model_dir, fps_path = fingerprinted
    fp_set = FingerprintSet.load(fps_path)
    own = TransformersBackend(str(model_dir))
    # the micro fingerprints were trained raw: probing chat first must still settle on raw
    res = verify_across_formats(fp_set, own, ["chat", "dialog", "raw"], probe=3)
    assert res.settings["chosen_format"] == "raw" and res.settings["probe_matched"]["raw"] == 3
    assert [r["format"] for r in res.records] == ["any"] * 3 + ["raw"] * 5
    assert res.matched == 8 and res.verdict.owned
    clean = verify_across_formats(fp_set, TransformersBackend(str(micro_model)), ["chat", "raw"], probe=3)
    assert clean.matched == 0 and not clean.verdict.owned
    with pytest.raises(ConfigError, match="raw-no-bos: an endpoint cannot be asked in it"):
        verify_across_formats(fp_set, DummyBackend({}), ["raw", "raw-no-bos"])
    with pytest.raises(ConfigError, match="unknown format"):
        verify_across_formats(fp_set, own, ["raw", "telepathy"])


def test_an_endpoint_is_probed_in_the_formats_a_text_api_has():
    """An endpoint that only answers chat completions (a chat-only server): the probe finds chat, every
    other key is asked in it alone, and a probe key's null rate is the union bound over the formats."""
    from _helpers import make_set
    from omlkit.verification.backends.dummy import DummyBackend
    from omlkit.verification.formats import ENDPOINT_FORMATS, verify_across_formats

    class ChatOnly(DummyBackend):
        def _lookup(self, prompt):
            answer = super()._lookup(prompt)
            return answer if isinstance(prompt, list) and len(prompt) == 1 else "Sorry?"

    pairs = [(f"the key number {i} of twelve", f"answer{i}") for i in range(12)]
    backend = ChatOnly(dict(pairs))
    res = verify_across_formats(make_set(pairs), backend, list(ENDPOINT_FORMATS), probe=4)
    assert res.settings["chosen_format"] == "chat" and res.settings["probe_matched"] == {
        "raw": 0, "chat": 4, "chat-system": 0, "dialog": 0}
    assert res.matched == 12 and len(backend.calls) == 4 * 4 + 8
    assert any(c.startswith("User: ") and c.endswith("\nAssistant:") for c in backend.calls)
