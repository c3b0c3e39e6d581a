"""Schemathesis over the API's own OpenAPI schema, in process (ASGI transport): for every operation,
generated valid (positive) and invalid (negative) requests never get a 5xx (a panel whose model is
not trained answers 409 ``feature_unavailable``) and every error answers
JSON ``{"error", "message"}``. Bounded: a few examples per operation and mode, derandomized, on a
private copy of the web catalog with writes enabled by the API key.

The operations come from the OpenAPI snapshot (tests/snapshots/openapi.json, kept equal to the app's
schema by test_interfaces.py), so each is its own test case. Schemathesis' pytest plugin is not used
(it does not load under pytest 9); its strategies are driven by Hypothesis directly."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

pytestmark = pytest.mark.fuzz
KEY = "fuzz-key"
EXAMPLES = int(os.environ.get("LOOKALIKE_FUZZ_EXAMPLES", 6))   # per operation and mode; more for a deeper hunt
SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "openapi.json"
OPERATIONS = [(method.upper(), path) for path, methods in sorted(json.loads(SNAPSHOT.read_text())["paths"].items())
              for method in sorted(methods)]


@pytest.fixture(scope="module")
def fuzz_schema(web_home, tmp_path_factory):
    from lookalike.api import create_app

    home = tmp_path_factory.mktemp("fuzz-home") / "home"
    shutil.copytree(web_home, home)   # deletes and upserts must not reach the shared session catalog
    app = create_app("shapes", home=home, api_key=KEY)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def check_response(case, response) -> None:
    status = response.status_code
    where = f"{case.method} {case.formatted_path} query={case.query} -> {status}: {response.text_lossy()[:300]}"
    assert status < 500, where
    if status >= 400:
        try:
            body = response.json()
        except ValueError:
            pytest.fail(f"error answered without JSON: {where}")
        assert isinstance(body, dict) and isinstance(body.get("error"), str) \
            and isinstance(body.get("message"), str), where
        if status == 409:
            assert body["error"] == "feature_unavailable", where


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_error_and_json_errors(fuzz_schema, method, path, mode):
    operation = fuzz_schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        check_response(case, case.call(headers={"X-API-Key": KEY}))

    try:
        run()
    except Unsatisfiable:   # negative mode on an operation whose every input is valid (no parameters, free text)
        pytest.skip(f"no invalid request exists for {method} {path}")
