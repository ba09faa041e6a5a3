"""What every command prints: its result as JSON on stdout, and any failure as one line on stderr.

A typed ``FacegateError`` is the operator's mistake or the system's state (a missing photo, no
champion): one line ``error [code]: message`` and exit code 2. Anything else is a bug: one
``error [internal_error]`` line and exit code 1. ``facegate --debug`` adds the traceback to either."""

from __future__ import annotations

import functools
import json
import traceback
from pathlib import Path

import click
import typer

from facegate.components.core.errors import FacegateError

DEBUG = {"tracebacks": False}  # set by the root app's --debug before any command runs


def friendly(fn):
    """Render FacegateError as one line, ``error [code]: message``, on stderr with exit code 2; any
    other exception as one ``error [internal_error]`` line with exit code 1. ``--debug``: tracebacks too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (
            typer.Exit,
            typer.Abort,
            click.exceptions.Exit,
            click.exceptions.Abort,
            click.exceptions.ClickException,
        ):
            raise
        except FacegateError as exc:
            if DEBUG["tracebacks"]:
                traceback.print_exc()
            typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if DEBUG["tracebacks"]:
                traceback.print_exc()
            text = " ".join(str(exc).split())
            typer.echo(f"error [internal_error]: {type(exc).__name__}: {text} (--debug shows the traceback)", err=True)
            raise typer.Exit(1) from None

    return wrapper


def print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def emit(result: dict, json_out: Path | None) -> None:
    """A benchmark's JSON on stdout, and in ``json_out`` too when given."""
    text = json.dumps(result, indent=2, default=str)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    typer.echo(text)
