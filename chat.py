"""One turn of the assistant (contract §13): the caller's message, the model, the tools, the answer.

The agent is the OpenAI Agents SDK's, on the Chat Completions model class. Its tools are the MCP
tools (§11) run in process through mcp_tools.call_tool with the caller bound here, from the
verified token: nothing the model, a message or a task title says can choose the user.

A turn runs in a task of its own and reports what happens as events (text, each tool call and its
result, the end), which the routes encode as JSON, as a UI message stream or as ChatKit events.
Limits: the last CHAT_WINDOW messages go to the model, at most MAX_TOOL_CALLS tools run, and the
whole turn ends within CHAT_TIMEOUT_SECONDS. What happened stays true: the user's message is
stored before the model is asked, each tool call as soon as it ran, and the answer only when the
turn succeeded; a failing model is CHAT_UNAVAILABLE (503).
"""
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
from agents import (
    Agent, FunctionTool, ItemHelpers, MessageOutputItem, OpenAIChatCompletionsModel, RunConfig, Runner,
    ToolsToFinalOutputResult,
)
from agents.run_config import ToolExecutionConfig

import chat_keys
import chat_model
import conversations
import settings_store
from auth import Principal
from chat_events import ChatEvent, Failed, Finished, TextDelta, ToolFinished, ToolStarted
from config import Settings
from db import Connection, Database, DatabaseUnavailable, Row
from errors import ApiError, InternalError, database_unavailable, error_body
from mcp_tools import TOOLS, call_tool
from responses import to_json

CHAT_WINDOW = 20
MAX_TOOL_CALLS = 10
CAPPED_ANSWER = (
    f"I stopped after {MAX_TOOL_CALLS} actions, the most one message may run. "
    "Tell me to continue if there is more to do."
)


# ---------------------------------------------------------------------------------------- the turn


class Assistant:
    """What every turn shares: settings, database, and the model client (pooled connections)."""

    def __init__(self, settings: Settings, database: Database):
        self.settings = settings
        self.database = database
        self._client: openai.AsyncOpenAI | None = None
        self._model: OpenAIChatCompletionsModel | None = None

    @property
    def model(self) -> OpenAIChatCompletionsModel:
        """The model, on a client made at first use (again after close(): an app may run several lifespans)."""
        if self._model is None or self._client is None or self._client.is_closed():
            self._client = chat_model.model_client(self.settings)
            self._model = chat_model.chat_model(self.settings, self._client)
        return self._model

    @property
    def lease_seconds(self) -> float:
        return self.settings.chat_timeout_seconds

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


@dataclass
class TurnStart:
    """Where a turn stands before the model is asked: its conversation and stored user message."""

    conversation: Row
    message_id: int
    zone: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # ran by an earlier attempt (resumed)


async def start_in(
    connection: Connection, user_id: str, message: str, conversation_id: int | None, resume_message_id: int | None = None
) -> TurnStart:
    """Store the user's message (a new conversation without an id), or take up the unanswered
    message of a turn being retried; in the caller's transaction."""
    if resume_message_id is not None:
        stored = await conversations.message(connection, resume_message_id)
        if stored is not None:
            conversation = await conversations.find(connection, user_id, stored["conversation_id"])
            zone = await settings_store.zone_of(connection, user_id)
            return TurnStart(conversation, stored["id"], zone, list(stored["tool_calls"] or []))
    if conversation_id is None:
        conversation = await conversations.create(connection, user_id)
    else:
        conversation = await conversations.find(connection, user_id, conversation_id)
    stored = await conversations.add_message(connection, conversation["id"], "user", message)
    return TurnStart(conversation, stored["id"], await settings_store.zone_of(connection, user_id))


async def begin(
    assistant: Assistant, caller: Principal, message: str, conversation_id: int | None, key: str | None
) -> "Turn | bytes":
    """A new turn, ready to run; or, for an Idempotency-Key already answered, the first answer."""
    db = assistant.database
    if key is None:
        async with db.transaction() as connection:
            return Turn(assistant, caller, await start_in(connection, caller.user_id, message, conversation_id))
    turn_key = chat_keys.turn_key(caller.user_id, key, message, conversation_id)

    async def start(connection: Connection, claimed: chat_keys.Claimed) -> TurnStart:
        return await start_in(connection, caller.user_id, message, conversation_id, claimed.message_id)

    claimed, started = await chat_keys.claim_once(db, turn_key, assistant.lease_seconds, start)
    if isinstance(claimed, chat_keys.Answered):
        return claimed.body
    return Turn(assistant, caller, started, turn_key)


class Turn:
    def __init__(
        self, assistant: Assistant, caller: Principal, start: TurnStart, key: chat_keys.TurnKey | None = None,
        *, stream_model: bool = False, answer_item_id: str | None = None,
    ):
        """`stream_model`: ask the model for a stream (text as it comes) rather than whole answers.
        `answer_item_id`: the id the answer's message gets (ChatKit names it before it exists)."""
        self.assistant = assistant
        self.db = assistant.database
        self.caller = caller
        self.start = start
        self.key = key
        self.stream_model = stream_model
        self.answer_item_id = answer_item_id or conversations.new_id("msg")
        self.tool_calls: list[dict[str, Any]] = list(start.tool_calls)
        self.capped = False
        self._segments: list[str] = []
        self._events: asyncio.Queue[ChatEvent] = asyncio.Queue()
        self._running_tools: set[asyncio.Task] = set()

    @property
    def conversation_id(self) -> int:
        return self.start.conversation["id"]

    async def events(self) -> AsyncIterator[ChatEvent]:
        """Run the turn, yielding what happens until Finished or Failed. Leaving early (the client
        went away) cancels the turn: it then ends as a failed one would."""
        task = asyncio.get_running_loop().create_task(self._run())
        try:
            while True:
                event = await self._events.get()
                yield event
                if isinstance(event, Finished | Failed):
                    return
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _emit(self, event: ChatEvent) -> None:
        if isinstance(event, TextDelta):
            while len(self._segments) <= event.segment:
                self._segments.append("")
            self._segments[event.segment] += event.text
        self._events.put_nowait(event)

    async def _run(self) -> None:
        failure: ApiError | None = None
        try:
            try:
                async with asyncio.timeout(self.assistant.settings.chat_timeout_seconds):
                    await self._ask_model()
            except ApiError as error:
                failure = error
            except DatabaseUnavailable as exc:
                failure = database_unavailable(exc)
            except Exception as exc:  # the model failed: an error status, no connection, bad JSON, the deadline
                failure = chat_model.unavailable(exc, self.assistant.settings.chat_timeout_seconds)
            await self._tools_settled()
            if failure is None:
                self._emit(await self._store_answer())
                return
        except asyncio.CancelledError:
            await self._tools_settled()
            await self._give_back_key()
            raise
        except DatabaseUnavailable as exc:
            failure = database_unavailable(exc)
        except Exception:
            chat_model.log.exception("chat turn failed")
            failure = InternalError()
        await self._give_back_key()
        self._emit(Failed(failure))

    async def _ask_model(self) -> None:
        async with self.db.connect() as connection:
            rows = await conversations.last_messages(connection, self.conversation_id, CHAT_WINDOW)
        agent = Agent(
            name="Task assistant",
            instructions=chat_model.instructions(self.start.zone),
            tools=[self._tool(name) for name in TOOLS],
            tool_use_behavior=self._stop_when_capped,
        )
        settings = self.assistant.settings
        run_config = RunConfig(
            model=self.assistant.model,
            tracing_disabled=not settings.chat_tracing,
            trace_include_sensitive_data=False,
            workflow_name="Task API chat",
            # One tool at a time, in the order asked: each is counted and recorded before the next.
            tool_execution=ToolExecutionConfig(max_function_tool_concurrency=1),
            tool_not_found_behavior="return_error_to_model",
        )
        max_turns = MAX_TOOL_CALLS + 2  # each tool call may take a model call, then the answer
        history = chat_model.history(rows)
        if self.stream_model:
            await self._run_streamed(agent, history, run_config, max_turns)
        else:
            result = await Runner.run(agent, history, run_config=run_config, max_turns=max_turns)
            for segment, item in enumerate(i for i in result.new_items if isinstance(i, MessageOutputItem)):
                self._emit(TextDelta(segment, ItemHelpers.text_message_output(item)))
        if self.capped:
            self._emit(TextDelta(len(self._segments), CAPPED_ANSWER))

    async def _run_streamed(self, agent: Agent, history: list[dict[str, Any]], run_config: RunConfig, max_turns: int) -> None:
        result = Runner.run_streamed(agent, history, run_config=run_config, max_turns=max_turns)
        segment = -1
        try:
            async for event in result.stream_events():
                if event.type != "raw_response_event":
                    continue
                data = event.data
                if data.type == "response.output_item.added" and data.item.type == "message":
                    segment = len(self._segments)
                elif data.type == "response.output_text.delta" and data.delta:
                    self._emit(TextDelta(max(segment, 0), data.delta))
        finally:
            result.cancel()  # on the deadline or a failure: the SDK's background run stops too

    # ------------------------------------------------------------------------------------- tools

    def _tool(self, name: str) -> FunctionTool:
        async def invoke(context: Any, arguments: str) -> str:
            return await self._invoke(name, context.tool_call_id, arguments)

        return FunctionTool(
            name=name, description=TOOLS[name].description, params_json_schema=chat_model.tool_schema(name),
            on_invoke_tool=invoke, strict_json_schema=False,
        )

    async def _invoke(self, name: str, call_id: str, raw_arguments: str) -> str:
        if len(self.tool_calls) + len(self._running_tools) >= MAX_TOOL_CALLS:
            self.capped = True  # not run; the turn ends after this round (_stop_when_capped)
            return chat_model.result_text({
                "error_code": "TOOL_CALL_LIMIT",
                "detail": f"Not run: a message may run at most {MAX_TOOL_CALLS} tool calls.",
            })
        # Shielded: the deadline or a gone client never cuts a tool call in half; it runs, and is
        # recorded, to its end (the turn waits for it before it ends).
        task = asyncio.get_running_loop().create_task(self._call_and_record(name, call_id, raw_arguments))
        self._running_tools.add(task)
        task.add_done_callback(self._running_tools.discard)
        return await asyncio.shield(task)

    async def _call_and_record(self, name: str, call_id: str, raw_arguments: str) -> str:
        arguments, problem = _parse_arguments(raw_arguments)
        self._emit(ToolStarted(call_id, name, arguments))
        failed = True
        if problem is not None:
            result = problem
        else:
            try:
                result, failed = await call_tool(self.db, self.caller, name, arguments), False
            except ApiError as error:
                result = error.body()
                if "Retry-After" in error.headers:
                    result["retry_after_seconds"] = int(error.headers["Retry-After"])
        self.tool_calls.append({"tool": name, "arguments": arguments, "result": result})
        with contextlib.suppress(DatabaseUnavailable):  # the answer writes them all again
            await conversations.record_tool_calls(self.db, self.start.message_id, list(self.tool_calls))
        self._emit(ToolFinished(call_id, name, result, failed))
        return chat_model.result_text(result)

    def _stop_when_capped(self, _context: Any, _results: list[Any]) -> ToolsToFinalOutputResult:
        return ToolsToFinalOutputResult(is_final_output=self.capped, final_output="" if self.capped else None)

    async def _tools_settled(self) -> None:
        while self._running_tools:
            await asyncio.gather(*self._running_tools, return_exceptions=True)

    # ----------------------------------------------------------------------------------- storing

    async def _store_answer(self) -> Finished:
        response = "\n\n".join(text for text in self._segments if text.strip())
        answer = {"conversation_id": self.conversation_id, "response": response, "tool_calls": self.tool_calls}
        async with self.db.transaction() as connection:
            stored = await conversations.answer(
                connection, self.conversation_id, self.start.message_id, response, self.tool_calls, self.answer_item_id
            )
            if self.key is not None:
                await chat_keys.answer(connection, self.key, to_json(answer))
        return Finished(answer, stored)

    async def _give_back_key(self) -> None:
        if self.key is not None:
            with contextlib.suppress(DatabaseUnavailable):  # then the lease runs out by itself
                await chat_keys.give_back(self.db, self.key, self.assistant.lease_seconds)


def _parse_arguments(raw: str) -> tuple[Any, dict[str, Any] | None]:
    """The model's arguments as JSON, or (the raw text, the error the model gets back)."""
    try:
        arguments = json.loads(raw or "{}")
    except ValueError:
        arguments = None
    if isinstance(arguments, dict):
        return arguments, None
    return raw, error_body("VALIDATION_ERROR", "The arguments must be a JSON object.")


async def collect(turn: Turn) -> dict[str, Any]:
    """Run a turn to its end: the answer, or its error raised."""
    async for event in turn.events():
        if isinstance(event, Finished):
            return event.answer
        if isinstance(event, Failed):
            raise event.error
    raise InternalError()

