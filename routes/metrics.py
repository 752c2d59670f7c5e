"""`GET /metrics` for Prometheus: open by default, behind METRICS_TOKEN when it is set."""
import hmac

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import metrics
from errors import Unauthorized
from schemas import ErrorBody

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of this instance (all its worker processes)",
    description="Prometheus text format. Requests by method, route template and status; latency by route "
    "template; database pool in use and waiting; rate-limited requests. With METRICS_TOKEN set, send "
    "`Authorization: Bearer <METRICS_TOKEN>`. See the README, Operations.",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "The metrics."},
        401: {"model": ErrorBody, "description": "METRICS_TOKEN is set and the request lacks it (UNAUTHORIZED)."},
    },
)
async def read_metrics(request: Request) -> Response:
    _require_token(request)
    await metrics.refresh_at_scrape(request.app)
    body, content_type = await run_in_threadpool(metrics.exposition)  # reads every worker's files
    return Response(body, media_type=content_type)


def _require_token(request: Request) -> None:
    token = request.app.state.settings.metrics_token
    if token is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, credentials = given.partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(), expected):
        raise Unauthorized(
            "GET /metrics needs Authorization: Bearer <METRICS_TOKEN> (the token set in the service's settings).",
            token_given=bool(credentials.strip()),
        )
