"""Options beside their implementation: a new implementation is one file and one registry line, and
the command's flags come from its options class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from pydantic import Field
from typer.testing import CliRunner

from omlkit.evaluation.attacks.base import ATTACKS, Attack, save_model
from omlkit.options import Options, option_fields


class NoiseOptions(Options):
    """The noise scales to try."""

    scales: list[float] = Field(
        default_factory=list, description="Strengths of test-noise: std of the noise added to each weight."
    )


class NoiseAttack(Attack):
    """Adds seeded Gaussian noise of std ``strength`` to every weight (a test attack, not shipped)."""

    options_cls = NoiseOptions
    strength_field = "scales"
    default_strengths = (0.01,)

    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Load, perturb and save."""
        import torch

        from omlkit.models.loading import load_model

        model, tok = load_model(model_path, device="cpu", dtype="fp32")
        gen = torch.Generator().manual_seed(self.config.seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * strength)
        return save_model(model, tok, out_dir)


@pytest.fixture
def noise_attack(monkeypatch):
    """``test-noise`` registered for the test only (the registry is restored afterwards)."""
    monkeypatch.setattr(ATTACKS, "_items", dict(ATTACKS._items))
    ATTACKS.register("test-noise")(NoiseAttack)  # the one registry line
    return NoiseAttack


def _attack_app() -> typer.Typer:
    from omlkit.commands.attack import add_attack_command

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command is invoked by name as under `oml`
    add_attack_command(app)
    return app


def test_an_attack_registered_in_a_test_module_gets_its_flags_and_runs(noise_attack, fingerprinted, tmp_path):
    app = _attack_app()
    runner = CliRunner()
    assert "--scales" in runner.invoke(app, ["attack", "--help"], terminal_width=200).output
    model_dir, fps = fingerprinted
    out = tmp_path / "noise"
    args = ["attack", "test-noise", "--model", str(model_dir), "--fingerprints", str(fps), "--out", str(out),
            "--heldout-texts", "4"]
    res = runner.invoke(app, [*args, "--scales", "0", "--scales", "1.0"])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "attack.json").read_text())
    assert result["strength_name"] == "scale"
    assert result["before"]["matched"] == 8
    persistence = [r["persistence"] for r in result["results"]]
    assert persistence[0] == 1.0 and persistence[1] < 0.5  # noise of std 1 destroys a 0.1-scale model


def test_a_flag_of_another_attack_is_refused_naming_the_attacks_own(noise_attack, fingerprinted, tmp_path):
    model_dir, fps = fingerprinted
    args = ["attack", "test-noise", "--model", str(model_dir), "--fingerprints", str(fps),
            "--out", str(tmp_path / "o"), "--lambdas", "0.5"]
    res = CliRunner().invoke(_attack_app(), args)
    assert res.exit_code != 0
    assert "--lambdas does not apply to attack 'test-noise' (its options: --scales)" in str(res.exception)
    assert not (tmp_path / "o").exists()


def test_two_implementations_declaring_one_flag_differently_are_refused():
    class A(Options):
        steps: int = 3

    class B(Options):
        steps: int = 4

    class ImplA:
        options_cls = A

    class ImplB:
        options_cls = B

    with pytest.raises(TypeError, match="option 'steps' of 'b' differs from that of 'a'"):
        option_fields([("a", ImplA), ("b", ImplB)])


def test_the_shipped_attacks_share_only_options_declared_once():
    from omlkit.evaluation.attacks import AttackConfig

    owners = AttackConfig.option_owners
    assert owners["steps"] == ("finetune", "lora") and owners["lora_rank"] == ("lora",)
    assert owners["gates"] == ("suppress", "suppress-lookahead")  # one field, SuppressOptions
    assert owners["tops"] == ("suppress-neighbor", "suppress-topk")  # one field, TopsOptions
    assert not set(owners) & {"kind", "model", "fingerprints", "seed"}  # the command's own fields
