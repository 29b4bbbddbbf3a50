"""One table of settings per service: each setting's variable, flag, parser, default and help.

A service's config stays a frozen dataclass; its `SettingsTable` says, for each
field, which environment variable and which ``--flag`` set it, how its text is
parsed and checked, and one line of help. From that one table come both
``Config.from_env(env)`` and the command line, so a flag is read by the same
parser as its variable and a bad value names both, with what is allowed::

    --window / STREAMSCORE_SCORER_WINDOW = '0': expected an integer, at least 1

A parser takes the text and returns the value, or raises ``ValueError("expected
...")`` (the table adds the flag, the variable and the text).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from core.errors import ConfigError

C = TypeVar("C")

#: A setting's parser: text in, value out; ``ValueError("expected ...")`` when unusable.
Parser = Callable[[str], Any]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


# --- parsers ------------------------------------------------------------------------


def text(*, nonempty: bool = False, without: str = "") -> Parser:
    """Any text (non-empty if asked, without the characters of ``without``)."""

    def parse(value: str) -> str:
        if nonempty and not value:
            raise ValueError("expected a non-empty text")
        bad = [c for c in without if c in value]
        if bad:
            raise ValueError(f"expected a text without {' or '.join(map(repr, bad))}")
        return value

    return parse


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Parser:
    """A whole number, within ``minimum``..``maximum`` when given."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected an integer{_bounds(minimum, maximum)}") from None
        _check_bounds(number, minimum, maximum, "an integer")
        return number

    return parse


def number(*, minimum: float | None = None, maximum: float | None = None) -> Parser:
    """A finite number, within ``minimum``..``maximum`` when given."""

    def parse(value: str) -> float:
        try:
            result = float(value)
        except ValueError:
            raise ValueError(f"expected a number{_bounds(minimum, maximum)}") from None
        if not math.isfinite(result):
            raise ValueError(f"expected a finite number{_bounds(minimum, maximum)}")
        _check_bounds(result, minimum, maximum, "a number")
        return result

    return parse


def boolean() -> Parser:
    """true or false (also 1/yes/on and 0/no/off, any case)."""

    def parse(value: str) -> bool:
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError("expected true or false")

    return parse


def choice(*choices: str) -> Parser:
    """One of ``choices``."""

    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f", at least {minimum}"
    if maximum is not None:
        return f", at most {maximum}"
    return ""


def _check_bounds(value: float, low: float | None, high: float | None, what: str) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"expected {what}{_bounds(low, high)}")


# --- the table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting: the config field it fills, its variable, parser and one line of help.

    ``flag`` defaults to the variable without the table's prefix (``--window`` for
    ``STREAMSCORE_SCORER_WINDOW``); ``aliases`` are other flags for it (``-n``).
    ``shown`` replaces the default in help where its value would mislead.
    ``verbatim`` keeps the text as given: not stripped, and empty is a value.
    ``format`` writes a value as the text ``parse`` reads back (default: ``str``;
    true/false; a tuple comma-separated).
    """

    field: str
    variable: str
    parse: Parser
    help: str
    metavar: str = ""
    flag: str = ""
    aliases: tuple[str, ...] = ()
    shown: str = ""
    verbatim: bool = False
    format: Callable[[Any], str] | None = None

    def text_of(self, value: object) -> str:
        """``value`` as the text this setting's parser reads back."""
        return self.format(value) if self.format is not None else _text_of(value)


class SettingsTable(Generic[C]):
    """The settings of one frozen dataclass ``config``: its environment and its flags."""

    def __init__(
        self,
        config: type[C],
        prefix: str,
        settings: Iterable[Setting],
        *,
        in_code: tuple[str, ...] = (),
    ) -> None:
        """``in_code`` names the fields that are no setting (set by code and tests only)."""
        self.config = config
        self.prefix = prefix
        self.in_code = in_code
        fields = {f.name: f for f in dataclasses.fields(config)}  # type: ignore[arg-type]
        self.settings: tuple[Setting, ...] = tuple(
            s if s.flag else dataclasses.replace(s, flag=self._flag_of(s.variable))
            for s in settings
        )
        self.defaults: dict[str, Any] = {}
        for s in self.settings:
            if s.field not in fields:
                raise ConfigError(f"{config.__name__} has no field {s.field!r} (setting {s.flag})")
            self.defaults[s.field] = _default_of(fields[s.field])
        missing = sorted(set(fields) - set(self.defaults) - set(in_code))
        if missing:
            raise ConfigError(f"{config.__name__}: fields without a setting: {missing}")
        for what in ("field", "variable", "flag"):
            names = [getattr(s, what) for s in self.settings]
            names += [a for s in self.settings for a in s.aliases] if what == "flag" else []
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(f"{config.__name__}: {what} used by two settings: {twice}")

    def _flag_of(self, variable: str) -> str:
        base = variable.removeprefix(self.prefix).removeprefix("STREAMSCORE_")
        return "--" + base.lower().replace("_", "-")

    def __iter__(self) -> Iterator[Setting]:
        return iter(self.settings)

    def setting(self, field: str) -> Setting:
        """The setting of ``field``."""
        for s in self.settings:
            if s.field == field:
                return s
        raise KeyError(field)

    def error(self, field: str, value: object, expected: str) -> ConfigError:
        """The error for a value of ``field`` that cannot be used: names flag and variable."""
        s = self.setting(field)
        return ConfigError(f"{s.flag} / {s.variable} = {value!r}: {expected}")

    def read(self, field: str, raw: str) -> Any:
        """The value of ``field`` from its text, checked by its parser."""
        s = self.setting(field)
        try:
            return s.parse(raw if s.verbatim else raw.strip())
        except (ValueError, ConfigError) as exc:
            raise self.error(field, raw, str(exc)) from None

    def check(self, config: C) -> None:
        """Raise ConfigError when a field of ``config`` is one its parser would refuse.

        Called from the config's ``__post_init__``, so a config built in code is
        checked by the same parsers as the environment and the flags.
        """
        for s in self.settings:
            value = getattr(config, s.field)
            if value is not None:
                self.read(s.field, s.text_of(value))

    def values(
        self, env: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Field values from ``env``, then ``overrides`` (field -> text) on top.

        An unset variable keeps the field's default (blank counts as unset, except
        for a verbatim setting).
        """
        overrides = overrides or {}
        values: dict[str, Any] = {}
        for s in self.settings:
            if s.field in overrides:
                values[s.field] = self.read(s.field, overrides[s.field])
                continue
            raw = env.get(s.variable)
            if raw is None or (not s.verbatim and not raw.strip()):
                continue
            values[s.field] = self.read(s.field, raw)
        return values

    def load(
        self, env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
    ) -> C:
        """The config from ``env`` (default: the process environment) and ``overrides``."""
        env = os.environ if env is None else env
        return self.config(**self.values(env, overrides))

    def shown_default(self, s: Setting) -> str:
        """The default of ``s`` as help and the README show it."""
        if s.shown:
            return s.shown
        value = self.defaults[s.field]
        if value is None or value in ("", ()):
            return "(none)"
        return s.text_of(value)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One flag per setting; its help names the variable and the default.

        Flags are kept as text (a boolean as ``--x`` / ``--no-x``) and read by
        `parse_args` with the same parser as the variable.
        """
        for s in self.settings:
            helptext = f"{s.help} [{s.variable}; default: {self.shown_default(s)}]"
            if isinstance(self.defaults[s.field], bool):
                parser.add_argument(
                    s.flag,
                    *s.aliases,
                    dest=s.field,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=helptext.replace("%", "%%"),
                )
                continue
            parser.add_argument(
                s.flag,
                *s.aliases,
                dest=s.field,
                metavar=s.metavar or s.field.upper(),
                default=None,
                help=helptext.replace("%", "%%"),
            )

    def parser(self, prog: str, doc: str | None, epilog: str = "") -> argparse.ArgumentParser:
        """A command line with every setting as a flag; the description is ``doc``."""
        parser = argparse.ArgumentParser(
            prog=prog,
            description=plain(doc),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=(
                "Every flag can also be set by the environment variable shown in brackets; "
                "a flag wins. " + epilog
            ).strip(),
        )
        self.add_arguments(parser)
        return parser

    def overrides(self, args: argparse.Namespace) -> dict[str, str]:
        """The flags given on the command line, as field -> text."""
        given: dict[str, str] = {}
        for s in self.settings:
            value = getattr(args, s.field, None)
            if value is not None:
                given[s.field] = _text_of(value)
        return given

    def parse_args(
        self,
        parser: argparse.ArgumentParser,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> C:
        """The config: ``env`` (default: the process environment), then the flags of ``argv``."""
        return self.load(env, self.overrides(parser.parse_args(list(argv))))

    def dumps(self, config: C) -> str:
        """The settings of ``config`` as one JSON object (field -> text), for `loads`."""
        out: dict[str, str] = {}
        for s in self.settings:
            value = getattr(config, s.field)
            if value is not None:
                out[s.field] = s.text_of(value)
        return json.dumps(out, sort_keys=True)

    def loads(
        self,
        data: str,
        *,
        source: str = "the serialized settings",
        overrides: Mapping[str, str] | None = None,
    ) -> C:
        """The config `dumps` wrote (``overrides`` on top); each value checked by its parser."""
        try:
            given = json.loads(data)
        except ValueError as exc:
            raise ConfigError(
                f"{source}: not JSON ({exc}); unset it to read each variable"
            ) from exc
        known = {s.field for s in self.settings}
        if not isinstance(given, dict) or not all(
            k in known and isinstance(v, str) for k, v in given.items()
        ):
            raise ConfigError(f"{source}: expected a JSON object of settings and texts")
        return self.load({}, {**given, **(overrides or {})})

    def load_handed_over(
        self,
        variable: str,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> C:
        """The config a launcher handed over in ``variable`` (`dumps`), else as `load` reads it.

        A service served by gunicorn resolves its settings once, in its entry point,
        and passes them whole to gunicorn and its workers in ``variable``.
        """
        env = os.environ if env is None else env
        handed = env.get(variable, "").strip()
        if handed:
            return self.loads(handed, source=variable, overrides=overrides)
        return self.load(env, overrides)


def _text_of(value: object) -> str:
    """A value as the text its parser reads back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise ConfigError(f"setting {field.name!r} has no default")


def plain(doc: str | None) -> str:
    """A module docstring as plain text for ``--help``: no RST double backticks."""
    return (doc or "").replace("``", "").strip()
