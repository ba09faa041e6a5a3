"""The account behind a request (the console asks which pages to offer)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from facegate.components.web.api.dependencies import principal
from facegate.components.web.api.inputs import LimitedFormRoute
from facegate.components.web.api.schemas import Me, error_responses

router = APIRouter(route_class=LimitedFormRoute)


@router.get("/whoami", responses=error_responses())
def whoami(request: Request) -> Me:
    p = principal(request)
    return Me(name=p.name, role=p.role)
