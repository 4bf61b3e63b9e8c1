"""Options beside their implementation: each strategy, regularizer, backend and attack declares its own
options as an :class:`Options` class in its own file, and a command's flat config is derived from them.

As peft's ``LoraConfig`` sits beside the LoRA model, an implementation names its options class
(``options_cls = TrainingOptions``) and reads ``self.options.steps``, never a central config. A command
whose config covers a whole family (``oml attack KIND``) gets its flags from :func:`with_options`: the
command's own fields plus every registered implementation's option fields, each flag spelled
``<flag_prefix><field>`` unless the class renames it. Two implementations may share a flag only when
they declare it alike (the same type and default: usually one field inherited from a shared base).
Setting a flag the chosen implementation does not read is an error that names the flags it does read.

Light module (pydantic only).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import annotated_types
from pydantic import BaseModel, ConfigDict, create_model
from pydantic.fields import FieldInfo

from omlkit.errors import ConfigError

OptionsT = TypeVar("OptionsT", bound="Options")


class Options(BaseModel):
    """Base of every implementation's options: unknown fields refused, immutable once built."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    #: Prefix of every field's flag in a family config (``"kl_"`` makes ``strength`` the ``--kl-strength``).
    flag_prefix: ClassVar[str] = ""
    #: Flags spelled otherwise than ``<prefix><field>`` (names published before the options moved here).
    flag_names: ClassVar[dict[str, str]] = {}
    #: A flag's default when it differs from the field's: the value that switches the implementation off,
    #: which the flag accepts besides the field's own range.
    flag_defaults: ClassVar[dict[str, Any]] = {}
    #: Fields without a flag (set in a config file only).
    no_flag: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def flag(cls, field: str) -> str:
        """The family-config field (and, dashed, the CLI flag) that sets ``field``."""
        return cls.flag_names.get(field, cls.flag_prefix + field)

    @classmethod
    def flags(cls) -> dict[str, str]:
        """``{flag: field}`` for every field."""
        return {cls.flag(name): name for name in cls.model_fields if name not in cls.no_flag}

    @classmethod
    def from_flags(cls: type[OptionsT], values: Mapping[str, Any]) -> OptionsT:
        """Build from a family config's flat values (``flag -> value``); absent flags keep the defaults."""
        return cls(**{field: values[flag] for flag, field in cls.flags().items() if flag in values})


class NoOptions(Options):
    """The options of an implementation that has none."""


def options_of(impl: Any) -> type[Options]:
    """The options class an implementation declares (``options_cls``), else :class:`NoOptions`."""
    return getattr(impl, "options_cls", None) or NoOptions


def option_fields(impls: Iterable[tuple[str, Any]]) -> dict[str, tuple[Any, FieldInfo, tuple[str, ...]]]:
    """``{flag: (annotation, field info, owners)}`` over the implementations' options.

    A flag declared by several implementations must have one annotation and one default; otherwise the
    family's options contradict each other and a ``TypeError`` names both owners.
    """
    out: dict[str, tuple[Any, FieldInfo, tuple[str, ...]]] = {}
    for name, impl in impls:
        opts = options_of(impl)
        for flag, field in opts.flags().items():
            info = copy.copy(opts.model_fields[field])
            if field in opts.flag_defaults:
                info.default = off = opts.flag_defaults[field]
                lower = [m for m in info.metadata if isinstance(m, annotated_types.Gt | annotated_types.Ge)]
                if lower and isinstance(off, int | float):  # the flag also accepts its off value
                    info.metadata = [m for m in info.metadata if m not in lower] + [annotated_types.Ge(off)]
            if flag in out:
                ann, seen, owners = out[flag]
                if ann != info.annotation or seen.default != info.default:
                    raise TypeError(f"option {flag!r} of {name!r} differs from that of {owners[0]!r}")
                out[flag] = (ann, seen, (*owners, name))
            else:
                out[flag] = (info.annotation, info, (name,))
    return out


class FamilyConfig(BaseModel):
    """Mixin of a config derived by :func:`with_options`: picks one implementation's options from it."""

    #: ``{flag: names of the implementations reading it}``, set by :func:`with_options`.
    option_owners: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: What an implementation is called in messages ("attack", "backend", ...).
    family_label: ClassVar[str] = "implementation"

    def check_options(self, chosen: Mapping[str, Any]) -> None:
        """Refuse a flag set here that none of the ``chosen`` implementations (``{name: impl}``) reads."""
        read = list(dict.fromkeys(f for impl in chosen.values() for f in options_of(impl).flags()))
        foreign = [f for f in self.option_owners if f in self.model_fields_set and f not in read]
        if foreign:
            reads = ", ".join("--" + f.replace("_", "-") for f in read) or "none"
            label = self.family_label if len(chosen) == 1 else _plural(self.family_label)
            names = " and ".join(repr(n) for n in chosen)
            raise ConfigError(
                f"--{foreign[0].replace('_', '-')} does not apply to {label} {names} "
                f"(its options: {reads})"
            )

    def options_for(self, name: str, impl: Any) -> Options:
        """``impl``'s options from this config; refuses a flag set here that ``impl`` does not read."""
        self.check_options({name: impl})
        return options_of(impl).from_flags(dict(self))


def _plural(word: str) -> str:
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


C = TypeVar("C", bound=BaseModel)


def with_options(base: type[C], impls: Iterable[tuple[str, Any]], name: str, label: str) -> type[C]:
    """A subclass of ``base`` (named ``name``) with one field per option flag of ``impls``, each with its
    declared type, default, constraints and description; fields ``base`` already has are kept as they are."""
    declared = option_fields(impls)
    fields = {flag: (ann, info) for flag, (ann, info, _) in declared.items() if flag not in base.model_fields}
    owners = {flag: o for flag, (_, _, o) in declared.items()}
    derived = create_model(name, __base__=(base, FamilyConfig), __module__=base.__module__, **fields)
    derived.__doc__ = base.__doc__
    derived.option_owners = owners
    derived.family_label = label
    return derived
