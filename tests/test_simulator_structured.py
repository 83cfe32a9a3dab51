"""Structured output: JSON generated from the schema, GBNF grammars, and LM Studio's error for bad ones."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import lmstudio
import pytest

from proxy.simulator import Simulator, gbnf, schemagen

TIMEOUT = 10

SCHEMA = {
    "$defs": {
        "point": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number", "minimum": 5}},
            "required": ["x", "y"],
        }
    },
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 4},
        "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "kind": {"enum": ["a", "b"]},
        "where": {"$ref": "#/$defs/point"},
        "ok": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
    },
    "required": ["name", "count", "tags", "kind", "where", "ok"],
    "additionalProperties": False,
}

GRAMMAR = r"""
root ::= "{\"answer\":" answer ",\"digits\":\"" [0-9]+ "\"}"
answer ::= "\"" ( [^"\\] | "\\" ["\\nt] )* "\""  # a comment
""".lstrip()


async def test_json_schema_answer_is_valid_json_for_the_schema(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        result = await model.respond("Count 42 sheep", response_format=SCHEMA)
    parsed = result.parsed
    assert isinstance(parsed, dict) and parsed == json.loads(result.content)
    assert set(parsed) >= {"name", "count", "tags", "kind", "where", "ok"}
    assert parsed["count"] == 42  # numbers come from the prompt
    assert len(parsed["name"]) <= 4 and len(parsed["tags"]) == 2 and parsed["kind"] == "a"
    assert parsed["where"]["y"] >= 5 and parsed["ok"] is True
    [record] = simulator.predictions()
    assert record["structured"] == {"type": "json", "jsonSchema": SCHEMA}


async def test_gbnf_answer_matches_the_grammar(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        result = await model.respond("Anything", config={"structured": {"type": "gbnf", "gbnfGrammar": GRAMMAR}})
    parsed = json.loads(result.content)
    assert set(parsed) == {"answer", "digits"} and parsed["digits"].isdigit()
    assert simulator.predictions()[0]["structured"]["type"] == "gbnf"


@pytest.mark.parametrize(
    "structured",
    [
        {"type": "json", "jsonSchema": {"type": "strange"}},
        {"type": "json", "jsonSchema": {"$ref": "#/$defs/missing"}},
        {"type": "gbnf", "gbnfGrammar": 'root ::= "unterminated'},
        {"type": "gbnf", "gbnfGrammar": "root ::= undefined-rule"},
    ],
)
async def test_an_invalid_schema_or_grammar_is_refused(simulator: Simulator, structured: dict[str, Any]) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        with pytest.raises(lmstudio.LMStudioServerError, match="Invalid structured output"):
            await model.respond("Anything", config=cast(lmstudio.LlmPredictionConfigDict, {"structured": structured}))
    [record] = simulator.predictions()
    assert record["status"] == "failed" and record["tokens_generated"] == 0


def test_schema_generation_follows_required_order_and_limits() -> None:
    schema = {
        "type": "object",
        "properties": {"b": {"type": "integer", "maximum": 10}, "a": {"type": "integer"}},
        "required": ["a", "b"],
    }
    assert schemagen.generate(schema, "first 7 then 99") == {"a": 7, "b": 10}


def test_gbnf_repetition_bounds_and_recursion_terminate() -> None:
    grammar = 'root ::= item{2,3} list\nitem ::= [a-c]\nlist ::= "[" (list | "x") "]"\n'
    text = gbnf.generate(grammar)
    assert text.startswith("aaa") and text.endswith("]") and text.count("[") == text.count("]")


JSON_GRAMMAR = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
# optional space
ws ::= | " " | "\n" [ \t]{0,20}
"""


def test_a_recursive_json_grammar_gives_small_valid_json() -> None:
    text = gbnf.generate(JSON_GRAMMAR)
    assert isinstance(json.loads(text), dict)
    assert len(text) < 2 * gbnf.BUDGET  # the budget stops the recursion from blowing up
