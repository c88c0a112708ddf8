"""Unit tests of the edge codec.

The cases both codecs share live in tests/vectors/codec_cases.py."""

from __future__ import annotations

from types import ModuleType

import pytest
from asset_tracker_edge import protocol
from vectors.codec_cases import (  # noqa: F401  (collected here, run against this side's codec)
    test_config_holds_at_most_1000_assets,
    test_constants,
    test_decoded_defaults_are_not_shared_between_messages,
    test_deep_nesting_is_rejected_without_crashing,
    test_edge_subscriptions_name_the_nodes_own_topics,
    test_encode_accepts_str_enum_values,
    test_encode_is_compact_utf8_and_adds_the_version,
    test_encode_refuses_an_oversized_payload,
    test_encode_refuses_what_it_must_not_send,
    test_encode_sends_the_message_as_given,
    test_event_batch_checks_its_envelope,
    test_event_batch_refuses_an_oversized_payload,
    test_event_batch_splices_encoded_events,
    test_events_batch_holds_at_most_500_events,
    test_host_status_topic,
    test_lone_surrogate_in_a_string_is_invalid,
    test_lone_surrogate_in_an_unknown_field_is_dropped,
    test_one_invalid_event_names_its_field,
    test_oversized_payload_is_too_large_before_anything_else,
    test_parse_topic_rejects,
    test_payload_of_exactly_the_limit_decodes,
    test_subscription_is_one_filter_under_the_root_only,
    test_text_and_bytes_payloads_decode_alike,
    test_text_payload_is_measured_in_utf8_bytes,
    test_topic_for_and_parse_topic_are_inverse,
    test_topic_for_refuses_what_is_no_protocol_topic,
    test_unknown_subtopic_is_ignored_whatever_the_payload,
    test_unparseable_json_is_not_json,
    test_validate_event_gives_the_canonical_event,
)


@pytest.fixture(scope="module")
def codec() -> ModuleType:
    return protocol


def test_edge_codec_imports_nothing_from_home_assistant() -> None:
    source = protocol.__loader__.get_source(protocol.__name__)  # type: ignore[union-attr]
    assert source is not None
    assert "homeassistant" not in source
    assert "custom_components" not in source
