"""``oml demo``: the main job end to end on the embedded default model.

base model (cached) → generate fingerprints → insert → verify (ownership test) → utility → report.
Every stage reuses what an earlier demo run finished, so an interrupted demo resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import Field

from omlkit.commands._app import app
from omlkit.config import OmlConfig, config_command

#: The insertion settings the demo prints.
RECIPE_SHOWN = ("learning_rate", "epochs", "forgetting_regularizer_strength", "benign_fraction",
                "kl_strength", "lora", "freeze_embeddings", "confidence_cap", "prompt_augmentation")


def _stage(console, title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.time()


class DemoConfig(OmlConfig):
    """Run the whole job on the embedded model (or --model): generate, insert, verify, evaluate, report."""

    workdir: Path | None = Field(
        None, description="Where the demo writes its files (default: runs/demo, or runs/demo-MODEL)."
    )
    n: int = Field(256, ge=1, description="Number of fingerprints.")
    model: str = Field("omlkit-tiny", description="Base model (the embedded default unless given).")
    seed: int = Field(42, description="Seed for generation and insertion.")


def demo(cfg: DemoConfig) -> None:
    """Run the six stages in order and print where everything went."""
    n, model, seed = cfg.n, cfg.model, cfg.seed
    from rich.console import Console

    console = Console()
    workdir = cfg.workdir or Path("runs/demo" if model == "omlkit-tiny" else f"runs/demo-{Path(model).name}")
    t_all = time.time()
    t = _stage(console, "1/6 base model")
    base = _base_model(console, model)
    console.print(f"base model ready in {time.time() - t:.0f} s: {base}")

    t = _stage(console, f"2/6 generate {n} fingerprints (English keys, perinucleus responses)")
    fp_set, fp_path = _fingerprints(console, workdir / "fingerprints.json", n, seed, base)
    console.print(f"{len(fp_set)} fingerprints in {fp_path} (mode 0600) — {time.time() - t:.0f} s")

    recipe = _recipe(model)
    t = _stage(console, f"3/6 insert (recipe {recipe}, early stop once every fingerprint is recovered)")
    run = _insert(console, workdir, base, fp_path, fp_set, seed, recipe)
    console.print(f"{time.time() - t:.0f} s")

    t = _stage(console, "4/6 verify the fingerprinted model and the base model (ownership test)")
    _verify(console, run, base, fp_set, workdir)
    console.print(f"{time.time() - t:.0f} s")

    t = _stage(console, "5/6 utility (held-out perplexity against the base model)")
    _utility(console, run, base)
    console.print(f"{time.time() - t:.0f} s")

    t = _stage(console, "6/6 report")
    from omlkit.evaluation.report import write_report

    report = write_report([run.path], force=True)
    console.print(f"report: [bold]{report}[/bold] — {time.time() - t:.0f} s")
    console.print(f"demo finished in {time.time() - t_all:.0f} s")


def _base_model(console, model: str) -> str:
    """Resolve (build or fetch on first use) the base model and print where it came from."""
    from omlkit.models import resolve_model

    base = resolve_model(model)
    info_path = Path(base) / "build_info.json"
    if info_path.is_file():
        from omlkit.commands.base_model import print_summary

        print_summary(base, json.loads(info_path.read_text()))
    elif (Path(base) / "provenance.json").is_file():
        record = json.loads((Path(base) / "provenance.json").read_text())
        console.print(f"{record['name']}: {record['parameters'] / 1e6:.1f} M parameters from "
                      f"{record['source']['requirement']} ({record['note']})")
    return base


def _fingerprints(console, fp_path: Path, n: int, seed: int, base: str):
    """``(fingerprint set, its file)``: generated for ``base``, or an earlier demo's reused."""
    from omlkit.fingerprints import FingerprintSet

    if fp_path.is_file():
        console.print(f"reusing {fp_path}")
    else:
        from omlkit.fingerprints.config import GenerateConfig
        from omlkit.fingerprints.generate import run_generate

        run_generate(GenerateConfig(n=n, seed=seed, target_model=base, generator_model=base, out=fp_path))
    return FingerprintSet.load(fp_path), fp_path


def _recipe(model: str) -> str:
    """The embedded models are a few million parameters: they get the recipe measured best on them; any
    other model gets the library default, the recipe measured on the reference real model."""
    from omlkit.insertion.config import DEFAULT_RECIPE
    from omlkit.models.loading import is_embedded

    return "small-model" if is_embedded(model) else DEFAULT_RECIPE


def _insert(console, workdir: Path, base: str, fp_path: Path, fp_set, seed: int, recipe: str):
    """The fingerprinted run (``RunDir``): trained, resumed, or an earlier demo's finished run reused —
    only when it was trained with the same settings."""
    from omlkit.errors import RunDirError
    from omlkit.insertion.api import insert_fingerprints
    from omlkit.insertion.config import InsertConfig
    from omlkit.insertion.run_dir import RunDir, check_compatible

    icfg = InsertConfig(model=base, fingerprints=fp_path, out_dir=workdir / "runs", seed=seed,
                        run_id="fingerprinted", recipe=recipe)
    console.print(f"recipe {recipe}: " + ", ".join(f"{k}={getattr(icfg, k)}" for k in RECIPE_SHOWN))
    run = RunDir(workdir / "runs" / "fingerprinted")
    if run.config.is_file():  # an earlier demo's run: reuse or resume it only if the recipe is the same
        try:
            check_compatible(run, icfg, fp_set.content_hash())
        except RunDirError:
            raise RunDirError(f"{run.path} holds a run of an earlier demo with other settings (an older "
                              f"recipe?); remove {workdir} or pass another --workdir") from None
    if run.is_finished():
        console.print(f"reusing finished run {run.path}")
    else:
        insert_fingerprints(icfg)
    metrics = json.loads(run.metrics.read_text())
    console.print(f"run {run.path}: recovery at the end of training {metrics.get('recovery')}")
    return run


def _verify(console, run, base: str, fp_set, workdir: Path) -> None:
    """The ownership test on the fingerprinted model and on the base model that never was."""
    from omlkit.verification.verify import verify_model

    mine = verify_model(run.model, fp_set, out=run.path / "verify")
    base_check = verify_model(base, fp_set, out=workdir / "base-verify")
    for label, res in (("fingerprinted", mine), ("base (never fingerprinted)", base_check)):
        v = res.verdict
        console.print(f"{label}: {res.matched}/{res.checked} keys match, p = {v.p_value:.3g} → "
                      f"[bold]{'owned' if v.owned else 'not owned'}[/bold]")


def _utility(console, run, base: str) -> None:
    """Held-out perplexity of the run against the base (utility.json, with the instruction check), computed
    once."""
    from omlkit.evaluation.config import UtilityConfig
    from omlkit.evaluation.utility import evaluate_utility

    util_path = run.path / "eval" / "utility.json"
    if util_path.is_file():
        util = json.loads(util_path.read_text())
    else:
        _, util = evaluate_utility(UtilityConfig(model=str(run.path), base=base, benchmarks=False))
    ppl = util["perplexity"]
    console.print(f"held-out perplexity {ppl['model']:.2f} vs base {ppl['base']:.2f} "
                  f"({100 * ppl['relative']:+.1f}%)")


config_command(app, "demo", DemoConfig, demo, aliases={"n": "-n"})
