"""`facegate accounts ...` and `facegate access-log ...`: operator accounts and the access log from a shell.

An account's secret is printed once, at creation, and stored only as a scrypt hash; it is the console
password and, as ``NAME.SECRET``, the account's ``X-API-Key``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from facegate.cli.output import friendly

accounts_app = typer.Typer(no_args_is_help=True, help="Console accounts and scoped API keys: add, list, remove.")
access_log_app = typer.Typer(no_args_is_help=True, help="The access log: recent decisions and gallery changes, purge.")


def _log():
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s
    from facegate.components.service.access_log import AccessLog  # heavy: SQLAlchemy, ~0.2 s

    return AccessLog.from_settings(load_settings())


def _accounts():
    from facegate.components.web.accounts import Accounts  # heavy: SQLAlchemy, ~0.2 s

    return Accounts(_log().engine)


def _actor() -> str:
    from facegate.components.service.deployment import local_actor  # heavy: torch and the models, ~2 s

    return local_actor()


@accounts_app.command("add")
@friendly
def accounts_add(
    name: Annotated[str, typer.Argument(help="account name (letters, digits, _ . -)")],
    role: Annotated[str, typer.Option(help="operator | viewer | turnstile")] = "viewer",
) -> None:
    """Create an account; its secret is printed once (the console password; API key NAME.SECRET)."""
    secret = _accounts().add(name, role)
    _log().audit(_actor(), "account_add", None, account=name, role=role)
    typer.echo(
        json.dumps(
            {
                "name": name,
                "role": role,
                "secret": secret,
                "api_key": f"{name}.{secret}",
                "note": "shown once: store it now",
            },
            indent=2,
        )
    )


@accounts_app.command("list")
@friendly
def accounts_list() -> None:
    """Accounts and their roles (never their secrets)."""
    typer.echo(json.dumps(_accounts().list(), indent=2))


@accounts_app.command("remove")
@friendly
def accounts_remove(name: Annotated[str, typer.Argument(help="account name")]) -> None:
    """Delete an account: its sessions and key stop working at once."""
    _accounts().remove(name)
    _log().audit(_actor(), "account_remove", None, account=name)
    typer.echo(json.dumps({"removed": name}))


@access_log_app.command("show")
@friendly
def access_log_show(
    employee_id: Annotated[str | None, typer.Option("--id", help="one employee")] = None,
    limit: Annotated[int, typer.Option(help="rows")] = 20,
    audit: Annotated[bool, typer.Option("--audit", help="gallery changes, not decisions")] = False,
) -> None:
    """The newest decisions (or gallery changes), as JSON."""
    from facegate.components.service.access_log import DecisionFilter  # heavy: SQLAlchemy, ~0.2 s

    log = _log()
    rows = (
        log.audit_events(employee_id, limit)
        if audit
        else log.decisions(DecisionFilter(employee_id=employee_id, limit=limit))
    )
    typer.echo(json.dumps(rows, indent=2, default=str))


@access_log_app.command("purge")
@friendly
def access_log_purge() -> None:
    """Delete decision rows older than access_log.retention_days now (the service also does it hourly)."""
    log = _log()
    typer.echo(json.dumps({"purged": log.purge(), "retention_days": log.retention.days}))
