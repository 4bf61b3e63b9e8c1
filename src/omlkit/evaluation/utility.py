"""Utility of a model, always as a delta against its base model.

Two measures: perplexity on the embedded corpus's fixed held-out split (always available, offline),
and lm-eval's tinyBenchmarks through ``lm_eval.simple_evaluate`` on the loaded model (``HFLM``). The
benchmarks need the ``tinyBenchmarks`` package and the Hugging Face hub's datasets; when either is out
of reach the result says so in one line and the utility is the perplexity alone.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omlkit.errors import ConfigError, RunDirError
from omlkit.evaluation.config import TINY_TASKS, UtilityConfig
from omlkit.evaluation.instructions import InstructionCheck
from omlkit.evaluation.results import (
    UTILITY_FORMAT,
    now,
    output_dir,
    resolve_base,
    resolve_model_ref,
    write_result,
)

log = logging.getLogger(__name__)


def heldout_texts(limit: int | None = None) -> list[str]:
    """The corpus's held-out paragraphs (the first ``limit`` of them when given)."""
    from omlkit.models.corpus import corpus_split

    texts = corpus_split("heldout")
    return texts[:limit] if limit else texts


def heldout_perplexity(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str] | None = None,
    *,
    max_length: int = 256,
    batch_size: int = 8,
) -> float:
    """Perplexity of ``model`` on ``texts`` (default: the whole held-out split)."""
    from omlkit.models.perplexity import perplexity

    return perplexity(
        model,
        tokenizer,
        list(texts) if texts is not None else heldout_texts(),
        max_length=max_length,
        batch_size=batch_size,
    )


@dataclass
class BenchmarkOutcome:
    """lm-eval scores per task and metric (``status`` "ok"), or why there are none (else)."""

    status: str
    message: str | None = None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def task_manager() -> Any:
    """lm-eval's task index (built once per process: it reads every task's YAML)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def check_tasks(tasks: Sequence[str]) -> None:
    """Refuse (ConfigError) task names lm-eval does not know, with close matches."""
    import difflib

    known = set(task_manager().all_tasks)
    for task in tasks:
        if task not in known:
            close = difflib.get_close_matches(task, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"--tasks: unknown lm-eval task {task!r}{hint}")


def run_benchmarks(
    model: Any, tokenizer: Any, tasks: Sequence[str], *, limit: int | None = None, batch_size: int = 8
) -> BenchmarkOutcome:
    """``lm_eval.simple_evaluate`` on ``model`` wrapped in ``HFLM``; "unavailable" with a one-line reason
    when the tasks cannot be loaded (offline hub, missing ``tinyBenchmarks`` package)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm_log = logging.getLogger("lm_eval")
    level = lm_log.level
    lm_log.setLevel(logging.ERROR)  # its warnings about being handed a model object are expected here
    try:
        lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=batch_size,
            device=str(next(model.parameters()).device),
        )
        out = lm_eval.simple_evaluate(
            model=lm, tasks=list(tasks), limit=limit, log_samples=False, task_manager=task_manager()
        )
    except Exception as exc:  # the task loader raises whatever its dataset/hub/import path raises
        log.debug("lm-eval failed", exc_info=True)
        return BenchmarkOutcome("unavailable", unavailable_message(exc, tasks))
    finally:
        lm_log.setLevel(level)
    scores: dict[str, dict[str, float]] = {}
    for task, metrics in (out or {}).get("results", {}).items():
        scores[task] = {
            k.split(",")[0]: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and "stderr" not in k and not math.isnan(float(v))
        }
    return BenchmarkOutcome("ok", None, scores)


def unavailable_message(exc: BaseException, tasks: Sequence[str] = TINY_TASKS) -> str:
    """One line saying why the benchmarks could not run and that perplexity stands in."""
    from omlkit.hub import hub_reachable

    first = (str(exc).strip().splitlines() or [""])[0][:200]
    if isinstance(exc, ImportError):
        why = f"a package lm-eval needs is missing ({first})"
    elif not hub_reachable():
        why = f"the Hugging Face hub cannot be reached to load the task datasets ({type(exc).__name__})"
    else:
        why = f"the task datasets could not be loaded ({type(exc).__name__}: {first})"
    what = "tinyBenchmarks" if all(t.startswith("tiny") for t in tasks) else "lm-eval tasks"
    return f"{what} unavailable: {why}; reporting held-out perplexity only"


def deltas(
    model_scores: dict[str, dict[str, float]], base_scores: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """Per task and metric: ``{"model", "base", "delta"}`` for metrics both runs report."""
    out: dict[str, Any] = {}
    for task, metrics in model_scores.items():
        for metric, value in metrics.items():
            if metric in base_scores.get(task, {}):
                base = base_scores[task][metric]
                out.setdefault(task, {})[metric] = {"model": value, "base": base, "delta": value - base}
    return out


def evaluate_utility(cfg: UtilityConfig, say: Any = None) -> tuple[Path, dict[str, Any]]:
    """Perplexity (and lm-eval when reachable) of the model and its base; writes ``utility.json``.

    Returns ``(path, result)``. ``say`` (a one-argument callable) receives progress lines, among them the
    one-line notice when the benchmarks fall back. Refuses an existing result without ``--force``.
    """
    from omlkit.evaluation.attacks import load_attacked
    from omlkit.models.loading import resolve_model

    say = say or (lambda _msg: None)
    ref = resolve_model_ref(cfg.model)
    base = resolve_base(cfg.base, ref)
    path = output_dir(cfg.out, ref, "eval") / "utility.json"
    if path.exists() and not cfg.force:
        raise RunDirError(f"{path} already exists (pass --force to overwrite)")
    if cfg.benchmarks:
        check_tasks(cfg.tasks)
    texts = heldout_texts(cfg.heldout_texts)
    measured: dict[str, dict[str, Any]] = {}
    outcome: dict[str, BenchmarkOutcome] = {}
    check = None
    for role, name in (("base", base), ("model", ref.name)):  # the base first: it answers the instructions
        model, tok = load_attacked(name, device=cfg.device)
        if role == "base":
            base_path = resolve_model(base, progress=False)
            check = InstructionCheck.for_base(model, tok, base_path, cfg.instructions)
        elif check is not None:
            say(f"model: instruction check on {len(check.prompts)} held-out instructions")
            measured["instructions"] = check.delta(model, tok)
        say(f"{role}: held-out perplexity on {len(texts)} paragraphs")
        measured[role] = {
            "perplexity": heldout_perplexity(
                model, tok, texts, max_length=cfg.max_length, batch_size=cfg.batch_size
            )
        }
        if not cfg.benchmarks:
            outcome[role] = BenchmarkOutcome("skipped", "benchmarks turned off (--no-benchmarks)")
        elif role == "model" and outcome["base"].status != "ok":
            outcome[role] = outcome["base"]  # same tasks, same failure: do not wait for it twice
        else:
            say(f"{role}: lm-eval {', '.join(cfg.tasks)}")
            outcome[role] = run_benchmarks(model, tok, cfg.tasks, limit=cfg.limit, batch_size=cfg.batch_size)
            if outcome[role].status != "ok":
                say(outcome[role].message)
        del model
    ppl_m, ppl_b = measured["model"]["perplexity"], measured["base"]["perplexity"]
    bench = outcome["model"] if outcome["model"].status != "ok" else outcome["base"]
    result = {
        "format": UTILITY_FORMAT,
        "created": now(),
        "model": ref.name,
        "base": base,
        "perplexity": {
            "model": ppl_m,
            "base": ppl_b,
            "delta": ppl_m - ppl_b,
            "relative": ppl_m / ppl_b - 1.0,
            "n_texts": len(texts),
            "max_length": cfg.max_length,
        },
        "instructions": measured.get("instructions"),
        "benchmarks": {
            "status": bench.status,
            "message": bench.message,
            "tasks": list(cfg.tasks),
            "limit": cfg.limit,
            "scores": deltas(outcome["model"].scores, outcome["base"].scores) if bench.status == "ok" else {},
        },
    }
    return write_result(path, result, force=cfg.force), result
