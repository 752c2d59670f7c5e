"""Liveness and readiness, without auth, for load balancers and orchestrators."""
from fastapi import APIRouter, Request, Response
from db import DatabaseUnavailable, database_of
from errors import DATABASE_RETRY_AFTER_SECONDS, SchemaOutOfStep, ServiceUnavailable
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
    summary="Readiness: the database answers, at this version's schema",
    responses={
        503: {
            "model": ErrorBody,
            "description": "The database is unreachable (SERVICE_UNAVAILABLE), or its schema is not the one this "
            "version of the service needs (SCHEMA_MISMATCH: the detail says which revision it found, which it "
            "needs, and what to run, e.g. `alembic upgrade head`; also as `schema_revision` and `code_revision`).",
        }
    },
)
async def readiness(request: Request) -> Response:
    # One query per probe, as before: reading the schema's revision also says the database answers.
    try:
        revisions = await request.app.state.schema_version.check(database_of(request))
    except DatabaseUnavailable:
        raise ServiceUnavailable(headers={"Retry-After": DATABASE_RETRY_AFTER_SECONDS}) from None
    if not revisions.in_step:
        retry = {"Retry-After": DATABASE_RETRY_AFTER_SECONDS}
        raise SchemaOutOfStep(revisions.problem(), headers=retry, **revisions.fields())
    return FastJSONResponse({"status": "ok"})
