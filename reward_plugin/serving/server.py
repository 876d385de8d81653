"""``reward-plugin serve``: a reward server (FastAPI on uvicorn) with dynamic batching.

Endpoints:

- ``POST /score``: ``{"prompts": [...], "completions": [...]}`` (texts or message lists, as
  :class:`~.scorer.RewardScorer` takes them) or ``{"messages": [conversation, ...]}`` (each ending
  with the assistant's answer) -> ``{"rewards": [...]}``; ``"normalize": false`` for raw rewards;
  ``"tools"`` (tool schemas) and ``"chat_template_kwargs"`` (e.g. ``{"enable_thinking": false}``)
  reach the chat template as in training, one value for every item or a list with one per item.
- ``POST /get_reward`` (OpenRLHF's remote reward model): ``{"query": [full texts]}`` ->
  ``{"rewards": [...], "scores": [...]}``.
- ``POST /classify`` (vLLM's shape): ``{"input": text | [texts] | [ids] | [[ids]]}`` or
  ``{"messages": conversation}`` -> ``{"id", "object": "list", "created", "model", "data": [{"index",
  "label", "probs": [value], "num_classes": 1}], "usage"}``; ``value`` is ``sigmoid(reward)`` unless
  ``"use_activation": false`` (then the reward itself).
- ``GET /health``: ``{"status": "ok", "model", "pending", "requests", "batches"}`` (requests
  waiting, requests scored so far, and the shared batches they ran in).

Requests are rendered and tokenized in the request's thread; their items then wait in one queue,
and a single model thread takes every request that arrives within ``max_wait_ms`` (up to
``max_batch`` requests and the scorer's token budget) into shared forwards, and answers each
request with its own rewards. Limits: body bytes (413), items per request (413), tokens per item
(422), each answer a JSON ``{"error", "field"}``; malformed JSON is a 400; any other failure is a
500 without a traceback (logged on the server). With an API key every request needs
``Authorization: Bearer KEY`` (401 otherwise; compared in constant time). SIGTERM stops accepting
connections, gives a connection accepted before it ``DRAIN_GRACE_S`` to deliver its request,
answers the requests in flight, logs the drain's account (requests received and answered) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import DataError
from .encoding import ItemTooLongError, message_ok

logger = logging.getLogger(__name__)


@dataclass
class ServerLimits:
    """Request limits and batching settings of the server."""

    max_items: int = 512
    max_item_tokens: int = 8192
    max_body_bytes: int = 16 * 2**20
    max_batch: int = 256
    max_wait_ms: float = 5.0


#: On SIGTERM, connections already accepted whose first request has not been read yet get this long
#: to deliver it (it is then answered) before idle connections are closed.
DRAIN_GRACE_S = 1.0


class RequestError(Exception):
    """A client error: HTTP ``status``, a message and the request ``field`` it concerns."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass
class _Job:
    ids: list[list[int]]
    keys: list[Any]
    by_prefix: bool
    normalize: bool | None
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class DynamicBatcher:
    """One model thread; requests that wait together share forwards (see the module docstring)."""

    def __init__(self, scorer: Any, limits: ServerLimits):
        self.scorer, self.limits = scorer, limits
        self._jobs: list[_Job] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="reward-model", daemon=True)
        self.requests = 0
        self.batches = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the queued jobs, then end the model thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()

    @property
    def pending(self) -> int:
        return len(self._jobs)

    async def submit(
        self, ids: list[list[int]], keys: list[Any], *, by_prefix: bool, normalize: bool | None
    ) -> list[float]:
        loop = asyncio.get_running_loop()
        job = _Job(ids, keys, by_prefix, normalize, loop.create_future(), loop)
        with self._cond:
            self.requests += 1
            self._jobs.append(job)
            self._cond.notify_all()
        return await job.future

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs and not self._stop:
                self._cond.wait()
            if not self._jobs:
                return None
            deadline = time.monotonic() + self.limits.max_wait_ms / 1000
            while len(self._jobs) < self.limits.max_batch and not self._stop:
                tokens = sum(len(s) for job in self._jobs for s in job.ids)
                left = deadline - time.monotonic()
                if left <= 0 or tokens >= self.scorer.token_budget:
                    break
                self._cond.wait(left)
            taken, self._jobs = self._jobs[: self.limits.max_batch], self._jobs[self.limits.max_batch :]
            return taken

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            self._score(jobs)

    def _score(self, jobs: list[_Job]) -> None:
        # Requests asking for the same normalisation share forwards; groups never mix requests' keys
        # unless they are the same prompt (which only saves work: a block's rewards are exact).
        for normalize in {job.normalize for job in jobs}:
            batch = [job for job in jobs if job.normalize == normalize]
            ids, keys = [], []
            for n, job in enumerate(batch):
                ids += job.ids
                keys += [
                    (k if not job.by_prefix else ("prefix", tuple(s[:32]))) for k, s in zip(job.keys, job.ids)
                ]
            try:
                rewards = self.scorer.score_ids(ids, keys, normalize=normalize)
                self.batches += 1
            except Exception as exc:  # one failed batch must answer its requests, not kill the thread
                logger.exception("scoring failed")
                for job in batch:
                    job.loop.call_soon_threadsafe(_set_exception, job.future, exc)
                continue
            start = 0
            for job in batch:
                mine = rewards[start : start + len(job.ids)]
                start += len(job.ids)
                job.loop.call_soon_threadsafe(_set_result, job.future, mine)


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


# ----------------------------------------------------------------------------- request parsing


def _list(body: dict[str, Any], field: str, limits: ServerLimits) -> list[Any]:
    value = body.get(field)
    if not isinstance(value, list) or not value:
        raise RequestError(422, f"'{field}' must be a non-empty list", field)
    if len(value) > limits.max_items:
        raise RequestError(
            413, f"'{field}' has {len(value)} items, more than the limit of {limits.max_items}", field
        )
    return value


def _messages_ok(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(message_ok(m) for m in value)


def _per_item(body: dict[str, Any], field: str, n: int) -> list[Any] | None:
    """A ``/score`` body's ``tools`` or ``chat_template_kwargs``: one value for every item, or a list
    with one entry per item (None when absent). ``tools`` as one value is a list of schema objects
    (or its JSON string); per item it is a list of such lists (or strings, or nulls).
    ``chat_template_kwargs`` as one value is an object; per item a list of objects (or nulls)."""
    value = body.get(field)
    if value is None:
        return None
    shared = (
        isinstance(value, (str, dict))
        if field == "chat_template_kwargs"
        else isinstance(value, str) or (isinstance(value, list) and all(isinstance(t, dict) for t in value))
    )
    if shared:
        return [value] * n
    if not isinstance(value, list) or len(value) != n:
        kind = "an object" if field == "chat_template_kwargs" else "a list of tool schemas"
        raise RequestError(
            422, f"'{field}' must be {kind} for every item, or a list with one entry per item ({n})", field
        )
    return value


def _score_items(body: dict[str, Any], limits: ServerLimits) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """``(prompts, completions, {"tools", "chat_template_kwargs"})`` of a ``/score`` body."""
    prompts, completions = _score_texts(body, limits)
    extras = {field: _per_item(body, field, len(completions)) for field in ("tools", "chat_template_kwargs")}
    return prompts, completions, extras


def _score_texts(body: dict[str, Any], limits: ServerLimits) -> tuple[list[Any], list[Any]]:
    if "messages" in body:
        conversations = _list(body, "messages", limits)
        prompts, completions = [], []
        for k, conversation in enumerate(conversations):
            if not _messages_ok(conversation) or conversation[-1]["role"] != "assistant":
                raise RequestError(
                    422,
                    f"messages[{k}] must be a list of {{'role', 'content'}} messages ending with the assistant's",
                    "messages",
                )
            prompts.append(conversation[:-1] or None)
            completions.append([conversation[-1]])
        return prompts, completions
    completions = _list(body, "completions", limits)
    prompts = body.get("prompts")
    if prompts is None:
        prompts = [None] * len(completions)
    if not isinstance(prompts, list) or len(prompts) != len(completions):
        raise RequestError(422, "'prompts' must be a list with one prompt per completion", "prompts")
    for field, values in (("prompts", prompts), ("completions", completions)):
        for k, v in enumerate(values):
            if not (isinstance(v, str) or _messages_ok(v) or (v is None and field == "prompts")):
                raise RequestError(
                    422, f"{field}[{k}] must be a string or a list of {{'role', 'content'}} messages", field
                )
    return prompts, completions


def _classify_inputs(body: dict[str, Any], limits: ServerLimits) -> tuple[str, list[Any]]:
    """``("texts" | "ids" | "messages", items)`` of a ``/classify`` body."""
    if "messages" in body:
        conversation = body["messages"]
        if not _messages_ok(conversation):
            raise RequestError(422, "'messages' must be a list of {'role', 'content'} messages", "messages")
        return "messages", [conversation]
    value = body.get("input")
    if isinstance(value, str):
        value = [value]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    ):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RequestError(422, "'input' must be a text, a list of texts, or token ids", "input")
    if len(value) > limits.max_items:
        raise RequestError(
            413, f"'input' has {len(value)} items, more than the limit of {limits.max_items}", "input"
        )
    if all(isinstance(t, str) for t in value):
        return "texts", value
    if all(
        isinstance(s, list) and s and all(isinstance(t, int) and not isinstance(t, bool) for t in s)
        for s in value
    ):
        return "ids", value
    raise RequestError(422, "'input' must be a text, a list of texts, or token ids", "input")


# ----------------------------------------------------------------------------- the app


def create_app(
    scorer: Any, *, api_key: str | None = None, limits: ServerLimits | None = None, model_name: str = ""
):
    """The FastAPI app serving ``scorer`` (its batcher starts and stops with the app's lifespan)."""
    limits = limits or ServerLimits()
    batcher = DynamicBatcher(scorer, limits)
    expected = f"Bearer {api_key}".encode() if api_key else None
    vocab = len(scorer.tokenizer)

    traffic = {"received": 0, "answered": 0}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()
            # Logged after uvicorn waited for every request task: the drain's own account.
            log = logger.info if traffic["answered"] == traffic["received"] else logger.warning
            log(
                "drained: answered %d of the %d requests received (%d scored in %d batches)",
                traffic["answered"],
                traffic["received"],
                batcher.requests,
                batcher.batches,
            )

    app = FastAPI(title="reward-plugin reward server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.traffic = traffic

    def error(status: int, message: str, field: str | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "field": field}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any):
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse(
                    {
                        "error": "missing or wrong API key: send 'Authorization: Bearer KEY'",
                        "field": "authorization",
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        try:
            return await call_next(request)
        except RequestError as exc:
            return error(exc.status, exc.message, exc.field)
        except Exception:  # no traceback reaches a client
            logger.exception("request %s %s failed", request.method, request.url.path)
            return error(500, "internal error while scoring; see the server log")

    @app.middleware("http")
    async def counted(request: Request, call_next: Any):  # outermost (added last): sees every answer
        traffic["received"] += 1
        response = await call_next(request)
        traffic["answered"] += 1
        return response

    async def read_json(request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise RequestError(
                413, f"the body is larger than the limit of {limits.max_body_bytes} bytes", "body"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise RequestError(
                    413, f"the body is larger than the limit of {limits.max_body_bytes} bytes", "body"
                )
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"malformed JSON: {exc}", "body") from None
        if not isinstance(body, dict):
            raise RequestError(422, "the body must be a JSON object", "body")
        return body

    def encode(
        prompts: list[Any], completions: list[Any], extras: dict[str, Any] | None = None
    ) -> tuple[list[str], list[list[int]]]:
        try:
            return scorer.encoder.encode(
                prompts, completions, max_tokens=limits.max_item_tokens, **(extras or {})
            )
        except ItemTooLongError as exc:
            raise RequestError(422, str(exc), exc.field) from None
        except DataError as exc:
            message = str(exc)
            field = next(
                (f for f in ("chat_template_kwargs", "tools") if message.startswith(f + "[")), "completions"
            )
            raise RequestError(422, message, field) from None
        except ValueError as exc:  # a chat template refusing the messages
            raise RequestError(422, f"cannot render the messages: {exc}", "messages") from None

    def encode_texts(texts: list[str], field: str) -> list[list[int]]:
        try:
            return scorer.encoder.encode_texts(
                [""] * len(texts), texts, max_tokens=limits.max_item_tokens, field=field
            )
        except ItemTooLongError as exc:
            raise RequestError(422, str(exc), exc.field) from None

    def check_ids(items: list[list[int]], field: str) -> list[list[int]]:
        for k, ids in enumerate(items):
            if len(ids) > limits.max_item_tokens:
                raise RequestError(
                    422,
                    f"{field}[{k}] has {len(ids)} tokens, more than the limit of {limits.max_item_tokens}",
                    field,
                )
            if any(t < 0 or t >= vocab for t in ids):
                raise RequestError(
                    422, f"{field}[{k}] has token ids outside the vocabulary (0..{vocab - 1})", field
                )
        return items

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "pending": batcher.pending,
            "requests": batcher.requests,
            "batches": batcher.batches,
        }

    @app.post("/score")
    async def score(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        prompts, completions, extras = _score_items(body, limits)
        normalize = body.get("normalize")
        if normalize is not None and not isinstance(normalize, bool):
            raise RequestError(422, "'normalize' must be true or false", "normalize")
        keys, ids = await run_in_threadpool(encode, prompts, completions, extras)
        rewards = await batcher.submit(ids, keys, by_prefix=False, normalize=normalize)
        return {"rewards": rewards}

    @app.post("/get_reward")
    async def get_reward(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        texts = _list(body, "query", limits)
        if not all(isinstance(t, str) for t in texts):
            raise RequestError(422, "'query' must be a list of texts", "query")
        ids = await run_in_threadpool(encode_texts, texts, "query")
        rewards = await batcher.submit(ids, list(range(len(ids))), by_prefix=True, normalize=None)
        return {"rewards": rewards, "scores": rewards}

    @app.post("/classify")
    @app.post("/v1/classify")
    async def classify(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        kind, items = _classify_inputs(body, limits)
        activation = body.get("use_activation", True)
        if kind == "texts":
            ids = await run_in_threadpool(encode_texts, items, "input")
        elif kind == "ids":
            ids = check_ids(items, "input")
        else:
            conversation = items[0]
            if conversation[-1]["role"] != "assistant":
                raise RequestError(422, "'messages' must end with the assistant's answer", "messages")
            _, ids = await run_in_threadpool(encode, [conversation[:-1] or None], [[conversation[-1]]])
        rewards = await batcher.submit(ids, list(range(len(ids))), by_prefix=True, normalize=None)
        values = [1 / (1 + math.exp(-r)) if activation is not False else r for r in rewards]
        tokens = sum(len(s) for s in ids)
        return {
            "id": f"classify-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": body.get("model") or model_name,
            "data": [
                {"index": k, "label": "reward", "probs": [v], "num_classes": 1} for k, v in enumerate(values)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }

    return app


def serve(
    scorer: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
    model_name: str = "",
) -> int:
    """Run the server until SIGTERM/SIGINT; in-flight requests are answered first. Returns 0."""
    import uvicorn

    app = create_app(scorer, api_key=api_key, limits=limits, model_name=model_name)

    class _Server(uvicorn.Server):
        # uvicorn re-raises a captured SIGTERM after its graceful shutdown (the process then dies of
        # it); a drained shutdown is a clean exit here, so the signal is consumed.
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self._captured_signals.clear()

        async def shutdown(self, sockets: Any = None) -> None:
            # uvicorn closes at once every connection that has no request in progress, which includes
            # one accepted a moment ago whose request is still on its way: its client would see a
            # reset for a request it had sent. Stop accepting first, then give such connections
            # DRAIN_GRACE_S to deliver their request (it joins the drain and is answered).
            for listener in self.servers:
                listener.close()
            for sock in sockets or []:
                sock.close()
            fresh = [c for c in self.server_state.connections if getattr(c, "cycle", 0) is None]
            logger.info(
                "stopped accepting connections; %d open, %d without a request yet (waiting up to %.1f s)",
                len(self.server_state.connections),
                len(fresh),
                DRAIN_GRACE_S,
            )
            deadline = time.monotonic() + DRAIN_GRACE_S
            while time.monotonic() < deadline and any(
                getattr(c, "cycle", 0) is None and c in self.server_state.connections for c in fresh
            ):
                await asyncio.sleep(0.01)
            await super().shutdown()

    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False, lifespan="on")
    server = _Server(config)
    logger.info("serving on http://%s:%d (POST /score, /get_reward, /classify; GET /health)", host, port)
    server.run()
    return 0
