"""The official `google-genai` SDK, unchanged, against the router.

Run by the Rust end-to-end suite with LLMR_BASE_URL pointing at a running router whose channel
serves the model named in LLMR_MODEL from a fake upstream: a fake Gemini upstream (pass-through)
or another vendor's fake (translated both ways). LLMR_UPSTREAM_CALLS_TOOLS=1 says the upstream
answers a request with tools by calling them. Exits non-zero on the first failure.
"""

import os
import sys

from google import genai
from google.genai import errors, types

MODEL = os.environ.get("LLMR_MODEL", "gemini-2.5-flash")
CALLS_TOOLS = os.environ.get("LLMR_UPSTREAM_CALLS_TOOLS") == "1"
BASE = os.environ["LLMR_BASE_URL"]
KEY = os.environ["LLMR_API_KEY"]

WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Get the current weather in a given location",
    parameters_json_schema={
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city, e.g. Paris"}},
        "required": ["location"],
    },
)


def client(key: str = KEY) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=BASE, timeout=30_000))


def main() -> int:
    c = client()

    r = c.models.generate_content(
        model=MODEL,
        contents="Say hello",
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=64, temperature=0.2),
    )
    assert r.text, r
    assert r.candidates[0].finish_reason == types.FinishReason.STOP, r.candidates[0].finish_reason
    u = r.usage_metadata
    assert u.prompt_token_count and u.prompt_token_count > 0 and u.candidates_token_count > 0, u

    chunks = list(c.models.generate_content_stream(model=MODEL, contents="Count to three"))
    text = "".join(ch.text or "" for ch in chunks)
    assert text, "streamed no text"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP, chunks[-1]
    assert chunks[-1].usage_metadata.prompt_token_count > 0, chunks[-1].usage_metadata

    # Multi-turn chat keeps the history.
    chat = c.chats.create(model=MODEL)
    assert chat.send_message("Hi").text
    assert chat.send_message("And again").text
    assert len(chat.get_history()) == 4, chat.get_history()

    # Tools, and a function response sent back.
    tools = [types.Tool(function_declarations=[WEATHER])]
    config = types.GenerateContentConfig(
        tools=tools, automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)
    )
    ask = types.Content(role="user", parts=[types.Part(text="What is the weather in Paris?")])
    r = c.models.generate_content(model=MODEL, contents=[ask], config=config)
    calls = r.function_calls or []
    if CALLS_TOOLS:
        assert calls and all(fc.name == "get_weather" and isinstance(fc.args, dict) for fc in calls), r
        model_turn = r.candidates[0].content
    else:
        assert r.text, r
        calls = [types.FunctionCall(name="get_weather", args={"location": "Paris"})]
        model_turn = types.Content(role="model", parts=[types.Part(function_call=calls[0])])
    answers = types.Content(
        role="user",
        parts=[types.Part.from_function_response(name=fc.name, response={"result": "18C"}) for fc in calls],
    )
    follow = c.models.generate_content(model=MODEL, contents=[ask, model_turn, answers], config=config)
    assert follow.candidates and follow.candidates[0].content.parts, follow

    count = c.models.count_tokens(model=MODEL, contents="What is the weather in Paris?")
    assert count.total_tokens and count.total_tokens > 0, count

    try:
        c.models.generate_content(model="no-such-model", contents="hi")
        raise AssertionError("unknown model accepted")
    except errors.ClientError as e:
        assert e.code == 404 and e.status == "NOT_FOUND", (e.code, e.status)

    try:
        bad = client("sk-not-a-key")
        bad.models.generate_content(model=MODEL, contents="hi")
        raise AssertionError("bad key accepted")
    except errors.ClientError as e:
        assert e.code == 401, e.code

    print("google-genai sdk: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
