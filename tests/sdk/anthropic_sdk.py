"""The official `anthropic` SDK, unchanged, against the router.

Run by the Rust end-to-end suite with ANTHROPIC_BASE_URL pointing at a running router whose
channel serves the model named in LLMR_MODEL from a fake upstream: a fake Anthropic upstream
(pass-through) or the fake OpenAI upstream (translated both ways). LLMR_UPSTREAM_CALLS_TOOLS=1
says the upstream answers a request with tools by calling them (the fake Anthropic does; the fake
OpenAI only answers text). Exits non-zero on the first failure.
"""

import os
import sys

import anthropic
from anthropic import Anthropic

MODEL = os.environ.get("LLMR_MODEL", "claude-sonnet-4-5")
CALLS_TOOLS = os.environ.get("LLMR_UPSTREAM_CALLS_TOOLS") == "1"

TOOLS = [
    {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "input_schema": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city, e.g. Paris"}},
            "required": ["location"],
        },
    }
]
ASK = {"role": "user", "content": "What is the weather in Paris?"}


def main() -> int:
    client = Anthropic(max_retries=0, timeout=30)

    msg = client.messages.create(
        model=MODEL, max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert msg.type == "message" and msg.role == "assistant", msg
    assert msg.content and msg.content[0].type == "text" and msg.content[0].text, msg
    assert msg.stop_reason == "end_turn", msg.stop_reason
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, msg.usage

    # The streaming helper accumulates the full event sequence into a final message.
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Count to three"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text, "streamed no text"
    assert final.content[0].text == text, final
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens > 0, final.usage

    # Raw events: the documented order, ending in message_stop.
    kinds = [e.type for e in client.messages.create(model=MODEL, max_tokens=64, messages=[ASK], stream=True)]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    assert "content_block_start" in kinds and "content_block_delta" in kinds and "message_delta" in kinds, kinds
    assert kinds.index("message_delta") > kinds.index("content_block_stop"), kinds

    # Tools, and a tool result sent back.
    msg = client.messages.create(model=MODEL, max_tokens=256, tools=TOOLS, messages=[ASK])
    uses = [b for b in msg.content if b.type == "tool_use"]
    if CALLS_TOOLS:
        assert uses and msg.stop_reason == "tool_use", msg
        assert all(isinstance(u.input, dict) and u.input for u in uses), uses
        with client.messages.stream(model=MODEL, max_tokens=256, tools=TOOLS, messages=[ASK]) as stream:
            streamed = stream.get_final_message()
        streamed_uses = [b for b in streamed.content if b.type == "tool_use"]
        assert streamed_uses and all(u.input.get("location") for u in streamed_uses), streamed.content
    else:
        assert msg.content, msg
        uses = [anthropic.types.ToolUseBlock(type="tool_use", id="toolu_1", name="get_weather", input={"location": "Paris"})]
    follow = client.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=TOOLS,
        tool_choice={"type": "none"},
        messages=[
            ASK,
            {"role": "assistant", "content": uses},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "18C"} for u in uses]},
        ],
    )
    assert follow.content and follow.content[0].type == "text", follow

    models = [m.id for m in client.models.list()]
    assert MODEL in models, models

    count = client.messages.count_tokens(model=MODEL, system="Be brief.", messages=[ASK])
    assert count.input_tokens > 0, count

    try:
        client.messages.create(model="no-such-model", max_tokens=8, messages=[ASK])
        raise AssertionError("unknown model accepted")
    except anthropic.NotFoundError as e:
        assert e.body["error"]["type"] == "not_found_error", e.body

    bad = Anthropic(api_key="sk-not-a-key", max_retries=0)
    try:
        bad.messages.create(model=MODEL, max_tokens=8, messages=[ASK])
        raise AssertionError("bad key accepted")
    except anthropic.AuthenticationError as e:
        assert e.body["type"] == "error", e.body

    print("anthropic sdk: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
