"""The sweep file: base stage sections, the grid over their fields, and its expansion into points.

A sweep file is YAML (or JSON/TOML)::

    name: anti_forgetting
    model: omlkit-tiny                 # fills generate.target_model, insert.model, evaluate.base, ...
    stages: [generate, insert, verify, evaluate]
    generate: {n: 256}                 # fields of GenerateConfig
    insert:                            # fields of InsertConfig
      forgetting_regularizer_strength: {grid: [0, 0.5, 0.75, 0.9]}
    grid:                              # more axes: "section.field" -> values
      insert.benign_fraction: [0, 0.25]
      strategy:                        # a linked axis: each value sets several fields together
        - {label: eng-peri, generate.key_strategy: english, generate.response_strategy: perinucleus}

Every section is the field set of one stage's library config (see :mod:`omlkit.sweep.stages`) minus the
paths and flags the runner fills in. The points are the cartesian product of the axes, in the order
they appear (inline ``{grid: [...]}`` values first, then ``grid:`` entries); each point's id is the hash
of its resolved stage configs (every field, defaults included), so the same point always lands in the
same folder and is never computed twice.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from omlkit.config import OmlConfig, read_config_file
from omlkit.errors import ConfigError
from omlkit.io import canonical_json, sha256_bytes

DEFAULT_STAGES = ("generate", "insert", "verify", "evaluate")
#: Top-level keys of a sweep file that are not stage sections.
_TOP_LEVEL = ("name", "description", "model", "stages", "grid")


def _stages():
    from omlkit.sweep.stages import STAGES

    return STAGES


class SweepConfig(OmlConfig):
    """A sweep: the stages to run, each stage's base section, and the grid axes over their fields."""

    name: str = Field("sweep", description="Sweep name (default: the file's stem).")
    description: str = Field("", description="What the sweep measures (copied into results.md).")
    model: str | None = Field(
        None, description="Base model of every stage that takes one, unless its section sets it."
    )
    stages: list[str] = Field(default_factory=lambda: list(DEFAULT_STAGES), description="Stages, in order.")
    sections: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Base section per stage: that stage config's fields."
    )
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="Axes: 'stage.field' -> values.")

    @classmethod
    def load(cls, path: str | Path) -> SweepConfig:
        """Read a sweep file; stage sections are the top-level keys named after registered stages.

        Refuses (ConfigError, naming the file): unknown top-level keys (with close matches), a section
        that is not a mapping, and everything :meth:`points` refuses.
        """
        path = Path(path)
        data = read_config_file(path)
        top = {k: data.pop(k) for k in _TOP_LEVEL if k in data}
        top.setdefault("name", path.stem)
        sections: dict[str, dict[str, Any]] = {}
        stages = _stages()
        for key, value in data.items():
            try:
                stages.get(key)
            except ConfigError as exc:
                raise ConfigError(
                    f"{path}: {exc} (top-level keys: {', '.join(_TOP_LEVEL)} or a stage)"
                ) from None
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{path}: {key}: expected a mapping of {key} fields, got {type(value).__name__}"
                )
            sections[key] = value
        if top.get("grid") is None:
            top["grid"] = {}
        from omlkit.config import build_config

        cfg = build_config(cls, {**top, "sections": sections}, source=str(path))
        cfg.points(source=str(path))  # validate every point now, before any work
        return cfg

    def axes(self, source: str = "sweep") -> list[Axis]:
        """The grid axes in order: inline ``{grid: [...]}`` section values, then ``grid:`` entries."""
        axes: list[Axis] = []
        for stage_name, section in self.sections.items():
            for fname, value in section.items():
                if isinstance(value, dict) and set(value) == {"grid"}:
                    axes.append(_field_axis(f"{stage_name}.{fname}", value["grid"], source))
        for name, values in self.grid.items():
            if "." in name:
                axes.append(_field_axis(name, values, source))
            else:
                axes.append(_linked_axis(name, values, source))
        seen: dict[str, str] = {}
        for axis in axes:
            for path in axis.paths:
                if path in seen:
                    raise ConfigError(f"{source}: {path} is swept twice (axes {seen[path]} and {axis.name})")
                seen[path] = axis.name
        for path in seen:
            stage_name = path.split(".", 1)[0]
            if stage_name not in self.stages:
                raise ConfigError(
                    f"{source}: grid axis {path}: stage {stage_name} is not in stages: {self.stages}"
                )
        return axes

    def points(self, source: str = "sweep") -> list[Point]:
        """Every point of the grid (duplicates merged), validated against the stage configs.

        Refuses (ConfigError): unknown or misordered stages, sections of stages not in ``stages``, grid
        paths that name no stage, empty axes, and any point whose resolved section fails validation.
        """
        stages = self._check_stages(source)
        axes = self.axes(source)
        base = {
            name: {
                k: v
                for k, v in self.sections.get(name, {}).items()
                if not (isinstance(v, dict) and set(v) == {"grid"})
            }
            for name in self.stages
        }
        points: list[Point] = []
        ids: set[str] = set()
        for combo in itertools.product(*(range(len(a.values)) for a in axes)):
            sections = {name: dict(sec) for name, sec in base.items()}
            labels: dict[str, Any] = {}
            for axis, i in zip(axes, combo, strict=True):
                labels[axis.name] = axis.labels[i]
                for path, value in axis.values[i].items():
                    stage_name, fname = path.split(".", 1)
                    sections[stage_name][fname] = value
            for name, sec in sections.items():
                if self.model is not None:
                    for fname in stages[name].model_fields:
                        sec.setdefault(fname, self.model)
            resolved = {
                name: stages[name].id_fields(sec, f"{source}: {name}" + _where(labels))
                for name, sec in sections.items()
            }
            pid = sha256_bytes(canonical_json({"stages": self.stages, "configs": resolved}).encode())[:12]
            if pid not in ids:
                ids.add(pid)
                points.append(Point(pid, labels, sections, resolved))
        return points

    def _check_stages(self, source: str) -> dict[str, Any]:
        registry = _stages()
        found = {name: registry.get(name) for name in self.stages}
        if not self.stages:
            raise ConfigError(f"{source}: stages: give at least one stage")
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"{source}: stages: a stage is listed twice ({self.stages})")
        for i, name in enumerate(self.stages):
            for need in found[name].needs:
                if need not in self.stages[:i]:
                    raise ConfigError(f"{source}: stages: {name} needs {need} before it (got {self.stages})")
        for name in self.sections:
            if name not in self.stages:
                raise ConfigError(
                    f"{source}: section {name} is given but {name} is not in stages: {self.stages}"
                )
        return found


@dataclass(frozen=True)
class Axis:
    """One grid dimension: ``values[i]`` maps 'stage.field' paths to values; ``labels[i]`` names it."""

    name: str
    values: list[dict[str, Any]]
    labels: list[Any]

    @property
    def paths(self) -> list[str]:
        """Every 'stage.field' this axis sets."""
        return sorted({p for v in self.values for p in v})


@dataclass(frozen=True)
class Point:
    """One grid point: its id, its axis labels, the sections given to each stage, and the resolved configs."""

    id: str
    labels: dict[str, Any]
    sections: dict[str, dict[str, Any]]
    resolved: dict[str, dict[str, Any]] = field(repr=False)

    @property
    def label(self) -> str:
        """``axis=value`` pairs, for progress lines and tables."""
        return " ".join(f"{k}={v}" for k, v in self.labels.items()) or "(single point)"


def _where(labels: dict[str, Any]) -> str:
    return f" (point {' '.join(f'{k}={v}' for k, v in labels.items())})" if labels else ""


def _check_path(path: str, source: str) -> None:
    stage_name, _, fname = path.partition(".")
    registry = _stages()
    try:
        stage = registry.get(stage_name)
    except ConfigError as exc:
        raise ConfigError(f"{source}: grid axis {path}: {exc}") from None
    if fname not in stage.config_cls.model_fields:
        import difflib

        close = difflib.get_close_matches(fname, list(stage.config_cls.model_fields), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"{source}: grid axis {path}: {stage_name} has no field {fname!r}{hint}")
    if fname in stage.runner_fields:
        raise ConfigError(f"{source}: grid axis {path}: {fname} is set by the sweep itself")


def _field_axis(path: str, values: Any, source: str) -> Axis:
    _check_path(path, source)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{source}: grid axis {path}: expected a non-empty list of values")
    return Axis(path, [{path: v} for v in values], list(values))


def _linked_axis(name: str, values: Any, source: str) -> Axis:
    """An axis whose every value is a mapping of several 'stage.field' paths (plus an optional label)."""
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{source}: grid axis {name}: expected a non-empty list of values")
    out, labels = [], []
    for v in values:
        if not isinstance(v, dict) or not v:
            raise ConfigError(
                f"{source}: grid axis {name}: a name without a dot is a linked axis, whose values are "
                f"mappings of 'stage.field' to value (got {v!r}); write stage.field for a single field"
            )
        v = dict(v)
        label = v.pop("label", None)
        for path in v:
            _check_path(str(path), source)
        out.append(v)
        labels.append(label if label is not None else "/".join(str(x) for x in v.values()))
    if len(set(map(str, labels))) != len(labels):
        raise ConfigError(f"{source}: grid axis {name}: two values have the same label {labels}")
    return Axis(name, out, labels)
