"""`GET /metrics` for Prometheus: open by default, behind METRICS_TOKEN when it is set."""
import hmac

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import metrics
from errors import Unauthorized

router = APIRouter(tags=["operations"])


# Not in the OpenAPI schema: it is for Prometheus, not for API clients (whose generated types expect
# JSON from every operation). Documented in the README, "Operations" > "Metrics".
@router.get("/metrics", include_in_schema=False)
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
