"""The typed client a Next.js frontend makes from our OpenAPI schema, made and compiled for real:
`openapi-typescript` (as the README says) turns /openapi.json into api.d.ts, and `tsc --strict`
type-checks code that uses it the way a frontend does. Both tools are pinned in
tests/typescript/package.json (+ package-lock.json; `npm ci` runs once if node_modules is missing).

Needs Node.js >= 20: skipped without it, failed under CI.
"""
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import make_settings, unavailable
from main import create_app
from tests.betterauth.harness import node_available

TS_DIR = Path(__file__).resolve().parent / "typescript"
NPX = ["npx", "--no", "--"]  # the pinned local tools only; never a download

pytestmark = pytest.mark.slow

USAGE = """\
import type { components, paths } from "./api";

type Task = components["schemas"]["TaskPublic"];
type TaskList = paths["/api/tasks"]["get"]["responses"][200]["content"]["application/json"];
type NewTask = paths["/api/tasks"]["post"]["requestBody"]["content"]["application/json"];
type TaskChanges = paths["/api/tasks/{task_id}"]["patch"]["requestBody"]["content"]["application/json"];
type ListQuery = NonNullable<paths["/api/tasks"]["get"]["parameters"]["query"]>;
type Stats = paths["/api/tasks/stats"]["get"]["responses"][200]["content"]["application/json"];
type Me = paths["/api/me"]["get"]["responses"][200]["content"]["application/json"];
type ApiError = paths["/api/tasks/{task_id}"]["get"]["responses"][404]["content"]["application/json"];

const API = "http://127.0.0.1:8000";

async function call<T>(token: string, path: string, init: RequestInit = {}): Promise<T> {
  const response = await fetch(`${API}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...init.headers },
  });
  if (!response.ok) {
    const error: ApiError = await response.json();
    throw new Error(`${error.error_code}: ${error.detail} ${(error.errors ?? []).map((e) => e.field).join(",")}`);
  }
  return (await response.json()) as T;
}

export function listTasks(token: string, query: ListQuery = {}): Promise<TaskList> {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null) continue;
    for (const item of Array.isArray(value) ? value : [value]) params.append(key, String(item));
  }
  return call<TaskList>(token, `/api/tasks?${params}`);
}

export const createTask = (token: string, task: NewTask) =>
  call<Task>(token, "/api/tasks", { method: "POST", body: JSON.stringify(task) });
export const updateTask = (token: string, id: Task["id"], changes: TaskChanges, etag?: string) =>
  call<Task>(token, `/api/tasks/${id}`, {
    method: "PATCH", body: JSON.stringify(changes), headers: etag ? { "If-Match": etag } : {},
  });

export function describe(task: Task): string {
  const due: string | null = task.due_date;
  const done: boolean = task.completed;
  const tags: string[] = task.tags;
  const description: string = task.description ?? "";
  return `#${task.id} ${task.title} [${task.priority}] ${due ?? "no due date"} ${done} ${tags.join(", ")} ${description} ${task.created_at}`;
}

// What a frontend writes: only the title is required on create; every field is optional on update.
export const draft: NewTask = { title: "Buy milk" };
export const full: NewTask = {
  title: "Buy milk", description: null, completed: false, priority: "high", tags: ["home"], due_date: "2026-12-01T17:00:00Z",
};
export const change: TaskChanges = { completed: true };
export const clear: TaskChanges = { description: null, due_date: null };
export const query: ListQuery = {
  status: "pending", priority: ["high", "medium"], tag: ["home"], q: "milk", sort: "due_date", order: "asc", limit: 20, offset: 0,
};
export const me: Me = { user_id: "user_2x9", email: null, name: null };
export const stats: Stats = { total: 1, completed: 0, pending: 1, overdue: 0, by_priority: { low: 0, medium: 1, high: 0 } };

// Lists, subtasks and manual order: a drag-and-drop frontend.
type TaskListRow = components["schemas"]["ListPublic"];
type Lists = paths["/api/lists"]["get"]["responses"][200]["content"]["application/json"];
type NewList = paths["/api/lists"]["post"]["requestBody"]["content"]["application/json"];
type ListChanges = paths["/api/lists/{list_id}"]["patch"]["requestBody"]["content"]["application/json"];
type TaskMove = paths["/api/tasks/{task_id}/move"]["post"]["requestBody"]["content"]["application/json"];
type ListMove = paths["/api/lists/{list_id}/move"]["post"]["requestBody"]["content"]["application/json"];
type ListNotFound = paths["/api/lists/{list_id}"]["get"]["responses"][404]["content"]["application/json"];

export const listLists = (token: string) => call<Lists>(token, "/api/lists");
export const createList = (token: string, list: NewList) =>
  call<TaskListRow>(token, "/api/lists", { method: "POST", body: JSON.stringify(list) });
// A task dropped between two others: send the id of the one above it.
export const dropBelow = (token: string, id: Task["id"], above: Task["id"]) =>
  call<Task>(token, `/api/tasks/${id}/move`, { method: "POST", body: JSON.stringify({ after_id: above } satisfies TaskMove) });
export function inboxOf(lists: Lists): TaskListRow | undefined {
  return lists.find((list) => list.is_default && list.task_count >= list.completed_count);
}
export function placeOf(task: Task): string {
  const parent: number | null = task.parent_id;
  const list: number = task.list_id;
  const position: string = task.position;
  return `${list}/${parent ?? "top"}/${position}`;
}
export const groceries: NewList = { name: "Groceries", color: "#16a34a" };
export const rename: ListChanges = { name: "Food" };
export const toTop: ListMove = { to: "top" };
export const underParent: TaskMove = { parent_id: 17, after_id: 12 };
export const toTopLevel: TaskMove = { parent_id: null, list_id: 3, to: "bottom" };
export const subtask: NewTask = { title: "Milk", parent_id: 17 };
export const inList: NewTask = { title: "Milk", list_id: 3 };
export const tree: ListQuery = { list_id: 3, sort: "position", parent_id: "none" };
export const notFound = (error: ListNotFound) => error.error_code;

// Sharing a list: the invite flow, members, roles, assignees.
type Invitation = paths["/api/lists/{list_id}/invitations"]["post"]["responses"][201]["content"]["application/json"];
type NewInvitation = paths["/api/lists/{list_id}/invitations"]["post"]["requestBody"]["content"]["application/json"];
type Pending = paths["/api/invitations"]["get"]["responses"][200]["content"]["application/json"];
type Accepted = paths["/api/invitations/{invitation_id}/accept"]["post"]["responses"][200]["content"]["application/json"];
type Members = paths["/api/lists/{list_id}/members"]["get"]["responses"][200]["content"]["application/json"];
type RoleChange = paths["/api/lists/{list_id}/members/{member_id}"]["patch"]["requestBody"]["content"]["application/json"];
type Change = components["schemas"]["Change"];

export const invite = (token: string, listId: TaskListRow["id"], body: NewInvitation) =>
  call<Invitation>(token, `/api/lists/${listId}/invitations`, { method: "POST", body: JSON.stringify(body) });
export const inviteLink = (invitation: Invitation) => `/invite/${invitation.id}?token=${invitation.token}`;
export const acceptInvitation = (token: string, id: Pending[number]["id"], secret?: string) =>
  call<Accepted>(token, `/api/invitations/${id}/accept`, { method: "POST", body: JSON.stringify({ token: secret }) });
export function canEdit(list: TaskListRow): boolean {
  const role: "owner" | "editor" | "viewer" = list.role;
  return role !== "viewer" && list.member_count >= 1 && list.owner_id.length > 0;
}
export const owners = (members: Members) => members.filter((member) => member.role === "owner").map((m) => m.email ?? m.user_id);
export const asEditor: RoleChange = { role: "editor" };
export const viewerInvite: NewInvitation = { email: "sam@example.com", role: "viewer" };
export const assigned: NewTask = { title: "Paint the fence", list_id: 3, assignee_id: "user_5k2" };
export const unassign: TaskChanges = { assignee_id: null };
export const mine: ListQuery = { assignee: "me" };
export const whoDidIt = (change: Change) => change.actor ?? "the service";

// And the types refuse what the API refuses.
// @ts-expect-error `to` is top or bottom
export const badTo: TaskMove = { to: "middle" };
// @ts-expect-error a list's name is required
export const noName: NewList = { color: null };
// @ts-expect-error list ids are numbers
export const badListId: NewTask = { title: "x", list_id: "3" };
// @ts-expect-error priority is one of low, medium, high
export const badPriority: NewTask = { title: "x", priority: "urgent" };
// @ts-expect-error title is required
export const noTitle: NewTask = { description: "x" };
// @ts-expect-error sort keys are enumerated
export const badSort: ListQuery = { sort: "owner" };
// @ts-expect-error ids are numbers
export const badId: Task["id"] = "17";
// @ts-expect-error completed cannot be null (only description and due_date can)
export const nullCompleted: TaskChanges = { completed: null };
"""


@pytest.fixture(scope="session")
def typescript_tools() -> Path:
    if not node_available():
        message = (
            "Node.js >= 20 and npm are not on PATH: the typed-client test runs openapi-typescript and tsc "
            "(tests/typescript). Install Node.js 20+ to run it."
        )
        unavailable(message)
    bins = TS_DIR / "node_modules" / ".bin"
    if not ((bins / "openapi-typescript").exists() and (bins / "tsc").exists()):
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=TS_DIR, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"npm ci failed in {TS_DIR}:\n{result.stdout}\n{result.stderr}"
    return TS_DIR


@pytest.fixture(scope="module")
def schema() -> dict:
    return create_app(make_settings("sqlite:///:memory:")).openapi()


@pytest.fixture(scope="module")
def generated(typescript_tools: Path, schema: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("typescript")
    (out / "openapi.json").write_text(json.dumps(schema))
    result = run(NPX + ["openapi-typescript", str(out / "openapi.json"), "-o", str(out / "api.d.ts")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "api.d.ts").stat().st_size > 0
    return out


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=TS_DIR, capture_output=True, text=True, timeout=180)


def typed_2xx_responses(schema: dict) -> list[tuple[str, str, str]]:
    """(operationId, status, media type) of every 2xx response that has a body."""
    found = []
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            for status, response in operation["responses"].items():
                if status.startswith("2"):
                    found += [(operation["operationId"], status, media) for media in response.get("content", {})]
    return found


def test_every_operation_has_a_unique_id_and_typed_2xx_bodies(schema: dict) -> None:
    operations = [op for item in schema["paths"].values() for op in item.values()]
    ids = [op.get("operationId") for op in operations]
    assert all(ids) and len(ids) == len(set(ids)), ids
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                if status == "204":
                    assert not response.get("content"), f"{method.upper()} {path} 204 declares a body"
                    continue
                content = response.get("content") or {}
                if path.endswith("/events"):  # Server-Sent Events: a text stream, read with EventSource
                    assert list(content) == ["text/event-stream"] and content["text/event-stream"]["schema"]["type"] == "string"
                    continue
                if path.endswith(("/chat", "/chatkit")):  # JSON, or with Accept: text/event-stream a stream
                    assert list(content) == ["application/json", "text/event-stream"], f"{method.upper()} {path}"
                    assert content["text/event-stream"]["schema"]["type"] == "string"
                else:
                    assert list(content) == ["application/json"], f"{method.upper()} {path} {status}: {list(content)}"
                body = content["application/json"]["schema"]
                assert "$ref" in body or "type" in body or "anyOf" in body, f"{method.upper()} {path} {status}: {body}"


def test_the_generated_types_have_no_unknown_bodies(generated: Path, schema: dict) -> None:
    text = (generated / "api.d.ts").read_text()
    # The only `unknown` allowed: the index signature openapi-typescript gives every headers object.
    stray = [line.strip() for line in text.splitlines() if re.search(r"\bunknown\b", line)
             and line.strip() != "[name: string]: unknown;"]
    assert not stray, stray
    checks = ['import type { operations } from "./api";', "type Known<T> = unknown extends T ? false : true;"]
    for index, (operation_id, status, media) in enumerate(typed_2xx_responses(schema)):
        assert f'"{operation_id}": {{' in text, f"{operation_id} missing from the generated operations"
        checks.append(
            f'export const body{index}: Known<operations["{operation_id}"]["responses"][{status}]["content"]["{media}"]> = true;'
        )
    assert len(checks) > 20  # both spellings of every route with a body
    (generated / "known.ts").write_text("\n".join(checks) + "\n")
    assert_type_checks(generated, "known.ts")


def test_a_frontend_using_the_generated_types_type_checks(generated: Path) -> None:
    (generated / "client.ts").write_text(USAGE)
    assert_type_checks(generated, "client.ts")


def assert_type_checks(directory: Path, filename: str) -> None:
    result = run(
        NPX + ["tsc", "--noEmit", "--strict", "--target", "es2022", "--module", "esnext",
               "--moduleResolution", "bundler", str(directory / filename)]
    )
    assert result.returncode == 0, f"tsc --strict failed on {filename}:\n{result.stdout}\n{result.stderr}"
