"""``oml evaluate utility`` and ``oml evaluate robustness``: JSON results in the run directory or --out."""

from __future__ import annotations

import sys

import typer

from omlkit.commands._app import app
from omlkit.config import config_command
from omlkit.evaluation.config import FormatsConfig, RobustnessConfig, UtilityConfig

evaluate_app = typer.Typer(
    help="Evaluate a model: utility against its base, robustness to system prompts.", no_args_is_help=True
)
app.add_typer(evaluate_app, name="evaluate")


def say(msg: str) -> None:
    """Progress and notices go to stderr, one unwrapped line each."""
    print(msg, file=sys.stderr, flush=True)


def _utility(cfg: UtilityConfig) -> None:
    from omlkit.evaluation.utility import evaluate_utility

    path, result = evaluate_utility(cfg, say=say)
    p = result["perplexity"]
    print(
        f"held-out perplexity: model {p['model']:.3f}  base {p['base']:.3f}  "
        f"delta {p['delta']:+.3f} ({p['relative']:+.2%}) over {p['n_texts']} paragraphs"
    )
    for task, metrics in result["benchmarks"]["scores"].items():
        for metric, v in metrics.items():
            print(f"{task} {metric}: model {v['model']:.4f}  base {v['base']:.4f}  delta {v['delta']:+.4f}")
    print(f"wrote {path}")


def _robustness(cfg: RobustnessConfig) -> None:
    from omlkit.evaluation.robustness import evaluate_robustness, markdown_table

    path, result = evaluate_robustness(cfg)
    print(markdown_table(result))
    print(f"wrote {path}")


def _formats(cfg: FormatsConfig) -> None:
    from omlkit.evaluation.formats import accuracy_by_format, markdown_table
    from omlkit.fingerprints import FingerprintSet
    from omlkit.io import atomic_write_json
    from omlkit.verification.backends.transformers_backend import TransformersBackend, local_model_path

    backend = TransformersBackend(local_model_path(cfg.model), batch_size=cfg.batch_size, device=cfg.device)
    fp_set = FingerprintSet.load(cfg.fingerprints)
    fp_set.check_tokenizer(backend.tokenizer, source=str(cfg.fingerprints))
    result = accuracy_by_format(backend, fp_set, cfg.formats or None, cfg.match)
    print(markdown_table(result))
    if cfg.out is not None:
        atomic_write_json(cfg.out, result)
        print(f"wrote {cfg.out}")


config_command(evaluate_app, "utility", UtilityConfig, _utility)
config_command(evaluate_app, "formats", FormatsConfig, _formats)
config_command(evaluate_app, "robustness", RobustnessConfig, _robustness)
