"""The edge codec against every shared vector, and against the integration codec (cross-check)."""

from __future__ import annotations

import pytest
import vectors
from asset_tracker_edge import protocol as edge

VALID = vectors.load("valid")
INVALID = vectors.load("invalid")
# The integration's codec, loaded from its file (its package needs Home Assistant): what one side
# encodes must decode on the other, to the same canonical message.
integration = vectors.load_codec_from_file(vectors.INTEGRATION_CODEC, "integration_protocol")


def test_the_vector_set_covers_every_kind_and_reason() -> None:
    assert len(VALID) >= 25
    assert len(INVALID) >= 25
    assert {v.expect["kind"] for v in VALID} == set(edge.KINDS)
    errors = [v.expect["error"] for v in INVALID]
    # too_large is generated in test_protocol.py (a stored 256 KiB file would be silly)
    for reason in set(edge.REASONS) - {"too_large"}:
        assert errors.count(reason) >= 2, reason
    event_reasons = [e["reason"] for v in VALID for e in v.expect["invalid_events"]]
    for reason in edge.EVENT_REASONS:
        assert event_reasons.count(reason) >= 1, reason
    assert sum(v.expect.get("ignored", False) for v in INVALID) >= 2


@pytest.mark.parametrize("vector", VALID + INVALID, ids=vectors.ids(VALID + INVALID))
def test_decode_matches_the_vector(vector: vectors.Vector) -> None:
    vectors.check_decode(edge, vector)


@pytest.mark.parametrize("vector", VALID, ids=vectors.ids(VALID))
def test_canonical_message_round_trips(vector: vectors.Vector) -> None:
    vectors.check_round_trip(edge, edge, vector)


@pytest.mark.parametrize("vector", VALID, ids=vectors.ids(VALID))
def test_edge_encoding_decodes_in_the_integration_and_back(vector: vectors.Vector) -> None:
    vectors.check_round_trip(edge, integration, vector)
    vectors.check_round_trip(integration, edge, vector)
    expect = vector.expect
    if vectors.encodable(expect["kind"], expect["message"]):
        assert edge.encode(expect["kind"], expect["message"]) == integration.encode(
            expect["kind"], expect["message"]
        )


@pytest.mark.parametrize("vector", VALID + INVALID, ids=vectors.ids(VALID + INVALID))
def test_both_codecs_agree_on_every_vector(vector: vectors.Vector) -> None:
    vectors.check_decode(integration, vector)
