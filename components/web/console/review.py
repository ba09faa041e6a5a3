"""The console's review page: the capture queue with each chip and the four labels (operator only).

The page only renders; the buttons call the API's capture routes (components/web/api/routes_captures.py)
with the session cookie, so the page and the API check the same ``review`` permission."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from facegate.components.web.api.dependencies import ApiState, api_state
from facegate.components.web.api.inputs import LimitedFormRoute
from facegate.components.web.console import may, page

router = APIRouter(route_class=LimitedFormRoute, include_in_schema=False)


@router.get("/console/review", response_class=HTMLResponse)
def review_page(request: Request, state: ApiState = Depends(api_state)):
    store = state.gate.captures
    queue = (
        store.review_queue(state.settings.capture.review_band, 100)
        if store is not None and may(request, "review")
        else []
    )
    return page(request, state, "review", "review.html", queue=queue, has_store=store is not None)
