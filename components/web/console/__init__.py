"""The operator console: server-side pages (Jinja2) and a little JavaScript, no build step.

Mounted by ``facegate.components.web.api.create_app``: the login page answers at ``/``, the pages under ``/console/``.
Pages only render; every action (check photos, enrol, remove, identify) is a call from the page's
script to the REST API with the session cookie, so the page and the API enforce the same roles and
limits (a viewer's enrolment is 403 in both). Sessions are signed cookies (``facegate.components.web.accounts``),
HttpOnly and SameSite=Strict; logins are rate-limited per account name and per client address.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from facegate.components.web.accounts import Accounts, LoginLimiter, Principal, Sessions
from facegate.components.core.errors import BadRequest, LoginRateLimited
from facegate.components.web.request_guard import PRINCIPAL_SCOPE_KEY

CONSOLE_DIR = Path(__file__).resolve().parent
PAGES = [("employees", "Employees", "read"), ("enrol", "Enrol", "enrol"), ("identify", "Identify", "decide"),
         ("log", "Access log", "read"), ("status", "Status", "read")]


def console_router(gate, accounts: Accounts, sessions: Sessions, metrics,  # noqa: ANN001 - FaceGate, ServiceMetrics
                   principal: Callable[[Request], Principal]) -> APIRouter:
    from facegate.components.web.api import LimitedFormRoute, parse_time

    settings = gate.settings
    limiter = LoginLimiter(settings.console.login_max_failures, settings.console.login_window_s)
    templates = Jinja2Templates(directory=str(CONSOLE_DIR / "templates"))
    router = APIRouter(route_class=LimitedFormRoute, include_in_schema=False)
    max_age = int(settings.console.session_hours * 3600)

    def who(request: Request) -> Principal | None:
        return request.scope.get(PRINCIPAL_SCOPE_KEY)

    def render(request: Request, template: str, status: int = 200, **ctx) -> HTMLResponse:
        p = who(request)
        nav = [(slug, title) for slug, title, perm in PAGES if p is not None and p.can(perm)]
        return templates.TemplateResponse(request, template, {"me": p, "nav": nav, "limits": settings.api, **ctx},
                                          status_code=status)

    def page(request: Request, permission: str, template: str, **ctx) -> Response:
        p = who(request)
        if p is None:
            return RedirectResponse("/?" + urlencode({"next": request.url.path}), status_code=303)
        if not p.can(permission):
            return render(request, "forbidden.html", 403, permission=permission)
        return render(request, template, **ctx)

    @router.get("/", response_class=HTMLResponse)
    def login_page(request: Request):
        if who(request) is not None and request.query_params.get("next") is None:
            return RedirectResponse("/console/employees", status_code=303)
        return render(request, "login.html", next=request.query_params.get("next", ""))

    @router.post("/login", response_class=HTMLResponse)
    def login(request: Request, name: str = Form(..., max_length=64), secret: str = Form(..., max_length=512),
              next: str = Form("", max_length=200)):  # noqa: A002 - the form's name
        client = request.client.host if request.client else "unknown"
        keys = (f"account {name!r}", f"address {client}")
        try:
            limiter.check(*keys)
        except LoginRateLimited as exc:
            metrics.logins.labels("rate_limited").inc()
            return render(request, "login.html", 429, error=exc.message, next=next, name=name)
        p = accounts.login(name, secret)
        if p is None:
            limiter.failed(*keys)
            metrics.logins.labels("failed").inc()
            return render(request, "login.html", 401, error="wrong account name or secret", next=next, name=name)
        limiter.succeeded(keys[0])
        metrics.logins.labels("ok").inc()
        target = next if next.startswith("/console/") else "/console/employees"
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(Sessions.COOKIE, sessions.issue(p), max_age=max_age, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
        return resp

    @router.post("/logout")
    def logout():
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(Sessions.COOKIE, path="/")
        return resp

    @router.get("/console/employees", response_class=HTMLResponse)
    def employees_page(request: Request, q: str = Query("", max_length=100)):
        rows = gate.employees() if who(request) is not None and who(request).can("read") else []
        if q:
            rows = [e for e in rows if q.lower() in e["employee_id"].lower() or q.lower() in e["name"].lower()]
        return page(request, "read", "employees.html", employees=rows, q=q)

    @router.get("/console/enrol", response_class=HTMLResponse)
    def enrol_page(request: Request):
        return page(request, "enrol", "enrol.html")

    @router.get("/console/identify", response_class=HTMLResponse)
    def identify_page(request: Request):
        return page(request, "decide", "identify.html")

    @router.get("/console/log", response_class=HTMLResponse)
    def log_page(request: Request, employee_id: str = Query("", max_length=64), outcome: str = Query("", max_length=16),
                 entrance: str = Query("", max_length=64), kind: str = Query("", max_length=16),
                 since: str = Query("", max_length=40), until: str = Query("", max_length=40)):
        from facegate.components.service.access_log import OUTCOMES, DecisionFilter

        p, log = who(request), gate.access_log
        decisions, audit, error = [], [], None
        if p is not None and p.can("read") and log is not None:
            try:
                f = DecisionFilter(employee_id or None, outcome or None, entrance or None, kind or None,
                                   parse_time("since", since), parse_time("until", until), 500)
            except BadRequest as exc:
                error, f = exc.message, DecisionFilter(limit=500)
            decisions, audit = log.decisions(f), log.audit_events(limit=200)
        filters = {"employee_id": employee_id, "outcome": outcome, "entrance": entrance, "kind": kind,
                   "since": since, "until": until}
        return page(request, "read", "log.html", decisions=decisions, audit=audit, filters=filters,
                    outcomes=OUTCOMES, error=error, has_log=log is not None)

    @router.get("/console/status", response_class=HTMLResponse)
    def status_page(request: Request):
        from facegate.components.service.status import gallery_report, model_report

        p = who(request)
        report = {"gallery": gallery_report(gate), "model": model_report(settings)} if p and p.can("read") else {}
        return page(request, "read", "status.html", report=report,
                    now=datetime.now(UTC).isoformat(timespec="seconds"))

    return router
