"""Chat templates and the rendering of a :class:`PreferencePair` into prompt/chosen/rejected text.

Templates run only in a guarded :class:`jinja2.sandbox.ImmutableSandboxedEnvironment`: access to
Python internals is an immediate error (not a silent empty string), and every render has budgets
for loop iterations, calls, output size and time, so a hostile or broken template fails fast with
a :class:`TemplateError` naming the template.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .chat_inputs import has_tool_calls, template_messages
from .errors import RecordError, TemplateError, UnsafeTemplateError
from .records import Content, Message, PreferencePair

#: Name of the template used for conversational pairs when none is given.
DEFAULT_TEMPLATE = "hh-rlhf"
#: ``load_chat_template("tokenizer", tok)`` uses the tokenizer's own ``chat_template``.
TOKENIZER_SPEC = "tokenizer"

# Budgets of one render (generous for real chat templates, fatal for runaway ones).
MAX_ITERATIONS = 200_000  # total items of every range() in one render
MAX_CALLS = 200_000  # function/method/filter calls in one render
MAX_OUTPUT_CHARS = 4_000_000  # characters of output (and of any string/list a call builds)
MAX_SECONDS = 5.0  # wall time of one render


class TemplateRowError(TemplateError, RecordError):
    """A template refused one row (``raise_exception``, e.g. turns that do not alternate).

    It is both a :class:`TemplateError` and a :class:`RecordError` (reason ``template_error``),
    so the pipeline can count the row as rejected instead of stopping.
    """


@dataclass(frozen=True)
class RenderedPair:
    """A pair as text. ``chosen`` and ``rejected`` both start with ``prompt``.

    Attributes:
        prompt: the shared text prefix ("" when the prompt is implicit).
        chosen: the full chosen text.
        rejected: the full rejected text.
    """

    prompt: str
    chosen: str
    rejected: str


class _Budget:
    def __init__(self, name: str):
        self.name = name
        self.iterations = 0
        self.calls = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def fail(self, what: str, *, fatal: bool = True) -> None:
        """Stop the render. ``fatal``: the template itself is at fault (loops, calls, time, bombs),
        which stops a conversion; otherwise (output size, which grows with the row) only this row
        is rejected."""
        cls = UnsafeTemplateError if fatal else TemplateError
        raise cls(f"chat template {self.name!r}: {what}; is the template looping or building huge values?")

    def tick(self) -> None:
        self.calls += 1
        if self.calls > MAX_CALLS:
            self.fail(f"more than {MAX_CALLS} calls in one render")
        if time.monotonic() > self.deadline:
            self.fail(f"rendering took longer than {MAX_SECONDS:g}s")

    def check_args(self, args: tuple, kwargs: Mapping[str, Any]) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OUTPUT_CHARS:
                self.fail(f"argument {value!r} exceeds the limit {MAX_OUTPUT_CHARS}")

    def check_size(self, value: Any) -> Any:
        if isinstance(value, (str, list, tuple, dict)) and len(value) > MAX_OUTPUT_CHARS:
            self.fail(f"a value of {len(value)} items exceeds the limit {MAX_OUTPUT_CHARS}", fatal=False)
        return value


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _current() -> _Budget:
    budget = _budget.get()
    return budget if budget is not None else _Budget("<template>")


def _guarded_range(*args: int) -> range:
    budget = _current()
    budget.tick()
    rng = range(*args)
    budget.iterations += len(rng)
    if budget.iterations > MAX_ITERATIONS:
        budget.fail(f"range() loops exceed {MAX_ITERATIONS} iterations in one render")
    return rng


def _guard_filter(func):
    def guarded(*args, **kwargs):
        budget = _current()
        budget.tick()
        budget.check_args(args[1:] if args else args, kwargs)
        return budget.check_size(func(*args, **kwargs))

    for attr in ("jinja_pass_arg",):  # keep pass_context/pass_environment markers
        if hasattr(func, attr):
            setattr(guarded, attr, getattr(func, attr))
    return guarded


class _NoFilesLoader(jinja2.BaseLoader):
    """Templates may not import, include or extend anything: there are no files to reach."""

    def get_source(self, environment: jinja2.Environment, template: str):
        _current().fail(
            f"{{% import/include/extends {template!r} %}} is not allowed: templates cannot reach files; "
            "inline what you need"
        )


class _GuardedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(
            loader=_NoFilesLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            undefined=jinja2.Undefined,
            extensions=[jinja2.ext.loopcontrols, _GenerationExtension],
        )
        self.globals["range"] = _guarded_range
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.filters["tojson"] = _tojson
        self.filters = {name: _guard_filter(f) for name, f in self.filters.items()}

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # The default returns an Undefined that prints as "" - a template probing internals
        # would then render silently wrong. Fail at once instead.
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is not allowed"
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        if time.monotonic() > _current().deadline:
            _current().fail(f"rendering took longer than {MAX_SECONDS:g}s")
        return super().getattr(obj, attribute)

    def call(self, context, obj, /, *args, **kwargs):
        budget = _current()
        budget.tick()
        budget.check_args(args, kwargs)
        return budget.check_size(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context, operator, left, right):
        budget = _current()
        budget.tick()
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            budget.fail(f"exponent {right!r} is too large")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, (str, list, tuple)) and isinstance(count, int)
                if sized and len(seq) * count > MAX_OUTPUT_CHARS:
                    budget.fail(f"repeating a value {count} times exceeds the limit {MAX_OUTPUT_CHARS}")
        return super().call_binop(context, operator, left, right)


class _GenerationExtension(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (used by some HF templates) renders its body."""

    tags = frozenset({"generation"})

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


class _TemplateRaised(Exception):
    pass


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(str(message))


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False
):
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


_ENV: _GuardedEnvironment | None = None


def _env() -> _GuardedEnvironment:
    global _ENV
    if _ENV is None:
        _ENV = _GuardedEnvironment()
    return _ENV


class ChatTemplate:
    """A compiled chat template.

    Attributes:
        name: the shipped name, file path or ``tokenizer:<name>`` the template came from.
        source: the Jinja2 source text.
    """

    def __init__(self, name: str, source: str):
        self.name = name
        self.source = source
        try:
            self._template = _env().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"chat template {name!r}: syntax error on line {exc.lineno}: {exc.message}"
            ) from exc

    def __repr__(self) -> str:
        return f"ChatTemplate({self.name!r})"

    def __reduce__(self):
        # Compiled Jinja templates do not pickle; worker processes (spawn) recompile the source.
        return (ChatTemplate, (self.name, self.source))

    def render(
        self,
        messages: list[Message],
        add_generation_prompt: bool = False,
        *,
        tools: list[dict[str, Any]] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        **special_tokens: Any,
    ) -> str:
        """Render ``messages`` to text.

        The template sees what transformers' ``apply_chat_template`` gives it: ``messages`` (reasoning
        text under all the names templates read), ``tools``, ``add_generation_prompt``, the special
        tokens, and then ``template_kwargs``, which may override the special tokens.

        Args:
            messages: ``{"role", "content"}`` dicts (plus tool-call fields).
            add_generation_prompt: end with the header that starts an assistant turn.
            tools: tool schemas, the template's ``tools`` (None when there are none).
            template_kwargs: extra template variables (a row's ``chat_template_kwargs``).
            **special_tokens: template variables such as ``bos_token``/``eos_token`` (default "").

        Returns:
            The rendered text.

        Raises:
            TemplateRowError: the template called ``raise_exception`` (a problem of this row).
            UnsafeTemplateError: the template reached for Python internals or exceeded a loop, call,
                time or recursion budget (a conversion stops).
            TemplateError: the template failed on these messages or its output is too large.
        """
        variables = {"bos_token": "", "eos_token": "", **special_tokens}
        variables = {k: ("" if v is None and k.endswith("_token") else v) for k, v in variables.items()}
        variables.update(template_kwargs or {})
        budget = _Budget(self.name)
        token = _budget.set(budget)
        try:
            out: list[str] = []
            size = 0
            for chunk in self._template.generate(
                messages=template_messages(messages),
                tools=tools,
                add_generation_prompt=add_generation_prompt,
                **variables,
            ):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    budget.fail(f"output exceeds {MAX_OUTPUT_CHARS} characters", fatal=False)
                out.append(chunk)
            return "".join(out)
        except TemplateError:
            raise
        except _TemplateRaised as exc:
            raise TemplateRowError(
                f"chat template {self.name!r} refused the messages: {exc}",
                field="messages",
                reason="template_error",
            ) from exc
        except SecurityError as exc:
            raise UnsafeTemplateError(
                f"chat template {self.name!r} is unsafe: {exc}; templates run in a sandbox, use only "
                "messages, their role/content and the documented helpers"
            ) from exc
        except RecursionError as exc:
            raise UnsafeTemplateError(f"chat template {self.name!r}: recursion too deep") from exc
        except Exception as exc:  # a template bug (type error, undefined call, ...)
            raise TemplateError(
                f"chat template {self.name!r} failed: {type(exc).__name__}: {exc}; fix the template or pick a "
                "shipped one (see templates/README.md)"
            ) from exc
        finally:
            _budget.reset(token)


def templates_dir() -> Path:
    """The folder of shipped ``*.jinja`` templates (wheel: package data; editable: repo root)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    return here / "templates"


def list_templates() -> list[str]:
    """Names of the shipped templates (``chatml``, ``llama3``, ...)."""
    return sorted(p.stem for p in templates_dir().glob("*.jinja"))


_loaded: dict[str, ChatTemplate] = {}


def load_chat_template(spec: str | None, tokenizer: Any = None) -> ChatTemplate | None:
    """Load a chat template.

    Args:
        spec: a shipped template name (see :func:`list_templates`), a path to a ``.jinja`` file,
            or ``"tokenizer"`` for ``tokenizer.chat_template``. None returns None.
        tokenizer: the tokenizer whose template ``"tokenizer"`` means.

    Returns:
        The compiled template, or None when ``spec`` is None.

    Raises:
        TemplateError: unknown name (listing the shipped ones), unreadable file, a tokenizer
            without a chat template, or a syntax error.
    """
    if spec is None:
        return None
    spec = str(spec)
    if spec == TOKENIZER_SPEC:
        return _from_tokenizer(tokenizer)
    shipped = templates_dir() / f"{spec}.jinja"
    if "/" not in spec and "\\" not in spec and not spec.endswith(".jinja"):
        if not shipped.is_file():
            raise TemplateError(
                f"unknown chat template {spec!r}; shipped templates: {', '.join(list_templates())}, "
                f"or give a path to a .jinja file, or {TOKENIZER_SPEC!r} for the tokenizer's own template"
            )
        path = shipped
    else:
        path = Path(spec).expanduser()
    key = f"{path.resolve()}:{path.stat().st_mtime_ns}" if path.is_file() else str(path)
    if key in _loaded:
        return _loaded[key]
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"chat template file {str(path)!r} cannot be read: {exc}") from exc
    template = ChatTemplate(spec if path == shipped else str(path), source)
    _loaded[key] = template
    return template


def effective_template_spec(spec: str | None, tokenizer: Any) -> str | None:
    """The template a conversion uses: ``spec``, or when it is None the tokenizer's own.

    A chat model's reward is read on text in the model's own chat format, so without an explicit
    choice conversational pairs go through ``tokenizer.chat_template`` when the tokenizer has one
    (``"tokenizer"``) and through the plain hh-rlhf style (None) when it has none.
    """
    if spec is not None:
        return spec
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, dict):
        source = source.get("default")
    return TOKENIZER_SPEC if source else None


def _from_tokenizer(tokenizer: Any) -> ChatTemplate:
    if tokenizer is None:
        raise TemplateError(f"chat template {TOKENIZER_SPEC!r} needs a tokenizer; pass --tokenizer")
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    source = getattr(tokenizer, "chat_template", None)
    if isinstance(source, dict):  # named templates: use "default"
        source = source.get("default")
    if not source:
        raise TemplateError(
            f"tokenizer {name!r} has no chat_template; pick a shipped one: {', '.join(list_templates())}"
        )
    return ChatTemplate(f"{TOKENIZER_SPEC}:{name}", source)


def _hh_render(messages: list[Message], add_generation_prompt: bool) -> str:
    # Same output as templates/hh-rlhf.jinja, without Jinja (the default path must be fast).
    parts = []
    for m in messages:
        role = m["role"]
        if has_tool_calls(m):
            raise RecordError(
                "an assistant message calls tools, which the plain hh-rlhf style cannot show; "
                "pass --chat-template (a template that renders tool calls, e.g. qwen3 or tokenizer)",
                field="tool_calls",
                reason="needs_chat_template",
                value=m["tool_calls"],
            )
        if role == "user":
            parts.append("\n\nHuman: " + m["content"])
        elif role == "assistant":
            parts.append("\n\nAssistant: " + m["content"])
        elif role == "system":
            parts.append(m["content"])
        else:
            raise RecordError(
                f"hh-rlhf transcripts have no role {role!r}", field="role", reason="unknown_role", value=role
            )
    if add_generation_prompt:
        parts.append("\n\nAssistant:")
    return "".join(parts)


def _as_messages(value: Content) -> list[Message]:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    return list(value)


def _text(value: Content | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return "".join(str(m.get("content") or "") for m in value)


def _common_prefix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return a[:i]


def render_pair(
    pair: PreferencePair,
    template: ChatTemplate | None,
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> RenderedPair:
    """Render a pair to text.

    Plain-text pairs are concatenated (``prompt + chosen``); a template is not applied to them.
    Conversational pairs go through ``template``, or the plain hh-rlhf style when it is None, so
    hh-rlhf transcripts come back exactly as they were read.

    Args:
        pair: the adapter's pair.
        template: the chat template for conversational pairs, or None.
        bos_token: value of ``bos_token`` inside the template ("" when None).
        eos_token: value of ``eos_token`` inside the template ("" when None).

    Returns:
        A :class:`RenderedPair` whose ``chosen`` and ``rejected`` start with ``prompt``.
    """
    if not pair.is_conversational():
        prompt = _text(pair.prompt)
        return RenderedPair(prompt, prompt + _text(pair.chosen), prompt + _text(pair.rejected))

    tokens = {"bos_token": bos_token, "eos_token": eos_token}
    if template is None and (pair.tools or pair.chat_template_kwargs):
        field = "tools" if pair.tools else "chat_template_kwargs"
        raise RecordError(
            f"the row gives {field}, which only a chat template can use, but the plain hh-rlhf style is "
            "rendering it; pass --chat-template (e.g. tokenizer)",
            field=field,
            reason="needs_chat_template",
        )
    if template is None:

        def render(msgs: list[Message], gen: bool) -> str:
            return _hh_render(msgs, gen)
    else:

        def render(msgs: list[Message], gen: bool) -> str:
            return template.render(
                msgs,
                add_generation_prompt=gen,
                tools=pair.tools,
                template_kwargs=pair.chat_template_kwargs,
                **tokens,
            )

    chosen_msgs = _as_messages(pair.chosen)
    rejected_msgs = _as_messages(pair.rejected)
    if pair.prompt is None or pair.prompt == [] or pair.prompt == "":
        return RenderedPair("", render(chosen_msgs, False), render(rejected_msgs, False))
    prompt_msgs = (
        [{"role": "user", "content": pair.prompt}] if isinstance(pair.prompt, str) else list(pair.prompt)
    )
    chosen = render(prompt_msgs + chosen_msgs, False)
    rejected = render(prompt_msgs + rejected_msgs, False)
    prompt = render(prompt_msgs, True)
    if not (chosen.startswith(prompt) and rejected.startswith(prompt)):
        # Some templates rewrite earlier turns once an answer follows; fall back to the text
        # both renderings share so the prefix guarantee still holds.
        prompt = _common_prefix(chosen, rejected)
    return RenderedPair(prompt, chosen, rejected)
