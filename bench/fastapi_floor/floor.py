"""The floor's work as the least FastAPI can do it: what FastAPI itself costs per request.

The same SQL, PyJWT, psycopg2 connection used inline and orjson as ../shared/bench/floor.py,
through FastAPI's routing, one auth dependency (HTTPBearer) and a pydantic body for POST. No
middleware, no pool, no logging, no validation beyond the body's fields. Run it in place of the
floor (bench/README.md, "What FastAPI itself costs"):

    FLOOR_DIR=bench/fastapi_floor .venv/bin/python bench/run.py --no-memory --routes get_one,list,create,update,toggle,list_tree

Besides the floor's three routes it has the other three #26 measures, done the same least way: PATCH
(description and priority, what bench/lua/patch.lua sends), toggle, and a list's manual order as a
tree (one recursive query over its own floor_schema.sql, which adds a list, a parent and a position).

Never an implementation to copy: like the floor, it is only a yardstick."""
import datetime as dt
import os
from typing import Annotated

import jwt
import orjson
import psycopg2
from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

SECRET = os.environ["BETTER_AUTH_SECRET"]
DSN = os.environ.get("FLOOR_DSN")
COLS = "id, user_id, title, description, completed, priority, tags, due_date, completed_at, created_at, updated_at"
NAMES = [c.strip() for c in COLS.split(",")]
_conn = None
app = FastAPI()
bearer = HTTPBearer()


def conn():
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg2.connect(DSN)
        _conn.autocommit = True
    return _conn


def row_to_dict(row):
    d = dict(zip(NAMES, row))
    for k in ("due_date", "completed_at", "created_at", "updated_at"):
        if d[k] is not None:
            d[k] = d[k].astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    d["tags"] = d["tags"] or []
    return d


async def current_user(credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]) -> str:
    try:
        claims = jwt.decode(credentials.credentials, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        raise HTTPException(401, "bad token")
    return claims["sub"]


User = Annotated[str, Depends(current_user)]


class TaskCreate(BaseModel):
    title: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=1000)
    priority: str = "medium"
    tags: list[str] = []


def json(body, status=200):
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


# Each task after its parent, siblings by position then id: a path of "position:id" steps, compared as text.
TREE = f"""
WITH RECURSIVE tree(id, path) AS (
  SELECT id, ARRAY[position || ':' || lpad(id::text, 12, '0')] FROM floor_task
  WHERE list_id = %s AND parent_id IS NULL AND user_id = %s
  UNION ALL
  SELECT c.id, t.path || (c.position || ':' || lpad(c.id::text, 12, '0')) FROM floor_task c JOIN tree t ON c.parent_id = t.id
)
SELECT {", ".join("f." + c for c in NAMES)} FROM tree JOIN floor_task f ON f.id = tree.id ORDER BY tree.path COLLATE "C" LIMIT %s
"""


@app.get("/api/tasks")
async def list_tasks(user: User, list_id: int | None = None, sort: str = "created_at", limit: int = 100):
    cur = conn().cursor()
    if list_id is not None and sort == "position":
        cur.execute(TREE, (list_id, user, limit))
    else:
        cur.execute(f"SELECT {COLS} FROM floor_task WHERE user_id=%s ORDER BY created_at DESC, id DESC LIMIT 100", (user,))
    return json([row_to_dict(r) for r in cur.fetchall()])


@app.post("/api/tasks", status_code=201)
async def create_task(user: User, body: TaskCreate):
    cur = conn().cursor()
    cur.execute(
        f"INSERT INTO floor_task (user_id, title, description, priority, tags) VALUES (%s,%s,%s,%s,%s) RETURNING {COLS}",
        (user, body.title, body.description, body.priority, body.tags),
    )
    return json(row_to_dict(cur.fetchone()), 201)


@app.get("/api/tasks/{task_id}")
async def get_task(user: User, task_id: int):
    cur = conn().cursor()
    cur.execute(f"SELECT {COLS} FROM floor_task WHERE id=%s AND user_id=%s", (task_id, user))
    row = cur.fetchone()
    if row is None:
        raise HTTPException(404, "Task not found")
    return json(row_to_dict(row))


class TaskPatch(BaseModel):
    description: str | None = Field(default=None, max_length=1000)
    priority: str | None = None


@app.patch("/api/tasks/{task_id}")
async def update_task(user: User, task_id: int, body: TaskPatch):
    cur = conn().cursor()
    cur.execute(
        f"UPDATE floor_task SET description = coalesce(%s, description), priority = coalesce(%s, priority), updated_at = now()"
        f" WHERE id=%s AND user_id=%s RETURNING {COLS}",
        (body.description, body.priority, task_id, user),
    )
    row = cur.fetchone()
    if row is None:
        raise HTTPException(404, "Task not found")
    return json(row_to_dict(row))


@app.post("/api/tasks/{task_id}/toggle")
async def toggle_task(user: User, task_id: int):
    cur = conn().cursor()
    cur.execute(
        "UPDATE floor_task SET completed = NOT completed, completed_at = CASE WHEN completed THEN NULL ELSE now() END,"
        f" updated_at = now() WHERE id=%s AND user_id=%s RETURNING {COLS}",
        (task_id, user),
    )
    row = cur.fetchone()
    if row is None:
        raise HTTPException(404, "Task not found")
    return json(row_to_dict(row))
