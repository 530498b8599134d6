"""How the command line describes itself: help without type noise, and click's usage errors as one line.

Typer (0.29) prints a type for every parameter in its rich help: ``--wav <bool>`` for a flag that takes
no value, ``<list[str]>`` beside ``VIDEO``. :func:`tidy_help` drops those; :func:`usage_message` turns
click's option errors ("Value error, 'bogus' is not one of ...") into the house style, naming the option,
the value given and what it may be. Neither imports anything heavy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_CHOICE = re.compile(r"^(?:Value error, )?'?(?P<value>.*?)'? is not one of (?P<choices>.*?)\.?$")
_PHRASES = (("Value error, ", ""), ("Input should be ", "must be "), ("greater than or equal to ", ">= "),
            ("less than or equal to ", "<= "), ("greater than ", "> "), ("less than ", "< "))  # fmt: skip


def _no_type(ctx: Any = None) -> None:
    return None


def tidy_help(command: Any) -> None:
    """Show no type for flags and for arguments that have a metavar (``VIDEO...``: the dots once), in
    ``command`` and its subcommands."""
    get_params = command.get_params

    def params(ctx: Any) -> list[Any]:
        found = get_params(ctx)
        for p in found:  # the help option is made on the first call, hence here and not once
            if getattr(p, "is_flag", False) or (p.param_type_name == "argument" and p.metavar):
                p.display_type_rich = _no_type
            if p.param_type_name == "argument" and (p.metavar or "").endswith("..."):  # not `[VIDEO...]...`
                p.get_usage_pieces = lambda ctx, p=p: [p.metavar if p.required else f"[{p.metavar}]"]
        return found

    command.get_params = params
    for sub in (getattr(command, "commands", None) or {}).values():
        tidy_help(sub)


def is_click_error(e: BaseException) -> bool:
    """click's ClickException (Typer may vendor its own copy of click, so match by shape)."""
    return hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)


def _given(opts: Sequence[str], argv: Sequence[str]) -> str | None:
    """The last value given to an option in ``argv`` (``--mix add`` or ``--mix=add``)."""
    value = None
    for i, tok in enumerate(argv):
        if tok == "--":
            break
        if tok in opts and i + 1 < len(argv):
            value = argv[i + 1]
        elif tok.startswith("--") and tok.partition("=")[0] in opts and "=" in tok:
            value = tok.partition("=")[2]
    return value


def usage_message(e: Any, argv: Sequence[str]) -> str:
    """One line for a click usage error, with where to read more: ``--mix 'bogus' is not one of replace, add, keep``."""
    ctx = getattr(e, "ctx", None)
    where = f" (see `{ctx.command_path if ctx is not None else 'vssflow'} --help`)" if e.exit_code == 2 else ""
    param, reason = getattr(e, "param", None), getattr(e, "message", "")
    opts = [o for o in (getattr(param, "opts", None) or ()) if o.startswith("-")]
    if not opts or not reason or type(e).__name__ != "BadParameter":
        return f"{e.format_message()}{where}"
    name = max(opts, key=len)
    value = _given([*opts, *getattr(param, "secondary_opts", ())], argv)
    shown = f"{name} {value!r}" if value is not None else name
    choice = _CHOICE.match(reason)
    if choice:
        allowed = re.findall(r"'([^']*)'", choice["choices"]) or [choice["choices"]]
        return f"{shown} is not one of {', '.join(allowed)}{where}"
    reason = re.sub(r", unable to parse .*$", "", reason)
    for old, new in _PHRASES:
        reason = reason.replace(old, new)
    return f"{shown}: {reason}{where}"
