"""Fuzzing the edge codec's decode at the MQTT boundary, differentially against the integration's.

The tests live in tests/vectors/fuzz_cases.py (both sides run them); `ASSET_TRACKER_FUZZ=long`
runs 100,000 examples per test instead of 300.
"""

from __future__ import annotations

from types import ModuleType

import pytest
import vectors
from asset_tracker_edge import protocol
from vectors.fuzz_cases import (  # noqa: F401  (collected here, run against this side's codec)
    test_fuzz_arbitrary_bytes,
    test_fuzz_arbitrary_json,
    test_fuzz_mutated_valid_vectors,
    test_fuzz_objects_past_the_version_check,
)


@pytest.fixture(scope="module")
def codec() -> ModuleType:
    return protocol


@pytest.fixture(scope="module")
def other() -> ModuleType:
    return vectors.load_codec_from_file(vectors.INTEGRATION_CODEC, "integration_protocol")
