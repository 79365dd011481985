"""Property-based run of the whole API against its own OpenAPI schema (schemathesis + hypothesis).

Every generated request, valid or not, must get an answer that is not a 500 and that matches the
documented status codes, content types and response schemas. Bounded (40 examples per mode) to
stay fast; ``WINNOW_SCHEMA_EXAMPLES=2000`` runs a longer hunt. schemathesis' pytest plugin does not
run on this pytest, so the strategies are driven with ``hypothesis.given`` directly.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from winnow.server.config import ModelSpec, ServerConfig
from winnow.server.testing import running_server

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def api_schema(tiny_bert):
    config = ServerConfig(
        models=(ModelSpec.parse(f"tiny={tiny_bert}"),),
        # short enough that query + document always fit the tiny model's 128 tokens, so TEI's
        # truncate=false (413 for over-long input, which the schema cannot express) never fires
        max_documents=20,
        max_document_chars=50,
        max_query_chars=20,
        max_chunks_per_doc=4,
    )
    with running_server(config) as srv:
        yield schemathesis.openapi.from_url(srv.url + "/openapi.json")


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_api_conforms_to_its_schema(api_schema, mode):
    generation = schemathesis.GenerationMode(mode)
    examples = int(os.environ.get("WINNOW_SCHEMA_EXAMPLES", "40"))

    @given(case=api_schema.as_strategy(generation))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(timeout=30)

    check()
