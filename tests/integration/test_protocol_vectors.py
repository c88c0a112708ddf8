"""The integration codec against every shared vector, and against the edge codec (cross-check).

Runs inside the Home Assistant test harness, where `voluptuous` is Home Assistant's compatibility
layer: the vectors pin the codec's behaviour on that validation engine too.
"""

from __future__ import annotations

import sys

import pytest
import vectors

from custom_components.asset_tracker import protocol as integration

VALID = vectors.load("valid")
INVALID = vectors.load("invalid")
# The edge's codec, loaded from its file: what one side encodes must decode on the other.
edge = vectors.load_codec_from_file(vectors.EDGE_CODEC, "edge_protocol")


def test_runs_on_home_assistants_voluptuous() -> None:
    import homeassistant  # noqa: F401  (installs the compatibility layer, as in production)

    assert sys.modules["voluptuous"].__name__.startswith("probatio")
    assert integration.vol is sys.modules["voluptuous"]


def test_the_vector_set_covers_every_kind_and_reason() -> None:
    assert len(VALID) >= 25
    assert len(INVALID) >= 25
    assert {v.expect["kind"] for v in VALID} == set(integration.KINDS)
    errors = [v.expect["error"] for v in INVALID]
    for reason in set(integration.REASONS) - {"too_large"}:
        assert errors.count(reason) >= 2, reason


@pytest.mark.parametrize("vector", VALID + INVALID, ids=vectors.ids(VALID + INVALID))
def test_decode_matches_the_vector(vector: vectors.Vector) -> None:
    vectors.check_decode(integration, vector)


@pytest.mark.parametrize("vector", VALID, ids=vectors.ids(VALID))
def test_canonical_message_round_trips(vector: vectors.Vector) -> None:
    vectors.check_round_trip(integration, integration, vector)


@pytest.mark.parametrize("vector", VALID, ids=vectors.ids(VALID))
def test_integration_encoding_decodes_on_the_edge_and_back(vector: vectors.Vector) -> None:
    vectors.check_round_trip(integration, edge, vector)
    vectors.check_round_trip(edge, integration, vector)
    expect = vector.expect
    if vectors.encodable(expect["kind"], expect["message"]):
        assert integration.encode(expect["kind"], expect["message"]) == edge.encode(
            expect["kind"], expect["message"]
        )


@pytest.mark.parametrize("vector", VALID + INVALID, ids=vectors.ids(VALID + INVALID))
def test_both_codecs_agree_on_every_vector(vector: vectors.Vector) -> None:
    vectors.check_decode(edge, vector)
