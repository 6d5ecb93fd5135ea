"""Property-based fuzz of the cloud service's OpenAPI contract with Schemathesis.

Every operation in `/openapi.json` gets generated requests, valid ones and invalid ones
(positive and negative modes), sent in-process to the ASGI app from `create_app` on a
fresh database: a SQLite file, and (marked `postgres`) a fresh PostgreSQL database,
because some failures exist on one backend only. Each response goes through all of
Schemathesis' default checks, among them:

* not_a_server_error: no 5xx (a 500 is a crash; a 503 would tell the edge to retry a
  request that can never succeed);
* response_schema_conformance, status_code_conformance, content_type_conformance,
  response_headers_conformance: every answer is one the document declares, in its shape;
* negative_data_rejection / positive_data_acceptance: a request that breaks the schema
  is refused with a 4xx, and one that fits it is not refused.

The hand-written edge cases of `POST /log` that the schema cannot describe (malformed
JSON, NaN, bad gzip, oversized bodies, wrong content types) are in
test_cloud_log_errors.py and not repeated here. Run a deeper search with e.g.
`EDGEBUF_FUZZ_EXAMPLES=1000`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from cloud.app import create_app
from cloud.settings import CloudSettings

if os.environ.get("CI", "").lower() == "true":
    import schemathesis  # CI installs the dev extra: a missing fuzzer is a failure there
else:
    schemathesis = pytest.importorskip(
        "schemathesis", reason="schemathesis not installed (pip install -e '.[dev]')"
    )

# Per operation and backend; bounded so the file stays well under a minute on 2 cores.
MAX_EXAMPLES = int(os.environ.get("EDGEBUF_FUZZ_EXAMPLES", "60"))

# 413 is how the contract refuses a batch of more than `maxItems` records ("split the
# batch"); Schemathesis' default list of statuses that reject schema-violating data
# lacks it. The rest is that default list without 5xx, which is never acceptable here.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "403",
                    "404",
                    "405",
                    "406",
                    "409",
                    "413",
                    "415",
                    "422",
                    "428",
                    "429",
                ]
            }
        },
    }
)


def _homogeneous_tuples_as_items(node: Any) -> Any:
    """Rewrite `prefixItems: [S, S]` with `minItems = maxItems = 2` as `items: S`.

    Works around Schemathesis 4.x turning OpenAPI 3.1 `prefixItems` in *response*
    schemas into draft-4 `items: [...]` and then rejecting its own result ("Invalid
    Schema Object in response definition"). The only tuples in this document are
    `GapsResponse.gaps`, a list of `[start, end]` integer pairs, which the rewritten
    schema describes exactly, as `WatermarkResponse.missing` (inclusive ranges).
    """
    if isinstance(node, list):
        return [_homogeneous_tuples_as_items(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _homogeneous_tuples_as_items(value) for key, value in node.items()}
    prefix = node.get("prefixItems")
    if (
        isinstance(prefix, list)
        and prefix
        and "items" not in node
        and all(item == prefix[0] for item in prefix)
        and node.get("minItems") == node.get("maxItems") == len(prefix)
    ):
        node["items"] = node.pop("prefixItems")[0]
    return node


def _document() -> dict[str, Any]:
    # An app for its document only: its engine never connects, no request reaches it.
    url = f"sqlite:///{Path(tempfile.gettempdir()) / 'edgebuf-fuzz-unused.db'}"
    return _homogeneous_tuples_as_items(create_app(CloudSettings(database_url=url)).openapi())


# Loaded at import: Schemathesis makes one test per operation from it.
schema = schemathesis.openapi.from_dict(_document(), config=CONFIG)


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def backend_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The app under test, on a fresh database of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'cloud.db'}"
    else:
        new_database: Callable[[], str] = request.getfixturevalue("pg_database_factory")
        url = new_database()
    app = create_app(CloudSettings(database_url=url))
    yield app
    # Schemathesis starts the lifespan (migrations) on the first call and keeps it until
    # exit; close the pool before the database goes (PostgreSQL's is dropped at the end).
    app.state.cloud.db.dispose()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_contract(case: Any, backend_app: Any) -> None:
    case.call_and_validate(app=backend_app)


def test_fuzzed_document_is_the_served_one(tmp_path: Path) -> None:
    """Guard the workaround above: the fuzzed document is `/openapi.json` as served,
    except for the form (not the meaning) of the one tuple."""
    from fastapi.testclient import TestClient

    app = create_app(CloudSettings(database_url=f"sqlite:///{tmp_path}/doc.db"))
    served = TestClient(app).get("/openapi.json").json()  # no lifespan: no database
    fuzzed = _document()
    for model, field in (("GapsResponse", "gaps"), ("WatermarkResponse", "missing")):
        served_tuple = served["components"]["schemas"][model]["properties"][field]
        fuzzed_tuple = fuzzed["components"]["schemas"][model]["properties"][field]
        assert served_tuple.pop("items")["prefixItems"] == [{"type": "integer"}] * 2
        assert fuzzed_tuple.pop("items") == {
            "type": "array",
            "items": {"type": "integer"},
            "minItems": 2,
            "maxItems": 2,
        }
    assert fuzzed == served
