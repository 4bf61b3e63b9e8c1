"""What a sweep stage is: a step of one grid point (generate, insert, verify, ...) behind one interface.

A stage wraps one library config class (``GenerateConfig``, ``InsertConfig``, ...): the sweep file's
section of the same name holds that class's fields, except the ``runner_fields`` (paths, force flags)
that the sweep fills in itself. Stages register by decorator in the ``sweep-stage`` family; each file of
this package holds one. The module imports no torch: stages import the library inside :meth:`run`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from omlkit.config import OmlConfig, build_config
from omlkit.errors import ConfigError
from omlkit.registry import family


@dataclass
class StageContext:
    """One grid point while it runs: where things go, its resolved sections, and what earlier stages made.

    ``artifacts`` holds the paths later stages read: ``fingerprints`` (the set file) after generate,
    ``run_dir`` (the insertion run directory) after insert.
    """

    out: Path
    point_id: str
    sections: dict[str, dict[str, Any]]
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def point_dir(self) -> Path:
        """``<out>/points/<point-id>``: the folder of this point's own outputs and ``point.json``."""
        return self.out / "points" / self.point_id

    def need(self, artifact: str, stage: str) -> Path:
        """The artifact an earlier stage produced; ConfigError when the stage list lacks its producer."""
        if artifact not in self.artifacts:
            raise ConfigError(f"stage {stage} needs the {artifact} of an earlier stage; add it to stages:")
        return self.artifacts[artifact]


class Stage(ABC):
    """One step of a grid point. Subclasses set the class attributes and implement the three methods.

    ``shared`` stages write content-addressed artifacts that several points reuse (a fingerprint file,
    a run directory) and are complete when the artifact is; the others write into the point's folder
    and are complete when ``point.json`` records them done and :meth:`output` exists.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[OmlConfig]]
    #: Fields the sweep sets itself; a section that sets one is refused.
    runner_fields: ClassVar[frozenset[str]] = frozenset()
    #: Fields that say where/how to run, not what to compute: left out of the point id.
    not_in_id: ClassVar[frozenset[str]] = frozenset({"device"})
    #: Section fields the sweep's top-level ``model:`` fills when the section leaves them unset.
    model_fields: ClassVar[tuple[str, ...]] = ()
    #: Stages that must come earlier in ``stages:``.
    needs: ClassVar[tuple[str, ...]] = ()
    shared: ClassVar[bool] = False

    @classmethod
    def placeholders(cls) -> dict[str, Any]:
        """Stand-in values of required runner fields, so a section can be validated before any path exists."""
        return {}

    @classmethod
    def validate(cls, section: dict[str, Any], source: str) -> OmlConfig:
        """The section as a config (runner fields stood in); ConfigError naming ``source`` and the field."""
        bad = sorted(set(section) & cls.runner_fields)
        if bad:
            raise ConfigError(f"{source}: {bad[0]} is set by the sweep itself; remove it from the section")
        return build_config(cls.config_cls, {**cls.placeholders(), **section}, source=source)

    @classmethod
    def id_fields(cls, section: dict[str, Any], source: str) -> dict[str, Any]:
        """Every field that defines what this stage computes (defaults filled in): what point ids hash."""
        cfg = cls.validate(section, source)
        return cfg.id_fields(exclude=set(cls.runner_fields | cls.not_in_id))

    def config(self, ctx: StageContext, **runner: Any) -> Any:
        """The section of ``ctx`` validated with the real runner values."""
        return build_config(
            self.config_cls, {**ctx.sections.get(self.name, {}), **runner}, source=f"sweep: {self.name}"
        )

    @abstractmethod
    def output(self, ctx: StageContext) -> Path:
        """The file or folder whose presence marks the stage's output; also records ``ctx.artifacts``."""

    @abstractmethod
    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Run the stage for this point; returns its JSON-ready result (no fingerprint keys or answers)."""

    def is_complete(self, ctx: StageContext) -> bool:
        """True when :meth:`output` exists (shared stages refine this to check the artifact is whole)."""
        return self.output(ctx).exists()

    def summarize(self, ctx: StageContext) -> dict[str, Any]:
        """Result of a complete shared artifact made by another point (shared stages implement it)."""
        raise NotImplementedError

    def headline(self, result: dict[str, Any]) -> dict[str, Any]:
        """A few flat numbers of ``result`` for the results table (none by default)."""
        return {}


STAGES = family("sweep-stage", Stage)


def stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: register ``cls`` in the ``sweep-stage`` family under its ``name``."""
    return STAGES.register(cls.name)(cls)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
