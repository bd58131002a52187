"""The official `openai` SDK, unchanged, against the router.

Run by the Rust end-to-end suite with OPENAI_BASE_URL pointing at a running router whose channel
serves the model named in LLMR_MODEL from a fake upstream. LLMR_UPSTREAM_CALLS_TOOLS=1 adds the
tool-calling checks (plain, streamed arguments assembled by index, tool results sent back), for
upstreams that answer a request with tools by calling them. Exits non-zero on the first failure.
"""

import json
import os
import sys

import openai
from openai import OpenAI

MODEL = os.environ.get("LLMR_MODEL", "gpt-4o-mini")
EMBED_MODEL = os.environ.get("LLMR_EMBED_MODEL", "text-embedding-3-small")
CALLS_TOOLS = os.environ.get("LLMR_UPSTREAM_CALLS_TOOLS") == "1"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string", "description": "The city, e.g. Paris"}},
                "required": ["location"],
            },
        },
    }
]
ASK = {"role": "user", "content": "What is the weather in Paris and London?"}


def check_tools(client: OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=[ASK], tools=TOOLS)
    msg = r.choices[0].message
    assert msg.tool_calls and r.choices[0].finish_reason == "tool_calls", r
    assert all(json.loads(c.function.arguments).get("location") for c in msg.tool_calls), msg.tool_calls
    assert len({c.id for c in msg.tool_calls}) == len(msg.tool_calls), "tool call ids repeat"

    calls = {}
    for chunk in client.chat.completions.create(model=MODEL, messages=[ASK], tools=TOOLS, stream=True):
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            if tc.function and tc.function.name:
                entry["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                entry["arguments"] += tc.function.arguments
    assert calls and all(c["name"] == "get_weather" for c in calls.values()), calls
    assert all(json.loads(c["arguments"]).get("location") for c in calls.values()), calls

    results = [{"role": "tool", "tool_call_id": c.id, "content": "18C"} for c in msg.tool_calls]
    follow = client.chat.completions.create(
        model=MODEL, messages=[ASK, msg.model_dump(exclude_none=True), *results], tools=TOOLS, tool_choice="none"
    )
    assert follow.choices[0].message.content, follow


def main() -> int:
    client = OpenAI(max_retries=0, timeout=30)

    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], max_tokens=16
    )
    assert chat.choices[0].message.content, chat
    assert chat.usage is not None and chat.usage.total_tokens > 0, chat.usage

    pieces = []
    usage = None
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces), "streamed no text"
    assert usage is not None and usage.completion_tokens > 0, "no usage chunk though include_usage was asked"

    # Without include_usage the client must not see a usage chunk.
    plain = list(
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert plain and all(c.usage is None for c in plain), "usage chunk leaked to a client that did not ask"

    emb = client.embeddings.create(model=EMBED_MODEL, input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0, emb

    models = [m.id for m in client.models.list()]
    assert MODEL in models and EMBED_MODEL in models, models
    assert client.models.retrieve(MODEL).id == MODEL

    if CALLS_TOOLS:
        check_tools(client)

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e.body

    bad = OpenAI(api_key="sk-not-a-key", max_retries=0)
    try:
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("bad key accepted")
    except openai.AuthenticationError:
        pass

    print("openai sdk: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
