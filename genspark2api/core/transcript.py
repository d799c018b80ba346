"""A conversation as the text turns Genspark is sent (pure).

Genspark takes system, user and assistant messages of text (and media parts); it has no tool
roles (genspark-protocol.md §6). Tool calls of earlier assistant turns are written in the tool
envelope and tool results become user turns, so the whole history stays coherent for the model.
"""

from __future__ import annotations

import hashlib

from .conversation import Turn
from .toolprompt import render_assistant_tool_calls, render_tool_result


def turn_text(turn: Turn) -> str:
    """The text of a turn as Genspark sees it: calls in the envelope, results introduced."""
    if turn.role == "assistant" and turn.calls:
        return render_assistant_tool_calls(turn.text or None, [(c.id, c.name, c.arguments) for c in turn.calls])
    if turn.role == "tool":
        text = ("[error] " if turn.is_error else "") + turn.text
        return render_tool_result(turn.call_id or "", turn.name, text)
    return turn.text


def history_entry(turn: Turn) -> tuple[str, str]:
    """(role, text) of a turn as the conversation binding sees it (bindings.conversation_key).

    Its images and files count too, by a digest of what the client sent: two conversations with
    the same words about different pictures are two conversations, each with its own project.
    """
    text = turn_text(turn)
    if turn.media:
        digest = hashlib.sha256("\x00".join(ref.url for ref in turn.media).encode()).hexdigest()[:32]
        text += f"\x00media:{digest}"
    return turn.role, text


def upstream_turns(
    turns: tuple[Turn, ...],
    *,
    pre_messages: tuple[tuple[str, str], ...],
    instructions: tuple[str, ...] = (),
) -> list[tuple[int | None, str, str]]:
    """(conversation turn index or None, upstream role, text) for every turn sent upstream.

    `PRE_MESSAGES_JSON` and our own instructions (tools, output format) go right after the last
    system turn (genspark-protocol.md §5.7); a tool result is a user turn.
    """
    out: list[tuple[int | None, str, str]] = []
    names: dict[str, str] = {}
    for i, turn in enumerate(turns):
        for call in turn.calls:
            names[call.id] = call.name
        if turn.role == "tool" and turn.name is None and turn.call_id in names:
            turn = Turn("tool", turn.parts, call_id=turn.call_id, name=names[turn.call_id], is_error=turn.is_error)
        role = "user" if turn.role == "tool" else turn.role
        out.append((i, role, turn_text(turn)))
    insert_at = max((k + 1 for k, t in enumerate(out) if t[1] == "system"), default=0)
    extra: list[tuple[int | None, str, str]] = [
        (None, "system" if role in ("system", "developer") else role, text) for role, text in pre_messages
    ]
    extra += [(None, "system", text) for text in instructions if text]
    return out[:insert_at] + extra + out[insert_at:]


def before_latest_turn(history: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The conversation before the newest user/tool turns: what the previous answer ended."""
    end = len(history)
    while end > 0 and history[end - 1][0] != "assistant":
        end -= 1
    return history[:end]
