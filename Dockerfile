# syntax=docker/dockerfile:1
# The production image: `alembic upgrade head`, then uvicorn with WEB_CONCURRENCY workers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in their own layer: rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code belongs to root and is read-only to the service; /app itself is writable so that the
# default SQLite file (./tasks.db) can be created when no DATABASE_URL is given.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app && chown app:app /app
COPY alembic.ini *.py ./
COPY migrations ./migrations
COPY routes ./routes
USER app

# No secrets here: BETTER_AUTH_SECRET / BETTER_AUTH_URL, DATABASE_URL... come from the environment.
ENV PORT=8000 \
    WEB_CONCURRENCY=2
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2)"]

CMD ["sh", "-c", "alembic upgrade head && exec uvicorn main:app --host 0.0.0.0 --port \"$PORT\" --workers \"$WEB_CONCURRENCY\" --no-access-log"]
