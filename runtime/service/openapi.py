"""The service's OpenAPI 3.1 description, served at ``/openapi.json`` (``add_openapi_route``).

Kept true by tests/reliability/test_fuzz_api.py: every route the application serves is
described here and nothing else is, and the fuzzer generates requests from it. Request
bodies are closed (``additionalProperties: false``) and every string a client gives that
reaches a span has a ``maxLength``: the server refuses what the schema does not allow.
The limits and the batch states are the routes' own constants, never a second spelling.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from ..batch.task import MAX_QUERY_CHARS
from .batches import (
    BATCH_STATES,
    CANCELLING,
    ENDED_STATES,
    MAX_TASKS,
    MAX_WORKERS,
    PAGE_DEFAULT,
    PAGE_MAX,
)
from .state import MAX_ID_CHARS

_ERROR: Final = {
    "description": "An error, always in this shape.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_ERRORS: Final = {
    str(code): _ERROR for code in (400, 401, 404, 405, 408, 413, 415, 422, 431, 500, 502, 504, 508)
}
# A route that reads a JSON body: the app's BodyBudget (runtime/http/jsonpolicy.py) full.
_REDIS_DOWN: Final = {  # batches on Redis (AGENTWATCH_REDIS_URL; redis_batches.py)
    **_ERROR,
    "description": "redis_unavailable: the batches are on Redis (AGENTWATCH_REDIS_URL) and "
    "it did not answer in time (Retry-After).",
}
_NO_OTHER_PARAMETERS: Final = (
    " Query parameters other than those listed, or one given twice, are refused (422)."
)


def _json(schema_ref: str) -> dict[str, Any]:
    return {
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}
    }


SPEC: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {"title": "agentwatch", "version": "0.1.0"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["type", "message"],
                        "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            },
            "RunRequest": {
                "type": "object",
                "required": ["input"],
                "additionalProperties": False,
                "properties": {
                    "input": {"type": "string", "minLength": 1, "maxLength": 32000},
                    "stream": {"type": "boolean"},
                    "conversation_id": {"type": "string", "maxLength": MAX_ID_CHARS},
                    "budget_usd": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "description": "What the run may spend on model calls, USD (at most "
                        "the service's AGENTWATCH_RUN_BUDGET_USD); spent, it ends with 402 "
                        "budget_exceeded.",
                    },
                },
            },
            "RunResult": {
                "type": "object",
                "required": ["output", "tool_calls", "usage", "trace_id", "sampled"],
                "properties": {
                    "output": {"type": "string"},
                    "tool_calls": {"type": "array", "items": {"type": "object"}},
                    "usage": {
                        "type": "object",
                        "required": ["input_tokens", "output_tokens", "total_tokens", "cost_usd"],
                        "properties": {
                            "input_tokens": {"type": "integer"},
                            "output_tokens": {"type": "integer"},
                            "total_tokens": {"type": "integer"},
                            "cost_usd": {
                                "type": ["number", "null"],
                                "description": "What the run's model calls cost, USD, from "
                                "the offline price table (AGENTWATCH_PRICES_FILE over the "
                                "bundled one); null when no call could be priced.",
                            },
                            "unpriced_calls": {
                                "type": "integer",
                                "description": "Model calls that could not be priced: with "
                                "some priced, cost_usd is partial.",
                            },
                        },
                    },
                    "budget_capped_usd": {
                        "type": "number",
                        "description": "The budget the run had: it asked for more than "
                        "AGENTWATCH_RUN_BUDGET_USD (also in a budget_exceeded error).",
                    },
                    "budget_warning": {
                        "type": "string",
                        "description": "Why the run's budget cannot stop its calls: the "
                        "model has no price (also in a budget_exceeded error).",
                    },
                    "trace_id": {
                        "type": "string",
                        "description": "The run's trace (32 hex digits); empty when no "
                        "trace backend has it: tracing off, or the trace not sampled.",
                    },
                    "sampled": {
                        "type": "boolean",
                        "description": "Whether the run's trace was sampled and exported.",
                    },
                },
            },
            "Task": {
                "type": "object",
                "description": "A task: its query as 'query' or as 'input' (one of them, "
                "not both); any other field is refused.",
                "required": ["id"],
                "oneOf": [{"required": ["query"]}, {"required": ["input"]}],
                "additionalProperties": False,
                "properties": {
                    "id": {
                        "oneOf": [
                            {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
                            {"type": "integer"},
                        ]
                    },
                    "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
                    "input": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
                    "priority": {"type": "integer", "description": "Lower runs first."},
                },
            },
            "BatchRequest": {
                "type": "object",
                "required": ["tasks"],
                "additionalProperties": False,
                "properties": {
                    "tasks": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_TASKS,
                        "items": {"$ref": "#/components/schemas/Task"},
                    },
                    "workers": {"type": "integer", "minimum": 1, "maximum": MAX_WORKERS},
                    "timeout": {"type": "number", "exclusiveMinimum": 0},
                    "budget_usd": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "description": "Once the batch's tasks cost this many USD no task "
                        "starts; running ones finish, the rest end cancelled.",
                    },
                },
            },
            "Batch": {"type": "object", "required": ["id", "state"]},
            "BatchSummary": {
                "type": "object",
                "required": ["id", "state", "total", "done", "counts", "created_at"],
                "properties": {
                    "id": {"type": "string"},
                    "state": {"enum": list(BATCH_STATES)},
                    "total": {"type": "integer"},
                    "done": {"type": "integer", "description": "Tasks that ended."},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "created_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": ["string", "null"], "format": "date-time"},
                    "results_url": {"type": "string"},
                    "cost_usd": {
                        "type": ["number", "null"],
                        "description": "What the batch's tasks have cost so far, USD (priced "
                        "calls only); null when calls were made and none could be priced.",
                    },
                    "unpriced_calls": {
                        "type": "integer",
                        "description": "Model calls that could not be priced: a cost with "
                        "them is partial, and a budget cannot stop them.",
                    },
                    "budget_usd": {"type": ["number", "null"]},
                    "budget_exceeded": {
                        "type": "boolean",
                        "description": "Tasks were left unrun: the budget was spent.",
                    },
                    "budget_warning": {
                        "type": ["string", "null"],
                        "description": "Why the budget cannot stop the batch's calls: "
                        "the model has no price.",
                    },
                },
            },
            "BatchResults": {
                "type": "object",
                "required": ["id", "state", "results", "next_cursor"],
                "properties": {
                    "id": {"type": "string"},
                    "state": {"type": "string"},
                    "results": {"type": "array", "items": {"type": "object"}},
                    "next_cursor": {
                        "type": ["string", "null"],
                        "description": "Null once the batch ended and every result was given.",
                    },
                },
            },
        },
    },
    "paths": {
        "/v1/runs": {
            "post": {
                "summary": "Run one query (JSON), or stream it as Server-Sent Events.",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, **_json("RunRequest")},
                "responses": {
                    "200": {
                        "description": "The answer, or an event stream when asked.",
                        **_json("RunResult"),
                    },
                    "402": {
                        **_ERROR,
                        "description": "budget_exceeded: the run spent its budget "
                        "(budget_usd, AGENTWATCH_RUN_BUDGET_USD) and made no more model calls.",
                    },
                    "503": {
                        **_ERROR,
                        "description": "The server is receiving too many request bodies at "
                        "once, or the run was shed: too many runs wait for a slot already, or it "
                        "waited AGENTWATCH_ADMISSION_TIMEOUT without one (overloaded, "
                        "Retry-After).",
                    },
                    **_ERRORS,
                },
            }
        },
        "/v1/batches": {
            "post": {
                "summary": "Start a batch of tasks.",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, **_json("BatchRequest")},
                "responses": {
                    "202": {"description": "Started.", **_json("Batch")},
                    "429": {**_ERROR, "description": "Too many batches or tasks (Retry-After)."},
                    "503": {
                        **_ERROR,
                        "description": "The server is receiving too many request bodies at "
                        "once, or (batches on Redis) Redis did not answer in time: "
                        "too_many_bodies, redis_unavailable (Retry-After).",
                    },
                    **_ERRORS,
                },
            }
        },
        "/v1/batches/{batch_id}": {
            "parameters": [
                {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "A summary: state, counts by status, times (never the tasks).",
                "description": "Takes no query parameters." + _NO_OTHER_PARAMETERS,
                "security": [{"bearer": []}],
                "responses": {
                    "200": {"description": "The batch.", **_json("BatchSummary")},
                    "503": _REDIS_DOWN,
                    **_ERRORS,
                },
            },
            "delete": {
                "summary": "Cancel the batch.",
                "description": "Takes no query parameters." + _NO_OTHER_PARAMETERS,
                "security": [{"bearer": []}],
                "responses": {
                    "202": {
                        "description": f"Running: cancelling ('{CANCELLING}').",
                        **_json("Batch"),
                    },
                    "200": {
                        "description": "Already ended: nothing to cancel; its summary, with "
                        f"its final state (one of {', '.join(ENDED_STATES)}).",
                        **_json("BatchSummary"),
                    },
                    "503": _REDIS_DOWN,
                    **_ERRORS,
                },
            },
        },
        "/v1/batches/{batch_id}/results": {
            "parameters": [
                {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "The tasks that ended, in the order they ended, a page at a time.",
                "description": f"'limit' (default {PAGE_DEFAULT}) and 'cursor' (a next_cursor)."
                + _NO_OTHER_PARAMETERS,
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "A page.", **_json("BatchResults")},
                    "503": _REDIS_DOWN,
                    **_ERRORS,
                },
            },
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text, or OpenMetrics with exemplars when asked.",
                "responses": {"200": {"description": "Metrics."}},
            }
        },
        "/healthz": {"get": {"summary": "Alive.", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {
            "get": {
                "summary": "Ready to serve runs.",
                "responses": {"200": {"description": "ok"}, "503": {"description": "not yet"}},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document.", "responses": {"200": {"description": "ok"}}}
        },
    },
}


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(SPEC)


def add_openapi_route(app: web.Application) -> None:
    """``GET /openapi.json``: this document."""
    app.router.add_get("/openapi.json", get_openapi)
