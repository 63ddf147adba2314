"""The client against the live server's ``/openapi.json``: every operation it calls exists there,
under the same method, path and operationId, and takes every parameter the client may send.
A route or parameter that drifts fails here, in CI, instead of in users' hands."""

from __future__ import annotations

import inspect
import re
import unittest
from typing import Any, Dict, Set

from bespoke_client import ENDPOINTS, AsyncClient, Client

from _live import server

COVERED = {
    "healthz",
    "openapi",
    "postEvents",
    "getUserEvents",
    "deleteUserEvents",
    "putUser",
    "getUser",
    "deleteUser",
    "exportUser",
    "getErasure",
    "putItem",
    "getItem",
    "deleteItem",
    "getRecommendations",
    "recommendSession",
    "getSimilar",
    "getPopular",
    "rankItems",
    "decide",
    "rewardDecision",
    "trainModels",
    "listModels",
    "postImpressions",
    "getHidden",
    "hideItem",
    "unhideItem",
    "whyNot",
    "listRules",
    "getRule",
    "putRule",
    "deleteRule",
    "listLoops",
    "getLoop",
    "putLoop",
    "activateDecision",
    "evaluateLoop",
    "applyCandidate",
    "listSegments",
    "getSegment",
    "putSegment",
    "deleteSegment",
    "refreshSegment",
    "segmentMembers",
    "segmentSizes",
    "userSegments",
    "queryAudience",
    "listExperiments",
    "getExperiment",
    "putExperiment",
    "startExperiment",
    "stopExperiment",
    "experimentReport",
    "deleteExperiment",
    "fairnessReport",
    "tuneModels",
    "activateModel",
    "listKeys",
    "createKey",
    "revokeKey",
    "getAudit",
}
"""The operations the client promises to cover (issue 19): adding one to the client without
listing it here, or dropping one, fails."""


class OpenApiTest(unittest.TestCase):
    doc: Dict[str, Any]

    @classmethod
    def setUpClass(cls) -> None:
        url, key = server()
        with Client(url, key) as client:
            cls.doc = client.openapi()

    def resolve(self, node: Any) -> Any:
        """``node`` with a top-level ``$ref`` followed (only local references exist)."""
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node

    def properties(self, schema: Any) -> Set[str]:
        """The property names a body schema declares, through ``$ref`` and ``allOf``."""
        schema = self.resolve(schema)
        names = set(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            names |= self.properties(part)
        return names

    def test_declared_operations_are_the_covered_list(self) -> None:
        self.assertEqual(set(ENDPOINTS), COVERED)

    def test_every_operation_exists_with_its_parameters(self) -> None:
        paths = self.doc["paths"]
        for op_id, endpoint in ENDPOINTS.items():
            with self.subTest(operation=op_id):
                self.assertIn(endpoint.path, paths, f"{op_id}: no path {endpoint.path}")
                item = paths[endpoint.path]
                method = endpoint.method.lower()
                self.assertIn(method, item, f"{op_id}: no {endpoint.method} {endpoint.path}")
                operation = item[method]
                self.assertEqual(operation.get("operationId"), op_id)

                params = [self.resolve(p) for p in item.get("parameters", [])]
                params += [self.resolve(p) for p in operation.get("parameters", [])]
                query = {p["name"] for p in params if p["in"] == "query"}
                path = {p["name"] for p in params if p["in"] == "path"}
                missing = set(endpoint.query) - query
                self.assertFalse(missing, f"{op_id}: query parameters not in the document")
                in_template = set(re.findall(r"\{(\w+)\}", endpoint.path))
                self.assertEqual(in_template, path, f"{op_id}: path parameters differ")

                body = operation.get("requestBody")
                if endpoint.body:
                    self.assertIsNotNone(body, f"{op_id}: the document takes no body")
                    schema = body["content"]["application/json"]["schema"]
                    missing = set(endpoint.body) - self.properties(schema)
                    self.assertFalse(missing, f"{op_id}: body fields not in the document")
                elif body is not None:
                    self.assertFalse(body.get("required"), f"{op_id}: needs a body")

    def test_every_operation_answers_json_on_success(self) -> None:
        for op_id, endpoint in ENDPOINTS.items():
            with self.subTest(operation=op_id):
                operation = self.doc["paths"][endpoint.path][endpoint.method.lower()]
                ok = [c for c in operation["responses"] if c.startswith("2")]
                self.assertTrue(ok, f"{op_id}: no success response documented")

    def test_async_client_mirrors_the_sync_one(self) -> None:
        def public(cls: type) -> Dict[str, inspect.Signature]:
            return {
                name: inspect.signature(fn)
                for name, fn in vars(cls).items()
                if callable(fn) and not name.startswith("_")
            }

        sync, asynchronous = public(Client), public(AsyncClient)
        self.assertEqual(set(sync), set(asynchronous))
        for name, signature in sync.items():
            with self.subTest(method=name):
                self.assertEqual(
                    list(signature.parameters), list(asynchronous[name].parameters)
                )
                self.assertTrue(inspect.iscoroutinefunction(getattr(AsyncClient, name)))


if __name__ == "__main__":
    unittest.main()
