"""``oml verify``: check a local model or an endpoint against a fingerprint file and print the verdict."""

from __future__ import annotations

from typing import Any

from omlkit.commands._app import app
from omlkit.config import config_command
from omlkit.verification.config import VerifyConfig


def print_result(result: Any, fp_set: Any, cfg: VerifyConfig) -> None:
    """Summary table and verdict; with ``--reveal`` also each key, its response and the answer."""
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    console = Console()
    if cfg.reveal:
        by_id = {fp.id: fp for fp in fp_set.fingerprints}
        keys = Table(title="keys (secret)")
        for col in ("id", "key", "response", "answer", "matched"):
            keys.add_column(col)
        for r in result.records:
            fp = by_id[r["id"]]
            answer = r["answer"] if r["error"] is None else f"[red]{r['error']}[/red]"
            keys.add_row(str(fp.id), fp.key, fp.response, str(answer), "yes" if r["matched"] else "no")
        console.print(keys)
    verdict = result.verdict
    table = Table(title="oml verify", show_header=False)
    table.add_row("fingerprints", f"{cfg.fingerprints} ({len(fp_set)} keys)")
    table.add_row("target", cfg.model or cfg.endpoint or "")
    detail = {"rank": f" (top {cfg.rank_k})", "within": f" (after at most {cfg.within} tokens)"}
    table.add_row("match", cfg.match + detail.get(cfg.match, ""))
    if "chosen_format" in result.settings:
        n = result.settings["probe"]
        probed = ", ".join(f"{k} {v}/{n}" for k, v in result.settings["probe_matched"].items())
        table.add_row("format", f"{result.settings['chosen_format']} (probe: {probed})")
    table.add_row("keys checked", str(result.checked))
    table.add_row("matched", str(result.matched))
    table.add_row("accuracy", f"{result.accuracy:.1%}")
    if result.errors:
        reasons = Counter(r["error"] for r in result.records if r["error"] is not None)
        top = "; ".join(f"{n}x {why}" for why, n in reasons.most_common(3))
        table.add_row("errors", f"[red]{result.errors}[/red] ({top})")
    table.add_row("p-value", f"{verdict.p_value:.3g} (alpha {verdict.alpha:g})")
    owned = "[bold green]owned[/bold green]" if verdict.owned else "[bold yellow]not owned[/bold yellow]"
    if not result.checked:
        owned += " [red](no key was answered: inconclusive)[/red]"
    table.add_row("verdict", owned)
    console.print(table)
    if cfg.out is not None:
        console.print(f"per-key results: {cfg.out / 'verify.jsonl'}; summary: {cfg.out / 'summary.json'}")
        if result.errors:
            console.print(f"re-run the same command to retry the {result.errors} keys that failed")


def run_verify(cfg: VerifyConfig) -> Any:
    """Load the fingerprints, build the backend, verify, print; returns the VerifyResult."""
    from rich.progress import Progress

    import omlkit.evaluation.attacks  # noqa: F401  (registers the wrapper loaders: --model may be one)
    from omlkit.fingerprints import FingerprintSet
    from omlkit.verification.verify import verify_with_config

    fp_set = FingerprintSet.load(cfg.fingerprints)
    with Progress(transient=True) as bar:
        task = bar.add_task("verifying", total=cfg.sample or len(fp_set))
        result = verify_with_config(
            cfg, fp_set, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    print_result(result, fp_set, cfg)
    return result


config_command(app, "verify", VerifyConfig, run_verify)
