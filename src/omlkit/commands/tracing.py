"""``oml distribute`` (one fingerprinted copy per host) and ``oml trace`` (which host a suspect came from)."""

from __future__ import annotations

import sys

from omlkit.commands._app import app
from omlkit.config import config_command
from omlkit.tracing.config import DistributeConfig, TraceConfig


def say(msg: str) -> None:
    """Progress goes to stderr, one line each."""
    print(msg, file=sys.stderr, flush=True)


def run_distribute(cfg: DistributeConfig) -> None:
    """Make the copies and print where the manifest is and what it cost."""
    from omlkit.tracing.distribute import distribute

    path, timing = distribute(cfg, say=say)
    print(f"{cfg.hosts} copies in {timing['total_seconds']:.0f} s; manifest (secret, 0600): {path}")


def run_trace(cfg: TraceConfig) -> None:
    """Trace and print the accused hosts with their p-values and the keys spent."""
    import omlkit.evaluation.attacks  # noqa: F401  (a suspect --model may be an attacked wrapper folder)
    from omlkit.tracing.trace import trace_target

    result = trace_target(cfg)
    ranked = sorted(result.p_values.items(), key=lambda kv: kv[1])
    for host, p in ranked[:5]:
        mark = "ACCUSED" if host in result.accused else ""
        held = f"{result.held_matches[host]} of {result.matched} matched keys held"
        print(f"{host}: p = {p:.3g}  ({held}) {mark}")
    verdict = ", ".join(result.accused) if result.accused else "no host (evidence below the threshold)"
    print(f"source: {verdict}; {result.keys_spent} keys spent; threshold {result.threshold:.3g} "
          f"(alpha {result.alpha:g} over {len(result.p_values)} hosts and {result.looks} looks)")


config_command(app, "distribute", DistributeConfig, run_distribute)
config_command(app, "trace", TraceConfig, run_trace)
