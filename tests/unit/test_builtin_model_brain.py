"""The builtin model's brain drives any tool it is given (issue 16): the tool the prompt
names or ``tool_choice`` requires, with arguments valid for the tool's schema and taken
from the prompt where they can be; structured output valid for its schema; the demo's
calculator and search by keyword as before; the same answer for the same request."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentwatch.runtime.builtin_model import OptionError, Reply, ToolCall, respond


def tool(name: str, properties: dict[str, Any] | None = None, **schema: Any) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties or {}} | schema
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


WEATHER = tool("get_weather", {"city": {"type": "string"}}, required=["city"])
MAGIC = tool(
    "magic_function",
    {"input": {"type": "integer", "exclusiveMinimum": -1000, "exclusiveMaximum": 1000}},
    required=["input"],
)
ADDER = tool(
    "my_adder_tool", {"a": {"type": "integer"}, "b": {"type": "integer"}}, required=["a", "b"]
)
NO_ARGS = tool("magic_function_no_args")
JOKE = {
    "type": "object",
    "properties": {"setup": {"type": "string"}, "punchline": {"type": "string"}},
    "required": ["setup", "punchline"],
    "additionalProperties": False,
}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def calls(reply: Reply) -> list[tuple[str, Any]]:
    return [(c.name, json.loads(c.arguments)) for c in reply.tool_calls]


def json_schema(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def test_a_tool_the_prompt_names_is_called_with_arguments_from_the_prompt() -> None:
    reply = respond(user("What's the weather in Paris? Use get_weather."), [WEATHER])
    assert calls(reply) == [("get_weather", {"city": "Paris"})]
    assert reply.finish_reason == "tool_calls"
    assert reply.content == ""
    assert reply.completion_tokens > 0


@pytest.mark.parametrize(
    ("prompt", "tools", "expected"),
    [
        # a word of the tool's name ("weather"), a place of several words
        (
            "What is the weather in San Francisco, CA?",
            [tool("get_weather", {"location": {"type": "string"}}, required=["location"])],
            [("get_weather", {"location": "San Francisco, CA"})],
        ),
        # numbers into integer parameters, in order
        (
            "What is the value of magic_function(3)? Use the tool.",
            [MAGIC],
            [("magic_function", {"input": 3})],
        ),
        ("Use my_adder_tool: what is 3 + 4?", [ADDER], [("my_adder_tool", {"a": 3, "b": 4})]),
        # quoted text for a name, the subject for the rest; unicode kept
        (
            "Create a customer named '你好啊集团' - a Chinese company",
            [
                tool(
                    "unicode_customer",
                    {"customer_name": {"type": "string"}, "description": {"type": "string"}},
                    required=["customer_name", "description"],
                )
            ],
            [
                (
                    "unicode_customer",
                    {
                        "customer_name": "你好啊集团",
                        "description": "Create a customer named '你好啊集团' - a Chinese company",
                    },
                )
            ],
        ),
        # a tool with no arguments
        (
            "What is magic_function_no_args()? Use the tool.",
            [NO_ARGS],
            [("magic_function_no_args", {})],
        ),
        # a user's own search tool with its own argument name
        (
            "search for exemplars",
            [tool("search", {"q": {"type": "string"}}, required=["q"])],
            [("search", {"q": "exemplars"})],
        ),
        # several tools in one turn, in the order the prompt names them
        (
            "Call magic_function with 7, then get_weather for Lyon.",
            [WEATHER, MAGIC],
            [("magic_function", {"input": 7}), ("get_weather", {"city": "Lyon"})],
        ),
    ],
)
def test_any_tool_is_driven(prompt: str, tools: list[dict[str, Any]], expected: list[Any]) -> None:
    assert calls(respond(user(prompt), tools)) == expected


def test_tool_choice_forces_none_or_a_tool_whatever_the_prompt() -> None:
    named = {"type": "function", "function": {"name": "magic_function"}}
    assert calls(respond(user("Hello!"), [WEATHER, MAGIC], tool_choice=named)) == [
        ("magic_function", {"input": 0})
    ]
    # "required" with no tool named: the first tool, its arguments made up for its schema
    assert calls(respond(user("Hello!"), [WEATHER, MAGIC], tool_choice="required")) == [
        ("get_weather", {"city": "Hello"})
    ]
    none = respond(
        user("What's the weather in Paris? Use get_weather."), [WEATHER], tool_choice="none"
    )
    assert none.tool_calls == ()
    assert "get_weather" in none.content
    assert respond(user("Hello!"), [WEATHER, MAGIC]).tool_calls == ()  # auto: nothing named


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    prompt = user("Call magic_function with 7, then get_weather for Lyon.")
    reply = respond(prompt, [WEATHER, MAGIC], parallel_tool_calls=False)
    assert calls(reply) == [("magic_function", {"input": 7})]


def test_the_answer_after_tool_results_quotes_them() -> None:
    first = respond(user("What's the weather in Paris? Use get_weather."), [WEATHER])
    call = first.tool_calls[0]
    conversation = [
        *user("What's the weather in Paris? Use get_weather."),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "It is 21 degrees and sunny."},
    ]
    answer = respond(conversation, [WEATHER])
    assert answer.tool_calls == ()
    assert answer.content == "The get_weather tool returned: It is 21 degrees and sunny."
    # a required tool is called again, as OpenAI does, filled from the user's message
    again = respond(conversation, [WEATHER], tool_choice="required")
    assert calls(again) == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("what is 123 + 456", ("calculator", {"expression": "123 + 456"})),
        ("calculate (17 * 23) - 4 ** 3", ("calculator", {"expression": "(17 * 23) - 4 ** 3"})),
        ("search for exemplars", ("search", {"query": "exemplars"})),
        (
            "find docs about label cardinality",
            ("search", {"query": "docs about label cardinality"}),
        ),
        ("look up retries with jitter", ("search", {"query": "retries with jitter"})),
        ("calculate __import__('os')", ("calculator", {"expression": "__import__('os')"})),
    ],
)
def test_the_demos_tools_answer_by_keyword_as_before(prompt: str, expected: Any) -> None:
    """The demo's own tools (by name alone, or with the runtime's schemas) keep their
    keyword behaviour and arguments exactly."""
    assert calls(respond(user(prompt), ["calculator", "search"])) == [expected]
    runtime_tools = [
        tool("calculator", {"expression": {"type": "string"}}, required=["expression"]),
        tool("search", {"query": {"type": "string"}}, required=["query"]),
    ]
    assert calls(respond(user(prompt), runtime_tools)) == [expected]


def test_the_demos_answers_are_unchanged() -> None:
    hello = respond(user("hello"), ["calculator", "search"])
    assert hello.content.startswith("I am the agentwatch builtin model. Ask me to calculate")
    for name, result, answer in [
        ("calculator", "579", "The answer is 579."),
        (
            "search",
            "Exemplars link a sample to a trace.",
            "Here is what I found in the documentation: Exemplars link a sample to a trace.",
        ),
        (
            "calculator",
            "Error: not arithmetic",
            "I could not use the calculator tool: Error: not arithmetic",
        ),
    ]:
        conversation = [
            *user("x"),
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": name, "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": result},
        ]
        assert respond(conversation, ["calculator", "search"]).content == answer


@pytest.mark.parametrize(
    "schema",
    [
        JOKE,
        {
            "$defs": {
                "Item": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "format": "uuid"},
                        "qty": {"type": "integer", "minimum": 1, "maximum": 9},
                    },
                    "required": ["sku", "qty"],
                }
            },
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {"$ref": "#/$defs/Item"},
                    "minItems": 2,
                    "uniqueItems": True,
                },
                "status": {"enum": ["open", "shipped"]},
                "note": {
                    "anyOf": [{"type": "string", "minLength": 3, "maxLength": 5}, {"type": "null"}]
                },
                "when": {"type": "string", "format": "date"},
                "price": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "exclusiveMaximum": 1,
                    "multipleOf": 0.25,
                },
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
                "flags": {
                    "type": "object",
                    "additionalProperties": {"type": "boolean"},
                    "minProperties": 2,
                },
            },
            "required": ["items", "status", "note", "when", "price", "tags", "flags"],
        },
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"const": "x"}}, "required": ["b"]},
            ]
        },
        {"type": ["null", "integer"], "minimum": 10, "multipleOf": 7},
        {
            "type": "array",
            "prefixItems": [{"type": "boolean"}, {"type": "string", "minLength": 40}],
            "minItems": 2,
        },
    ],
)
def test_response_format_json_schema_gives_json_valid_for_the_schema(schema: Any) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    reply = respond(
        user("Tell me a joke about cats. Order 2 items."), response_format=json_schema(schema)
    )
    assert reply.tool_calls == ()
    jsonschema.validate(json.loads(reply.content), schema)


def test_json_object_has_the_keys_the_prompt_quotes() -> None:
    prompt = "Tell me a joke about cats. Return JSON with 'setup' and 'punchline' keys."
    reply = respond(user(prompt), response_format={"type": "json_object"})
    assert json.loads(reply.content) == {
        "setup": "Tell me a joke about cats",
        "punchline": "Tell me a joke about cats",
    }
    plain = respond(user("hello"), response_format={"type": "json_object"})
    assert json.loads(plain.content) == {"answer": "hello"}


def test_the_same_request_gets_the_same_answer_and_the_seed_varies_made_up_values() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "kind": {"enum": ["a", "b", "c"]}},
    }
    answers = {
        respond(user("hi"), response_format=json_schema(schema), seed=s).content for s in (1, 1, 1)
    }
    assert answers == {'{"n": 1, "kind": "b"}'}
    assert (
        respond(user("hi"), response_format=json_schema(schema), seed=2).content
        == '{"n": 2, "kind": "c"}'
    )
    assert (
        respond(user("kind c please"), response_format=json_schema(schema)).content
        == '{"n": 0, "kind": "c"}'
    )


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": 5}}},
            "response_format.json_schema",
        ),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_options_the_brain_cannot_read_name_their_parameter(
    options: dict[str, Any], param: str
) -> None:
    with pytest.raises(OptionError) as error:
        respond(user("hi"), [WEATHER], **options)
    assert error.value.param == param
    with pytest.raises(OptionError) as error:
        respond(user("hi"), [{"type": "function", "function": {"name": "t", "parameters": []}}])
    assert error.value.param == "tools[0].function.parameters"


def test_a_tool_whose_schema_no_value_satisfies_is_an_option_error() -> None:
    impossible = tool("t", {"n": {"type": "integer", "minimum": 5, "maximum": 4}}, required=["n"])
    with pytest.raises(OptionError, match="no number satisfies") as error:
        respond(user("use t"), [impossible])
    assert error.value.param == "tools"


def test_reply_and_tool_call_stay_the_public_shapes() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    assert Reply("", (call,)).finish_reason == "tool_calls"
    assert Reply("hi").finish_reason == "stop"
