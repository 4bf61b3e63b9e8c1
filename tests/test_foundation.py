"""Registry, configs-as-CLI, atomic writes and the fingerprint file format (no model needed)."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Literal

import pytest
import typer
from pydantic import Field

from omlkit.cli import main
from omlkit.config import OmlConfig, config_command
from omlkit.errors import ConfigError, FingerprintFileError
from omlkit.fingerprints import FingerprintSet
from omlkit.io import atomic_write_text
from omlkit.registry import Registry


class Base:
    pass


def test_registry_registers_and_suggests():
    reg: Registry = Registry("widget", Base)

    @reg.register("perinucleus")
    class A(Base):
        pass

    assert reg.get("perinucleus") is A and "perinucleus" in reg and reg.names() == ["perinucleus"]
    with pytest.raises(ConfigError, match="did you mean 'perinucleus'"):
        reg.get("perinucleos")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("perinucleus")(A)
    with pytest.raises(TypeError, match="not a subclass"):
        reg.register("other")(int)


class DemoConfig(OmlConfig):
    """A demo command."""

    n: int = Field(4, ge=1, description="How many.")
    mode: Literal["a", "b"] = Field("a", description="Which mode.")
    flag: bool = Field(False, description="A switch.")
    name: str | None = None


def _demo_app(seen: list) -> typer.Typer:
    app = typer.Typer()
    config_command(app, "demo", DemoConfig, seen.append)

    @app.callback()
    def _cb() -> None:
        pass

    return app


def test_config_command_flags_override_file(tmp_path):
    seen: list = []
    app = _demo_app(seen)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("n: 7\nmode: b\n")
    app(["demo", "--config", str(cfg_file), "--n", "9", "--flag"], standalone_mode=False)
    assert seen[-1] == DemoConfig(n=9, mode="b", flag=True)
    app(["demo"], standalone_mode=False)
    assert seen[-1] == DemoConfig()


def test_config_command_rejects_bad_values(tmp_path):
    app = _demo_app([])
    with pytest.raises(ConfigError, match="--n"):
        app(["demo", "--n", "0"], standalone_mode=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("n: 3\nbogus: 1\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}: bogus: "):
        app(["demo", "--config", str(bad)], standalone_mode=False)
    bad.write_text("n: 0\n")  # a bad value in the file names the file and the key, not a flag
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}: n: .*got 0"):
        app(["demo", "--config", str(bad), "--flag"], standalone_mode=False)
    with pytest.raises(ConfigError, match=r"^options: --n: .*got 0"):  # the flag's value is the bad one
        app(["demo", "--config", str(bad), "--n", "0"], standalone_mode=False)


def test_config_hash_is_canonical():
    assert DemoConfig(n=5).config_hash() == DemoConfig(n=5, mode="a").config_hash()
    assert DemoConfig(n=5).config_hash() != DemoConfig(n=6).config_hash()
    assert DemoConfig().config_hash("abc") != DemoConfig().config_hash("abd")


def test_atomic_write_mode_and_no_overwrite(tmp_path):
    path = atomic_write_text(tmp_path / "s.txt", "secret", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "secret"
    with pytest.raises(FileExistsError):
        atomic_write_text(path, "other", overwrite=False)
    assert path.read_text() == "secret"
    assert [p.name for p in tmp_path.iterdir()] == ["s.txt"]  # no temp file left behind


def _fp_dict(n: int = 3) -> dict:
    return {
        "format": "omlkit.fingerprints/1",
        "strategy": {"key": "random-words", "response": "random-word", "params": {"seed": 1}},
        "fingerprints": [{"id": i, "key": f"key number {i}", "response": f"resp{i}"} for i in range(n)],
    }


def test_exclusive_lock_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
    import os
    import subprocess
    import sys

    from omlkit.locking import LockHeld, exclusive

    lock = tmp_path / "run.lock"
    with exclusive(lock):
        with pytest.raises(LockHeld) as held, exclusive(lock):
            pass
        assert held.value.pid == os.getpid()
    with exclusive(lock):  # released at the end of the block
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from omlkit.locking import exclusive\n"
         f"with exclusive({str(lock)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"process {holder.pid}"), exclusive(lock):
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive(lock):  # a killed holder leaves no stale lock
        pass


def test_fingerprint_file_round_trip_is_secret(tmp_path):
    fps = FingerprintSet.from_dict(_fp_dict())
    path = fps.save(tmp_path / "fp.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = FingerprintSet.load(path)
    assert again == fps and again.content_hash() == fps.content_hash()
    assert "key number" not in repr(again) and "key number" not in repr(again.fingerprints[0])
    with pytest.raises(FingerprintFileError, match="already exists"):
        fps.save(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="other/9"), "format"),
        (lambda d: d["fingerprints"][1].pop("key"), r"fingerprints\[1\]\.key"),
        (lambda d: d["fingerprints"][2].update(id=0), "duplicated"),
        (lambda d: d["fingerprints"][2].update(key="key number 0"), "duplicates an earlier key"),
        (lambda d: d["fingerprints"][0].update(response_prob=1.5), "response_prob"),
        (lambda d: d.update(fingerprints=[]), "fingerprints"),
        (lambda d: d.update(extra_field=1), "extra_field"),
    ],
)
def test_fingerprint_file_errors_name_the_field(tmp_path, mutate, message):
    data = _fp_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FingerprintFileError, match=message) as info:
        FingerprintSet.load(path)
    assert "\n" not in str(info.value) and "key number" not in str(info.value)


def test_fingerprint_file_not_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(FingerprintFileError, match="not valid JSON"):
        FingerprintSet.load(path)


def test_cli_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "base-model" in out and "list" in out


@pytest.mark.parametrize("argv", [["insert", "--bogus"], ["evaluate", "--model", "x"], ["nonsense"]])
def test_cli_usage_errors_are_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("No such" in err or "Error" in err)


#: DESIGN.md's layers, top to bottom: a package imports only from the packages below it (and the core).
LAYERS = {"cli": 6, "commands": 6, "sweep": 5, "evaluation": 4, "protocol": 4, "tracing": 4,
          "verification": 3, "insertion": 3, "fingerprints": 2, "models": 1}


def test_layers_import_downward_only():
    """Every ``omlkit.X`` import in the package points at a lower layer or at the core (registry, config,
    io, errors, ...); siblings of one layer (verification and insertion, say) do not import each other."""
    import ast

    root = Path(__file__).parents[1] / "src" / "omlkit"
    upward = []
    for path in root.rglob("*.py"):
        own = path.relative_to(root).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                if parts[0] != "omlkit" or len(parts) < 2 or parts[1] == own:
                    continue
                rank, theirs = LAYERS.get(own, 0), LAYERS.get(parts[1], 0)
                if theirs and theirs >= rank and {own, parts[1]} != {"cli", "commands"}:
                    upward.append(f"{path.relative_to(root)} imports {target}")
    assert not upward, upward
