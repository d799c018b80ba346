"""The simulated language model: a conversation in, a deterministic answer out. Pure.

Answers are obviously fake (``[simulated <model>] You said: …``) so that nobody mistakes a demo
for Genspark, and predictable so that tests can assert on them. What the answer contains is
driven by the request, mirroring what a service built on genspark-protocol.md sends upstream:

* the last user question is echoed, with ``(turn <n> of this conversation)`` when the project
  already holds earlier turns (project memory, §2.1 / §5.5);
* attachments in the question (``image_url`` data URLs, ``private_file`` parts pointing at an
  uploaded blob, §2.1 "Content parts") are acknowledged with their byte sizes;
* tool calling follows the ``<tool_call>`` tag protocol of §6.2: a system message that mentions
  ``<tool_call>`` and lists tools as JSON objects with a ``"name"`` offers them, and the model
  calls one only when the question gives it a reason (issue #11: a plain "Hello there" with
  Open WebUI's 28 tools is answered in text): the question names the tool, or shares a word
  with its name (``weather`` for ``get_weather``; not with its description, since agents'
  descriptions hold nearly every common word), or the instruction says it
  MUST call (a named tool, else the first relevant or the first offered). It calls the first
  relevant tool; two (the first two relevant, or the one twice) if the question says
  ``parallel``; a broken block if it says ``malformed``; a tool that was not offered if it says
  ``unknown``; with ``prose`` the block sits between a sentence before and one after it. Asked
  for ``xml``, ``llama`` or ``fenced``, it writes its calls the way strong models do by habit
  instead of in the envelope asked for: Claude's ``<function_calls><invoke>`` XML, Llama 3.1's
  ``<function=name>{…}</function>``, or a JSON envelope in a json code fence. A tool result
  after the question (a ``tool`` message or text starting with ``Tool result``) is answered in
  prose quoting it;
* reasoning models think first (§3.4.2), search models cite sources (§3.4.3), and
  Mixture-of-Agents requests produce one draft per model (§5.2);
* a request whose system message asks for structured output is answered with JSON that fits
  the schema it shows (structured.py, issue #11), unless the answer is a tool call.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .state import TaskOutcome
from .structured import JsonRequest, Quality, find_json_request, json_answer

# §3.4.2 / §5.1: ids that show an answerthink block. "-pro" covers o3-pro, gpt-5-pro, gpt-5.2-pro.
REASONING_MARKERS = ("thinking", "deep-seek-r1", "o3", "o4-mini-high", "-pro", "reasoning")
# §3.3: these models did not stream; the answer arrives whole as a message_field field_value.
WHOLE_ANSWER_MODELS = frozenset({"o1", "o3-mini-high"})
# §3.4.3: o1 with search answers with a JSON document in message_result.content.
DETAIL_ANSWER_MODELS = frozenset({"o1"})

TOOL_TAG = "<tool_call>"
STORAGE_URL_PREFIX = "https://sim-storage/"


def is_reasoning_model(model: str) -> bool:
    lowered = model.lower()
    if "non-reasoning" in lowered:  # grok-4.20-…-non-reasoning must not think
        return False
    return any(marker in lowered for marker in REASONING_MARKERS)


def storage_url_for(key: str) -> str:
    """The ``private_storage_url`` handed out with an upload slot (§2.5); it names the blob key."""
    return STORAGE_URL_PREFIX + key


def key_of_storage_url(url: str) -> str | None:
    return url[len(STORAGE_URL_PREFIX):] if url.startswith(STORAGE_URL_PREFIX) else None


def message_text(content: Any) -> str:
    """The text of an OpenAI-style content value: a string, or the ``text`` parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def _is_tool_result(role: str | None, text: str) -> bool:
    # §6.2: 10020099 turns a tool message into "Tool result (tool_call_id=…):\n…"; PR #41 (§6.1)
    # writes "[Tool Result for …]: …".
    return role == "tool" or text.lstrip("[ ").lower().startswith("tool result")


@dataclass(frozen=True)
class Conversation:
    """What the simulated model looks at in a request's ``messages``."""

    question: str = ""
    question_content: Any = None
    tool_results: tuple[str, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    must_call: bool = False  # the instruction says a tool MUST be called
    must_call_tool: str | None = None  # ... and which
    json_request: JsonRequest | None = None

    @classmethod
    def from_messages(cls, messages: Sequence[tuple[str | None, Any]]) -> Conversation:
        """``messages`` are ``(role, content)`` pairs in request order."""
        question, question_content, question_index = "", None, -1
        for index, (role, content) in enumerate(messages):
            text = message_text(content)
            if role == "user" and not _is_tool_result(role, text):
                question, question_content, question_index = text, content, index
        results = tuple(
            message_text(content)
            for role, content in messages[question_index + 1 :]
            if _is_tool_result(role, message_text(content))
        )
        instructions = [message_text(c) for role, c in messages if role == "system" and TOOL_TAG in message_text(c)]
        tools = tuple(tool for text in instructions for tool in find_tool_definitions(text))
        forced = [m for text in instructions for m in _MUST_CALL.finditer(text)]
        named = next((m["name"] for m in forced if m["name"]), None)
        json_request = find_json_request([message_text(c) for role, c in messages if role == "system"])
        return cls(question, question_content, results, tools, bool(forced), named, json_request)


def find_tool_definitions(text: str) -> list[dict[str, Any]]:
    """Tool definitions embedded as JSON anywhere in ``text``, in order of appearance.

    A definition is an object with a string ``name`` (OpenAI ``{"type": "function", "function":
    {...}}`` wrappers are unwrapped). Objects that carry ``arguments`` are example *calls* inside the
    instructions and are skipped.
    """
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    index = 0
    while index < len(text):
        if text[index] not in "[{":
            index += 1
            continue
        try:
            value, end = decoder.raw_decode(text, index)
        except ValueError:
            index += 1
            continue
        found.extend(_tools_in(value))
        index = end
    return found


def _tools_in(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [tool for item in value for tool in _tools_in(item)]
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("function"), dict) and isinstance(value["function"].get("name"), str):
        return [value["function"]]
    if isinstance(value.get("name"), str) and "arguments" not in value:
        return [value]
    return [tool for item in value.values() for tool in _tools_in(item)]


# toolprompt.render_tool_instruction: 'you MUST call the tool "x"' / 'you MUST call at least one tool'.
_MUST_CALL = re.compile(r'MUST call (?:the tool "(?P<name>[^"]+)"|at least one tool|one tool)')
# Words that give no reason to call anything: greetings, fillers, and the glue of descriptions.
_NO_REASON = frozenset({
    "hello", "there", "thanks", "thank", "please", "could", "would", "should", "about", "with",
    "from", "that", "this", "what", "which", "when", "where", "your", "yours", "have", "will",
    "just", "tell", "give", "some", "them", "they", "their", "then", "than", "into", "only",
    "also", "more", "most", "very", "much", "many", "each", "other", "such", "like", "make",
    "need", "want", "know", "here", "okay", "sure", "good", "great", "nice", "does", "done",
    "using", "used", "uses", "return", "returns", "given",
})


def _words(text: str) -> set[str]:
    # camelCase and snake_case names count word by word: GetWeather and get_weather say "weather".
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return {w for w in re.findall(r"[a-z0-9]+", spaced.lower()) if len(w) >= 4 and w not in _NO_REASON}


def relevant_tools(tools: Sequence[Mapping[str, Any]], question: str) -> list[Mapping[str, Any]]:
    """The offered tools the question gives a reason to call, in the order offered."""
    asked = _words(question)
    lowered = question.lower()
    return [
        tool for tool in tools
        if tool["name"].lower() in lowered
        or asked & _words(tool["name"])
    ]


def example_arguments(tool: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments for a call to ``tool``: strings ``"sim"``, numbers ``1``, booleans ``true``."""
    schema = tool.get("parameters") or tool.get("input_schema") or {}
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    return {name: _example_value(spec) for name, spec in properties.items()} if isinstance(properties, dict) else {}


def _example_value(spec: Any) -> Any:
    kind = spec.get("type") if isinstance(spec, dict) else None
    if isinstance(kind, list):  # e.g. ["string", "null"]
        kind = next((k for k in kind if k != "null"), None)
    return {"number": 1, "integer": 1, "boolean": True, "array": [], "object": {}}.get(kind, "sim")


def tool_call_block(tool: Mapping[str, Any], form: str = "envelope") -> str:
    """One call of ``tool`` written in ``form``: the ``envelope`` asked for, or a habit form
    (``xml``, ``llama``, ``fenced``) that the service must read just the same."""
    name, arguments = tool["name"], example_arguments(tool)
    if form == "xml":
        values = "".join(
            f'\n<parameter name="{k}">{v if isinstance(v, str) else json.dumps(v)}</parameter>'
            for k, v in arguments.items()
        )
        return f'<function_calls>\n<invoke name="{name}">{values}\n</invoke>\n</function_calls>'
    if form == "llama":
        return f"<function={name}>{json.dumps(arguments)}</function>"
    call = json.dumps({"name": name, "arguments": arguments})
    if form == "fenced":
        return f"```json\n{call}\n```"
    return f"{TOOL_TAG}{call}</tool_call>"


MALFORMED_TOOL_CALL = '<tool_call>{"name": broken json</tool_call>'
PROSE_BEFORE_CALL = "Let me look that up for you."
PROSE_AFTER_CALL = "I will answer as soon as the tool replies."
UNOFFERED_TOOL = "sim_unoffered_tool"


@dataclass(frozen=True)
class SearchResult:
    title: str
    link: str
    snippet: str

    def as_json(self) -> dict[str, str]:
        return {"title": self.title, "link": self.link, "snippet": self.snippet}


@dataclass(frozen=True)
class Answer:
    """Everything a stream builder needs to narrate one assistant message."""

    label: str  # the model name the answer claims to come from
    text: str
    thinking: tuple[str, ...] = ()
    drafts: tuple[tuple[str, str], ...] = ()  # Mixture-of-Agents: (model, draft text)
    search_results: tuple[SearchResult, ...] = ()
    is_tool_call: bool = False
    question: str = field(default="", repr=False)


def model_label(models: Sequence[str]) -> str:
    if len(models) > 1:
        return "mixture-of-agents: " + ", ".join(models)
    return models[0] if models else "unknown-model"


def compose_answer(
    conversation: Conversation,
    models: Sequence[str],
    *,
    search: bool,
    earlier_turns: int,
    uploads: Mapping[str, bytes],
    label: str | None = None,
    recalled: str | None = None,
    json_quality: Quality = "right",
) -> Answer:
    """The simulated answer to ``conversation`` from ``models`` (the models actually used).

    ``label`` overrides the model name the text claims (ask_proxy: the served model, or its MoA
    label); ``recalled`` is the project's first user turn, quoted on a follow-up to show that
    the server kept the history (§12.3).
    """
    label = label or model_label(models)
    question = conversation.question
    is_tool_call = False
    if conversation.tool_results:
        text = f"[simulated {label}] The tool returned: " + "; ".join(conversation.tool_results)
    elif conversation.tools and (called := _tools_to_call(conversation)):
        text, is_tool_call = _tool_call_text(called, conversation.tools, question), True
    else:
        text = f"[simulated {label}] You said: {question}"
        text += _attachment_note(conversation.question_content, uploads)
        if earlier_turns:
            text += f" (turn {earlier_turns + 1} of this conversation)"
        if recalled is not None:
            text += f" Earlier you said: {recalled}"
    results = _search_results(question) if search else ()
    if results and not is_tool_call:
        text += f" [1]({results[0].link})"
    if conversation.json_request is not None and not is_tool_call:
        text = json_answer(conversation.json_request, text, json_quality)
    thinking = ()
    if any(is_reasoning_model(model) for model in models):
        words = len(question.split())
        thinking = (f"Simulated reasoning: the question has {words} words.", " Echo it back faithfully.")
    drafts = tuple((m, f"[simulated {m} draft] You said: {question}") for m in models) if len(models) > 1 else ()
    return Answer(label, text, thinking, drafts, results, is_tool_call, question)


def _tools_to_call(conversation: Conversation) -> list[Mapping[str, Any]]:
    """The tools the model calls, most wanted first; empty: it answers in text."""
    tools = conversation.tools
    named = [t for t in tools if t["name"] == conversation.must_call_tool]
    relevant = relevant_tools(tools, conversation.question)
    if named:
        return named + [t for t in relevant if t is not named[0]]
    if conversation.must_call and not relevant:
        return list(tools[:1])
    return relevant


def _tool_call_text(called: Sequence[Mapping[str, Any]], offered: Sequence[Mapping[str, Any]], question: str) -> str:
    words = set(re.findall(r"[a-z]+", question.lower()))
    form = next((f for f in ("xml", "llama", "fenced") if f in words), "envelope")
    if "malformed" in words:
        block = MALFORMED_TOOL_CALL
    elif "unknown" in words:
        name = UNOFFERED_TOOL
        while name in {tool["name"] for tool in offered}:
            name += "_2"
        block = tool_call_block({"name": name}, form)
    elif "parallel" in words:
        second = called[1] if len(called) > 1 else called[0]
        if form == "xml":  # one <function_calls> block holds both invokes, as Claude writes them
            first, other = tool_call_block(called[0], form), tool_call_block(second, form)
            block = first.removesuffix("\n</function_calls>") + other.removeprefix("<function_calls>")
        else:
            block = tool_call_block(called[0], form) + "\n" + tool_call_block(second, form)
    else:
        block = tool_call_block(called[0], form)
    if "prose" in words:
        return f"{PROSE_BEFORE_CALL}\n{block}\n{PROSE_AFTER_CALL}"
    return block


def _search_results(question: str) -> tuple[SearchResult, ...]:
    slug = "-".join(re.findall(r"[a-z0-9]+", question.lower())[:4]) or "query"
    return tuple(
        SearchResult(
            f"Simulated source {n} about {question[:40] or 'nothing'}",
            f"https://example.org/sim/{slug}/{n}",
            f"Snippet {n}: a simulated page that mentions the question.",
        )
        for n in (1, 2, 3)
    )


def _attachment_note(content: Any, uploads: Mapping[str, bytes]) -> str:
    if not isinstance(content, list):
        return ""
    notes = [note for part in content if isinstance(part, dict) and (note := _describe_part(part, uploads))]
    return f" [attachments: {'; '.join(notes)}]" if notes else ""


def _describe_part(part: Mapping[str, Any], uploads: Mapping[str, bytes]) -> str | None:
    if part.get("type") == "image_url":
        url = (part.get("image_url") or {}).get("url", "")
        if isinstance(url, str) and url.startswith("data:") and "," in url:
            try:
                size = len(base64.b64decode(url.split(",", 1)[1], validate=False))
            except (binascii.Error, ValueError):
                return "image (undecodable data URL)"
            return f"image ({size} bytes)"
        return "image (link)"
    if part.get("type") == "private_file":
        file = part.get("private_file") or {}
        key = key_of_storage_url(str(file.get("private_storage_url", "")))
        name = file.get("name", "file")
        if key is not None and key in uploads:
            return f"file {name} ({len(uploads[key])} bytes uploaded)"
        return f"file {name} (not uploaded)"
    return None


def task_outcomes(prompt: str, count: int) -> list[TaskOutcome]:
    """How each of ``count`` generation tasks ends: ``never``, ``fail-all`` or ``fail-one`` in the
    prompt (whole words), else all succeed."""
    words = prompt.lower()
    if re.search(r"\bnever\b", words):
        return [TaskOutcome.NEVER] * count
    if re.search(r"\bfail-all\b", words):
        return [TaskOutcome.FAILURE] * count
    if re.search(r"\bfail-one\b", words):
        return [TaskOutcome.SUCCESS] * (count - 1) + [TaskOutcome.FAILURE]
    return [TaskOutcome.SUCCESS] * count
