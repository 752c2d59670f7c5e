"""Liveness and readiness, without auth, for load balancers and orchestrators."""
from fastapi import APIRouter, Request, Response
from db import database_of
from errors import ServiceUnavailable
from responses import FastJSONResponse
from schemas import ErrorBody, HealthStatus

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthStatus, summary="Liveness: the process answers")
async def health() -> Response:
    return FastJSONResponse({"status": "ok"})


@router.head("/health", include_in_schema=False)  # for probes that only look at the status
async def health_head() -> Response:
    return Response(status_code=200)


@router.get(
    "/health/ready",
    response_model=HealthStatus,
    summary="Readiness: the database answers",
    responses={503: {"model": ErrorBody, "description": "The database is unreachable (SERVICE_UNAVAILABLE)."}},
)
async def readiness(request: Request) -> Response:
    db = database_of(request)
    if not await db.is_reachable():
        raise ServiceUnavailable(headers={"Retry-After": "5"})
    return FastJSONResponse({"status": "ok"})
