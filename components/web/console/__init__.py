"""The operator console: server-side pages (Jinja2) and a little JavaScript, no build step.

Included by ``facegate.components.web.api.app.create_app``: the login page answers at ``/``, the pages
under ``/console/``.
Pages only render; every action (check photos, enrol, remove, identify) is a call from the page's
script to the REST API with the session cookie, so the page and the API enforce the same roles and
limits (a viewer's enrolment is 403 in both). Sessions are signed cookies (``facegate.components.web.accounts``),
HttpOnly and SameSite=Strict; logins are rate-limited per account name and per client address.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from facegate.components.core.errors import BadRequest, LoginRateLimited
from facegate.components.service.access_log import OUTCOMES, DecisionFilter
from facegate.components.web.accounts import Principal, Sessions
from facegate.components.web.api.dependencies import ApiState, api_state
from facegate.components.web.api.inputs import LimitedFormRoute, parse_time
from facegate.components.web.request_guard import PRINCIPAL_SCOPE_KEY

CONSOLE_DIR = Path(__file__).resolve().parent
PAGES = [
    ("employees", "Employees", "read"),
    ("enrol", "Enrol", "enrol"),
    ("identify", "Identify", "decide"),
    ("log", "Access log", "read"),
    ("review", "Review", "review"),
    ("status", "Status", "read"),
]
TEMPLATES = Jinja2Templates(directory=str(CONSOLE_DIR / "templates"))

router = APIRouter(route_class=LimitedFormRoute, include_in_schema=False)


def who(request: Request) -> Principal | None:
    return request.scope.get(PRINCIPAL_SCOPE_KEY)


def render(request: Request, state: ApiState, template: str, status: int = 200, **ctx) -> HTMLResponse:
    p = who(request)
    nav = [(slug, title) for slug, title, perm in PAGES if p is not None and p.can(perm)]
    return TEMPLATES.TemplateResponse(
        request, template, {"me": p, "nav": nav, "limits": state.settings.api, **ctx}, status_code=status
    )


def page(request: Request, state: ApiState, permission: str, template: str, **ctx) -> Response:
    """A page for whoever may ``permission``: the login for a visitor, a 403 page for another role."""
    p = who(request)
    if p is None:
        return RedirectResponse("/?" + urlencode({"next": request.url.path}), status_code=303)
    if not p.can(permission):
        return render(request, state, "forbidden.html", 403, permission=permission)
    return render(request, state, template, **ctx)


def may(request: Request, permission: str) -> bool:
    p = who(request)
    return p is not None and p.can(permission)


@router.get("/", response_class=HTMLResponse)
def login_page(request: Request, state: ApiState = Depends(api_state)):
    if who(request) is not None and request.query_params.get("next") is None:
        return RedirectResponse("/console/employees", status_code=303)
    return render(request, state, "login.html", next=request.query_params.get("next", ""))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    name: str = Form(..., max_length=64),
    secret: str = Form(..., max_length=512),
    next: str = Form("", max_length=200),
    state: ApiState = Depends(api_state),
):  # noqa: A002 - the form's name
    client = request.client.host if request.client else "unknown"
    keys = (f"account {name!r}", f"address {client}")
    try:
        state.login_limiter.check(*keys)
    except LoginRateLimited as exc:
        state.metrics.logins.labels("rate_limited").inc()
        return render(request, state, "login.html", 429, error=exc.message, next=next, name=name)
    p = state.accounts.login(name, secret)
    if p is None:
        state.login_limiter.failed(*keys)
        state.metrics.logins.labels("failed").inc()
        return render(request, state, "login.html", 401, error="wrong account name or secret", next=next, name=name)
    state.login_limiter.succeeded(keys[0])
    state.metrics.logins.labels("ok").inc()
    target = next if next.startswith("/console/") else "/console/employees"
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(
        Sessions.COOKIE,
        state.sessions.issue(p),
        max_age=int(state.settings.console.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return resp


@router.post("/logout")
def logout():
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(Sessions.COOKIE, path="/")
    return resp


@router.get("/console/employees", response_class=HTMLResponse)
def employees_page(request: Request, q: str = Query("", max_length=100), state: ApiState = Depends(api_state)):
    rows = state.gate.employees() if may(request, "read") else []
    if q:
        rows = [e for e in rows if q.lower() in e["employee_id"].lower() or q.lower() in e["name"].lower()]
    return page(request, state, "read", "employees.html", employees=rows, q=q)


@router.get("/console/enrol", response_class=HTMLResponse)
def enrol_page(request: Request, state: ApiState = Depends(api_state)):
    return page(request, state, "enrol", "enrol.html")


@router.get("/console/identify", response_class=HTMLResponse)
def identify_page(request: Request, state: ApiState = Depends(api_state)):
    return page(request, state, "decide", "identify.html")


@router.get("/console/log", response_class=HTMLResponse)
def log_page(
    request: Request,
    employee_id: str = Query("", max_length=64),
    outcome: str = Query("", max_length=16),
    entrance: str = Query("", max_length=64),
    kind: str = Query("", max_length=16),
    since: str = Query("", max_length=40),
    until: str = Query("", max_length=40),
    state: ApiState = Depends(api_state),
):
    log = state.gate.access_log
    decisions, audit, error = [], [], None
    if may(request, "read") and log is not None:
        try:
            f = DecisionFilter(
                employee_id or None,
                outcome or None,
                entrance or None,
                kind or None,
                parse_time("since", since),
                parse_time("until", until),
                500,
            )
        except BadRequest as exc:
            error, f = exc.message, DecisionFilter(limit=500)
        decisions, audit = log.decisions(f), log.audit_events(limit=200)
    filters = {
        "employee_id": employee_id,
        "outcome": outcome,
        "entrance": entrance,
        "kind": kind,
        "since": since,
        "until": until,
    }
    return page(
        request,
        state,
        "read",
        "log.html",
        decisions=decisions,
        audit=audit,
        filters=filters,
        outcomes=OUTCOMES,
        error=error,
        has_log=log is not None,
    )


@router.get("/console/status", response_class=HTMLResponse)
def status_page(request: Request, state: ApiState = Depends(api_state)):
    from facegate.components.service.status import gallery_report, model_report  # heavy: MLflow registry, ~1.5 s

    report = (
        {
            "gallery": gallery_report(state.gate),
            "model": model_report(state.settings),
            "pad": state.gate.liveness.status(),
        }
        if may(request, "read")
        else {}
    )
    return page(
        request, state, "read", "status.html", report=report, now=datetime.now(UTC).isoformat(timespec="seconds")
    )
