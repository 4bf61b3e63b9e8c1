"""Configuration as data: pydantic models that load from YAML/TOML, hash canonically, and *are* the CLI.

Every command has one config class (a subclass of :class:`OmlConfig`). :func:`config_command` turns
it into a Typer command: each field becomes a ``--field-name`` option with the field's description as
help, ``--config FILE`` supplies defaults, and flags given on the command line override the file.
"""

from __future__ import annotations

import inspect
import json
import tomllib
import types
import typing
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Literal, TypeVar

import typer
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from omlkit.errors import ConfigError
from omlkit.io import canonical_json, sha256_bytes

C = TypeVar("C", bound="OmlConfig")

#: ``json_schema_extra`` of a field added after run ids were published: left out of a run id (and of a
#: sweep point id) while it holds its default, so adding a field does not rename every existing run.
OMIT_DEFAULT_FROM_ID = {"omit_default_from_id": True}


def id_data(model: BaseModel, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """``model`` as JSON data with defaults included, except fields marked :data:`OMIT_DEFAULT_FROM_ID`
    while they hold their default (in nested models and lists of models too), and ``exclude``."""
    data = model.model_dump(mode="json", exclude=set(exclude))
    for name, field in type(model).model_fields.items():
        if name not in data:
            continue
        value, extra = getattr(model, name), field.json_schema_extra
        if isinstance(extra, dict) and extra.get("omit_default_from_id") and value == field.default:
            del data[name]
        elif isinstance(value, BaseModel):
            data[name] = id_data(value)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            data[name] = [id_data(v) for v in value]
    return data


class OmlConfig(BaseModel):
    """Base of every config: unknown fields are refused, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def id_fields(self, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        """Every field but ``exclude`` as JSON data, defaults included — what ids hash (:func:`id_data`)."""
        return id_data(self, exclude)

    def canonical(self) -> str:
        """Deterministic JSON of :meth:`id_fields` — what a run id hashes."""
        return canonical_json(self.id_fields())

    def config_hash(self, *extra: str, length: int = 12) -> str:
        """Short sha256 of the canonical config plus any ``extra`` strings (e.g. a fingerprint file hash)."""
        return sha256_bytes("\n".join([self.canonical(), *extra]).encode())[:length]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a config file by extension (.yaml/.yml/.json/.toml) into a dict; ConfigError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of field names to values, got {type(data).__name__}")
    return data


def build_config(
    cls: type[C], data: dict[str, Any], source: str = "options", flags: Collection[str] | None = None
) -> C:
    """Validate ``data`` into ``cls``; the first error becomes a one-line ConfigError naming where the
    bad value came from: ``options: --field`` for a command-line flag, ``SOURCE: field`` otherwise.

    ``flags`` are the fields set on the command line when the rest came from ``source``, a config file
    (with ``source="options"`` every field counts as a flag).
    """
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        from_flag = source == "options" or (flags is not None and bool(err["loc"]) and err["loc"][0] in flags)
        where = f"options: --{loc.replace('_', '-')}" if from_flag else f"{source}: {loc}"
        got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
        raise ConfigError(f"{where}: {err['msg']}{got}") from None


def _cli_type(annotation: Any) -> tuple[Any, bool]:
    """Map a field annotation to (type Typer understands, is_supported)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _cli_type(args[0])
        return str, True
    if origin is Literal:
        return type(typing.get_args(annotation)[0]), True
    if origin in (list, tuple):
        inner = typing.get_args(annotation)[0] if typing.get_args(annotation) else str
        if typing.get_origin(inner) is typing.Annotated:  # list[Annotated[int, Field(ge=0)]]
            inner = typing.get_args(inner)[0]
        if inner in (str, int, float):
            return list[inner], True
        return None, False
    if annotation in (str, int, float, bool, Path):
        return annotation, True
    return None, False


def config_command(
    app: typer.Typer,
    name: str,
    config_cls: type[C],
    run: Callable[[C], Any],
    help: str | None = None,
    arguments: tuple[str, ...] = (),
    aliases: dict[str, str] | None = None,
) -> None:
    """Register command ``name`` on ``app`` whose options are ``config_cls``'s fields and which calls ``run``.

    Fields named in ``arguments`` become positional arguments; ``aliases`` gives a field's flag a short
    form as well (``{"n": "-n"}``). Fields whose type has no flag form (nested models, dicts) can only be
    set through ``--config``.
    """
    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(
                None, "--config", help="YAML/TOML/JSON file of defaults; flags override it."
            ),
            annotation=Path | None,
        )
    ]
    cli_fields: list[str] = []
    for field_name, field in config_cls.model_fields.items():
        typ, ok = _cli_type(field.annotation)
        if not ok:
            continue
        cli_fields.append(field_name)
        flag = "--" + field_name.replace("_", "-")
        short = (aliases or {}).get(field_name)
        decls = (flag, short) if short else (flag,)
        default_txt = None if field.is_required() else field.default
        help_txt = field.description or ""
        if field_name in arguments:
            default = typer.Argument(None, help=help_txt, show_default=False)
        elif typ is bool:
            bool_decls = (f"{flag}/--no-{flag[2:]}", short) if short else (f"{flag}/--no-{flag[2:]}",)
            default = typer.Option(None, *bool_decls, help=help_txt, show_default=default_txt)
        else:
            default = typer.Option(None, *decls, help=help_txt, show_default=default_txt)
        params.append(
            inspect.Parameter(
                field_name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=typ | None
            )
        )

    def command(**kwargs: Any) -> Any:
        cfg_path = kwargs.pop("config")
        flags = {k: v for k, v in kwargs.items() if v is not None and not (isinstance(v, list) and not v)}
        data = {**(read_config_file(cfg_path) if cfg_path else {}), **flags}
        return run(build_config(config_cls, data, source=str(cfg_path or "options"), flags=flags))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help or (config_cls.__doc__ or "").strip()
    app.command(name, help=command.__doc__)(command)
