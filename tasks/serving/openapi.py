"""The OpenAPI description of the REST API (``GET /openapi.json``).

Each handler's docstring carries its operation as YAML after a ``---`` line; Starlette's
``SchemaGenerator`` collects them per route, and path parameters are added from the route
templates here.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.schemas import SchemaGenerator

from tasks.serving.codec import MAX_INSTANCES, dumps

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}},
          "required": ["error"]}
_PARAMS = {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
    "version": {"type": "string", "pattern": "^[0-9]{1,9}$"},
}

BASE = {
    "openapi": "3.0.3",
    "info": {"title": "mlp model serving", "version": "1",
             "description": "Every registered model's champion in TensorFlow Serving's REST "
                            "shape. Errors are {\"error\": message}."},
    "components": {"schemas": {
        "Error": _ERROR,
        "PredictRequest": {
            "type": "object",
            "description": "Exactly one of 'instances' (row format) or 'inputs' (columnar). "
                           "An instance is the input tensor, {\"<input name>\": tensor} or "
                           "{\"b64\": base64} (uint8 and string inputs; PNG/JPEG images "
                           "for image inputs). Tabular models take named fields "
                           "({\"<column>\": value, ...}, the names /metadata lists) or the "
                           "values in that order, and answer readably (class names and "
                           "scores, probability and decision, value) with per-instance "
                           "schema warnings; 'answer': 'bare' gives the model's outputs.",
            "properties": {
                "instances": {"type": "array", "minItems": 1, "maxItems": MAX_INSTANCES,
                              "items": {}},
                "inputs": {},
                "answer": {"type": "string", "enum": ["readable", "bare"]},
            },
        },
        "PredictResponse": {"type": "object", "properties": {
            "predictions": {"type": "array", "items": {}}, "outputs": {}}},
    }},
}


class _Generator(SchemaGenerator):
    """Reads only docstrings with a ``---`` part; adds each route's path parameters."""

    def parse_docstring(self, func_or_method: Any) -> dict[str, Any]:
        if "---" not in (func_or_method.__doc__ or ""):
            return {}
        return super().parse_docstring(func_or_method)

    def get_schema(self, routes: list[BaseRoute]) -> dict[str, Any]:
        schema = super().get_schema(routes)
        for path, item in schema["paths"].items():
            params = [{"name": n, "in": "path", "required": True, "schema": _PARAMS[n]}
                      for n in re.findall(r"{(\w+)}", path)]
            for method, operation in item.items():
                # YAML reads `200:` as an integer; OpenAPI keys are strings.
                responses = {str(k): v for k, v in operation.get("responses", {}).items()}
                item[method] = {**operation, "responses": responses,
                                **({"parameters": params} if params else {})}
        return schema


GENERATOR = _Generator(BASE)


def schema(routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of ``routes``."""
    return GENERATOR.get_schema(routes)


async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: this document."""
    return Response(dumps(schema(request.app.routes)), media_type="application/json")
