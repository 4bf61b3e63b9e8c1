"""``report.md`` with PNG plots, built from the results found in one or more run directories.

It reads ``metrics.json`` (from ``oml insert``), ``eval/utility.json``, ``eval/robustness.json`` and
``attacks/*/attack.json``, and opens with what matters: fingerprint recovery, the utility delta and the
ownership verdict. With several runs it plots recovery and utility against the number of fingerprints.
A report is derived data: one written by this module (it carries :data:`MARKER`) is regenerated
freely; any other ``report.md`` is only replaced with ``force``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omlkit.errors import RunDirError
from omlkit.evaluation.results import ATTACK_FORMAT, ROBUSTNESS_FORMAT, UTILITY_FORMAT, read_result
from omlkit.io import atomic_write_bytes, atomic_write_text

MARKER = "<!-- omlkit report: written by `oml report`, regenerated from the run's result files -->"
_RESULT_NAMES = ("utility.json", "robustness.json", "attack.json")


@dataclass
class RunResults:
    """Everything a report needs from one run directory (missing pieces stay None/empty)."""

    path: Path
    metrics: dict[str, Any] | None = None
    utility: dict[str, Any] | None = None
    robustness: dict[str, Any] | None = None
    verification: dict[str, Any] | None = None  # summary.json of `oml verify --out RUN/verify`
    attacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.name

    def own_cell(self) -> dict[str, Any] | None:
        """This run's robustness cell without a system prompt (its column, else the first)."""
        if not self.robustness:
            return None
        models = self.robustness["models"]
        label = next(
            (m["label"] for m in models if m.get("run_dir") and Path(m["run_dir"]) == self.path),
            models[0]["label"],
        )
        row = next((r for r in self.robustness["rows"] if r["prompt"] == "none"), None)
        return row["results"].get(label) if row else None

    @property
    def n_fingerprints(self) -> int | None:
        """Number of fingerprints of the run (metrics, else any result that recorded it)."""
        for src in (self.metrics, self.robustness, *self.attacks):
            if src and isinstance(src.get("n_fingerprints"), int):
                return src["n_fingerprints"]
        return None

    def recovery(self) -> tuple[float, str] | None:
        """(accuracy without system prompt, where it came from)."""
        if self.verification:
            v = self.verification
            return v["accuracy"], f"{v['matched']}/{v['checked']} keys, `oml verify`"
        cell = self.own_cell()
        if cell:
            return cell["accuracy"], f"{cell['matched']}/{cell['checked']} keys, `oml evaluate robustness`"
        if self.attacks:
            b = self.attacks[0]["before"]
            return b["accuracy"], f"{b['matched']}/{b['checked']} keys, `oml attack` baseline"
        if self.metrics and isinstance(self.metrics.get("recovery"), (int, float)):
            m = self.metrics
            return float(
                m["recovery"]
            ), f"{m.get('recovered')}/{m.get('n_fingerprints')} keys at the end of training"
        return None

    def verdict(self) -> dict[str, Any] | None:
        """The ownership verdict without a system prompt (``verdict``, ``p_value``, counts)."""
        if self.verification:
            return self.verification["ownership"]
        cell = self.own_cell()
        if cell:
            return cell
        return self.attacks[0]["before"] if self.attacks else None

    def utility_delta(self) -> float | None:
        """Held-out perplexity of the model minus its base's."""
        return self.utility["perplexity"]["delta"] if self.utility else None


def collect(run_dir: str | Path) -> RunResults:
    """Read a run directory's metrics and result files; RunDirError when it is not a directory."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist")
    res = RunResults(path)
    if (path / "metrics.json").is_file():
        try:
            res.metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            res.metrics = None
    summary = path / "verify" / "summary.json"
    if summary.is_file():
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
            res.verification = data if data.get("complete") and "ownership" in data else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            res.verification = None
    for name in _RESULT_NAMES:
        for f in sorted(path.rglob(name)):
            if "model" in f.relative_to(path).parts[:-1]:
                continue
            data = read_result(f)
            if data is None:
                continue
            if data["format"] == UTILITY_FORMAT:
                res.utility = data
            elif data["format"] == ROBUSTNESS_FORMAT:
                res.robustness = data
            elif data["format"] == ATTACK_FORMAT:
                res.attacks.append(data)
    res.attacks.sort(key=lambda a: a["kind"])
    return res


# -- plots ---------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_scaling(runs: list[RunResults], path: Path) -> Path | None:
    """Recovery and utility delta against the number of fingerprints (one point per run); None if < 2 runs."""
    pts = sorted((r.n_fingerprints, r.recovery(), r.utility_delta()) for r in runs if r.n_fingerprints)
    if len(pts) < 2:
        return None
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    rec = [(n, rc[0]) for n, rc, _ in pts if rc]
    ut = [(n, d) for n, _, d in pts if d is not None]
    if rec:
        ax1.plot([n for n, _ in rec], [100 * a for _, a in rec], "o-")
    ax1.set(xscale="log", xlabel="fingerprints", ylabel="recovery (%)", ylim=(0, 105), title="Recovery")
    if ut:
        ax2.plot([n for n, _ in ut], [d for _, d in ut], "s-", color="tab:red")
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set(xscale="log", xlabel="fingerprints", ylabel="Δ held-out perplexity", title="Utility cost")
    fig.tight_layout()
    return _save(fig, path)


def plot_robustness(result: dict[str, Any], path: Path) -> Path:
    """Grouped bars: accuracy per system prompt, one bar per model."""
    plt = _pyplot()
    labels = [m["label"] for m in result["models"]]
    rows = result["rows"]
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows) + 2), 3.4))
    for i, lab in enumerate(labels):
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, [100 * r["results"][lab]["accuracy"] for r in rows], width, label=lab)
    ax.set_xticks(range(len(rows)), [r["prompt"] for r in rows], rotation=45, ha="right")
    ax.set(ylabel="fingerprint accuracy (%)", ylim=(0, 105), title="Accuracy under held-out system prompts")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_persistence(result: dict[str, Any], path: Path) -> Path:
    """Persistence (%) and Δ perplexity against attack strength (axis flipped when lower is stronger)."""
    plt = _pyplot()
    rows = sorted(result["results"], key=lambda r: r["strength"])
    xs = [r["strength"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(xs, [100 * (r["persistence"] or 0.0) for r in rows], "o-", label="persistence")
    ax.set(
        xlabel=result["strength_name"],
        ylabel="persistence (%)",
        ylim=(0, 105),
        title=f"{result['kind']}: persistence vs strength",
    )
    if result.get("stronger") == "lower":
        ax.invert_xaxis()
    ax2 = ax.twinx()
    ax2.plot(xs, [r["utility_delta"] for r in rows], "s--", color="tab:red", label="Δ perplexity")
    ax2.set_ylabel("Δ held-out perplexity", color="tab:red")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="best", fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


# -- text ----------------------------------------------------------------------------------------------


def _summary_lines(run: RunResults) -> list[str]:
    rec = run.recovery()
    lines = [
        f"- **Recovery**: {rec[0]:.1%} ({rec[1]})"
        if rec
        else "- **Recovery**: not measured (run `oml evaluate robustness` or `oml attack`)"
    ]
    if run.utility:
        p, b = run.utility["perplexity"], run.utility["benchmarks"]
        lines.append(
            f"- **Utility**: held-out perplexity {p['model']:.2f} vs base {p['base']:.2f} "
            f"(Δ {p['delta']:+.2f}, {p['relative']:+.1%})"
        )
        if run.utility.get("instructions"):
            i = run.utility["instructions"]
            lines.append(f"  - instruction check (log-likelihood per token of the base model's answers to "
                         f"{i['n']} held-out instructions): {i['model']:.3f} vs base {i['base']:.3f} "
                         f"(Δ {i['delta']:+.3f})")
        if b["status"] == "ok":
            for task, metrics in b["scores"].items():
                for metric, v in metrics.items():
                    lines.append(
                        f"  - {task} {metric}: {v['model']:.3f} vs base {v['base']:.3f} (Δ {v['delta']:+.3f})"
                    )
        else:
            lines.append(f"  - benchmarks: {b['message']}")
    else:
        lines.append("- **Utility**: not measured (run `oml evaluate utility`)")
    v = run.verdict()
    if v:
        lines.append(
            f"- **Ownership**: **{v['verdict']}** (p = {v['p_value']:.3g}, "
            f"{v['matched']}/{v['checked']} keys matched)"
        )
    else:
        lines.append("- **Ownership**: not tested")
    return lines


def _training_lines(metrics: dict[str, Any]) -> list[str]:
    keys = (
        "n_fingerprints",
        "recovered",
        "recovery",
        "global_step",
        "epochs",
        "train_loss",
        "early_stop",
        "train_seconds",
        "learning_rate",
    )

    def fmt(key: str, value: Any) -> str:
        if key == "recovery":
            return f"{value:.1%}"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    rows = [f"| {k} | {fmt(k, metrics[k])} |" for k in keys if metrics.get(k) is not None]
    return ["## Training", "", "| metric | value |", "|---|---:|", *rows, ""] if rows else []


def render(runs: list[RunResults], out: Path) -> str:
    """The Markdown of the report for ``runs`` (the first is the subject); writes plots into ``out``."""
    from omlkit.evaluation.persistence import markdown_table as attack_table
    from omlkit.evaluation.robustness import markdown_table as robustness_table

    main = runs[0]
    lines = [MARKER, f"# omlkit report: {main.name}", "", *_summary_lines(main), ""]
    if main.metrics:
        lines += _training_lines(main.metrics)
    if len(runs) > 1:
        lines += [
            "## Recovery and utility against the number of fingerprints",
            "",
            "| run | fingerprints | recovery | Δ perplexity | verdict |",
            "|---|---:|---:|---:|---|",
        ]
        for r in sorted(runs, key=lambda r: r.n_fingerprints or 0):
            rec, d, v = r.recovery(), r.utility_delta(), r.verdict()
            lines.append(
                f"| {r.name} | {r.n_fingerprints or '–'} | {f'{rec[0]:.1%}' if rec else '–'} | "
                f"{f'{d:+.2f}' if d is not None else '–'} | {v['verdict'] if v else '–'} |"
            )
        if plot_scaling(runs, out / "scaling.png"):
            lines += ["", "![recovery and utility against the number of fingerprints](scaling.png)"]
        lines.append("")
    if main.robustness:
        lines += [
            "## System-prompt robustness",
            "",
            f"Accuracy on {main.robustness['n_fingerprints']} fingerprints with no system prompt and under "
            "each of the held-out system prompts (never seen in training).",
            "",
            robustness_table(main.robustness),
            "",
            f"![robustness]({plot_robustness(main.robustness, out / 'robustness.png').name})",
            "",
        ]
    if main.attacks:
        lines += [
            "## Attacks",
            "",
            "Persistence: share of the fingerprints matched before the attack that still match after it. "
            "Δ perplexity: held-out perplexity of the attacked model minus the unattacked one.",
            "",
        ]
        for att in main.attacks:
            png = plot_persistence(att, out / f"persistence_{att['kind']}.png")
            lines += [f"### {att['kind']}", "", attack_table(att), "", f"![{att['kind']}]({png.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(run_dirs: list[str | Path], out: str | Path | None = None, force: bool = False) -> Path:
    """Write ``report.md`` and PNGs for ``run_dirs`` into ``out`` (default: the first run); returns its path.

    Refuses (RunDirError) a missing run directory, and a ``report.md`` not written by ``oml report``
    unless ``force``.
    """
    runs = [collect(d) for d in run_dirs]
    target = Path(out) if out is not None else runs[0].path
    path = target / "report.md"
    if path.exists() and not force:
        head = path.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        if head != [MARKER]:
            raise RunDirError(
                f"{path} exists and was not written by `oml report` (pass --force to overwrite)"
            )
    target.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, render(runs, target))
