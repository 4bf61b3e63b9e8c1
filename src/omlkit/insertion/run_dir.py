"""Run directories ``runs/<run-id>/``: what they hold, when one may be reused, and atomic final saves.

Layout: ``config.json`` (the config that made the run), ``fingerprints.sha256`` (the content hash of
the fingerprint file — never the fingerprints), ``benign.json`` (cached benign examples),
``checkpoints/`` (resumable trainer checkpoints), ``train_log.jsonl``, ``model/`` (safetensors +
tokenizer) and ``metrics.json``. ``metrics.json`` with ``"status": "finished"`` is written last, after
``model/`` is renamed into place, so a run is finished exactly when that file says so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from omlkit.errors import RunDirError
from omlkit.insertion.config import InsertConfig
from omlkit.io import atomic_write_json, atomic_write_text
from omlkit.locking import exclusive, holder_name

FINISHED = "finished"


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def fingerprints_hash(self) -> Path:
        return self.path / "fingerprints.sha256"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def log(self) -> Path:
        return self.path / "train_log.jsonl"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def benign(self) -> Path:
        return self.path / "benign.json"

    @property
    def lock_file(self) -> Path:
        """``.<run-id>.lock`` beside the run folder: held by the process training the run."""
        return self.path.parent / f".{self.path.name}.lock"

    def is_finished(self) -> bool:
        """True when ``metrics.json`` records a finished run and ``model/`` exists."""
        if not (self.metrics.is_file() and self.model.is_dir()):
            return False
        try:
            return json.loads(self.metrics.read_text(encoding="utf-8")).get("status") == FINISHED
        except (json.JSONDecodeError, OSError):
            return False

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (one whose ``trainer_state.json`` was written), or None."""
        best: tuple[int, Path] | None = None
        if self.checkpoints.is_dir():
            for d in self.checkpoints.glob("checkpoint-*"):
                step = d.name.rsplit("-", 1)[-1]
                complete = step.isdigit() and (d / "trainer_state.json").is_file()
                if complete and (best is None or int(step) > best[0]):
                    best = (int(step), d)
        return best[1] if best else None


def run_dir_for(config: InsertConfig, fingerprints_sha256: str) -> RunDir:
    """``out_dir/<run_id or hash of config + fingerprint content>``."""
    return RunDir(Path(config.out_dir) / (config.run_id or config.run_hash(fingerprints_sha256)))


def _first_difference(a: dict, b: dict) -> str:
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return key
    return "?"


def check_compatible(run: RunDir, config: InsertConfig, fingerprints_sha256: str) -> None:
    """Refuse (RunDirError) a run directory made by another config or another fingerprint file."""
    try:
        saved = InsertConfig.model_validate(json.loads(run.config.read_text(encoding="utf-8")))
    except Exception:
        raise RunDirError(f"{run.path}: config.json is unreadable or not an insert config; "
                          "use another --run-id or --out-dir") from None
    if saved.hashed_fields() != config.hashed_fields():
        field = _first_difference(saved.hashed_fields(), config.hashed_fields())
        raise RunDirError(f"{run.path} was made by a different config ({field} differs); "
                          "use another --run-id or --out-dir")
    old = run.fingerprints_hash.read_text().strip() if run.fingerprints_hash.is_file() else None
    if old != fingerprints_sha256:
        raise RunDirError(f"{run.path} was made for a different fingerprint file (content hash differs)")


def _clear(run: RunDir) -> None:
    """Remove everything a previous attempt left, finished marker first."""
    run.metrics.unlink(missing_ok=True)
    for d in (run.model, run.checkpoints):
        if d.exists():
            shutil.rmtree(d)
    run.log.unlink(missing_ok=True)


def open_run(config: InsertConfig, fingerprints_sha256: str, write: bool = True) -> tuple[RunDir, str]:
    """Validate (and, when ``write``, prepare) the run directory; returns it and its state:
    ``"new"`` or ``"resume"``.

    Refuses (RunDirError) a directory of another config or fingerprint file, a finished run without
    ``force``, checkpoints with neither ``resume`` nor ``force``, and a non-empty foreign directory.
    """
    run = run_dir_for(config, fingerprints_sha256)
    state = "new"
    if run.path.exists():
        if not run.path.is_dir():
            raise RunDirError(f"{run.path} exists and is not a directory")
        if run.config.is_file():
            check_compatible(run, config, fingerprints_sha256)
            if run.is_finished() and not config.force:
                raise RunDirError(f"{run.path} already holds a finished run (model in {run.model}); "
                                  "pass --force to train it again")
            if config.force:
                state = "new"
            elif run.latest_checkpoint() is not None:
                if not config.resume:
                    raise RunDirError(f"{run.path} holds an interrupted run; pass --resume to continue it "
                                      "or --force to start over")
                state = "resume"
        elif any(run.path.iterdir()):
            raise RunDirError(f"{run.path} is not empty and is not a run directory")
    if write:
        if state == "new" and run.path.exists():
            _clear(run)
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config, json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
        atomic_write_text(run.fingerprints_hash, fingerprints_sha256 + "\n")
    return run, state


def hold_run(run: RunDir, enabled: bool = True) -> contextlib.AbstractContextManager[None]:
    """Hold the run's lock for a block: refuses (RunDirError) a run another process is training, which
    the kernel releases when that process exits, however it exits."""
    def busy(pid: int | None) -> RunDirError:
        return RunDirError(f"{run.path} is being trained by {holder_name(pid)}; wait for it to finish "
                           "or use another --run-id or --out-dir")
    return exclusive(run.lock_file, enabled=enabled, busy=busy)


def check_disk_space(path: Path, need_bytes: int) -> None:
    """Refuse (RunDirError) to start when the filesystem of ``path`` has less than ``need_bytes`` free."""
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        need, have = need_bytes / 2**20, free / 2**20
        raise RunDirError(f"not enough disk space in {path}: the run needs about {need:.0f} MiB, "
                          f"{have:.0f} MiB are free")


def save_model_atomic(run: RunDir, save) -> Path:
    """Call ``save(tmp_dir)`` then rename ``tmp_dir`` to ``run.model`` (replacing an older one).

    A failure (e.g. ENOSPC) removes the temporary folder and raises RunDirError; ``model/`` is then
    either the previous complete model or absent, never half-written.
    """
    tmp = run.path / f".model.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save(tmp)
        old = run.path / f".model.old-{os.getpid()}"
        if run.model.exists():
            os.replace(run.model, old)
        os.replace(tmp, run.model)
        if old.exists():
            shutil.rmtree(old)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        why = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise RunDirError(f"cannot save the model to {run.model}: {why}") from None
    return run.model


def write_metrics(run: RunDir, metrics: dict) -> Path:
    """Write ``metrics.json`` atomically (with ``status`` set by the caller)."""
    return atomic_write_json(run.metrics, metrics)
