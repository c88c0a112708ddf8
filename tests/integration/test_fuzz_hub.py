"""Fuzzing the hub behind the codec: valid but sparse, odd or repeated messages never break it.

The codec fuzzing proves that every payload is decoded or rejected; this goes one step further and
hands mutated protocol vectors to the running integration, as the MQTT client does, so the
handlers meet every shape the codec lets through (absent optional sections, nulls, duplicates).
`ASSET_TRACKER_FUZZ=long` runs 100,000 examples instead of 300.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any

import pytest
import vectors
from homeassistant.components.mqtt.models import ReceiveMessage
from homeassistant.core import HomeAssistant
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from vectors.fuzz_cases import LONG, sparse_mutation

FUZZ = settings(
    max_examples=100_000 if LONG else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TIMEOUT = pytest.mark.timeout(4 * 3600 if LONG else 300)
INBOUND = ("status", "config", "events", "snapshot", "health", "cmd/result")
VECTORS = [
    v
    for v in vectors.load("valid")
    if v.data["root"] == "asset_tracker"
    and "payload" in v.data
    and v.data["topic"].split("/", 2)[-1] in INBOUND
]


@TIMEOUT
@FUZZ
@given(data=st.data(), vector=st.sampled_from(VECTORS))
async def test_fuzz_the_hub_with_mutated_messages(
    hass: HomeAssistant,
    setup_entry: Any,
    caplog: pytest.LogCaptureFixture,
    data: st.DataObject,
    vector: vectors.Vector,
) -> None:
    hub = setup_entry.runtime_data.hub
    payload = sparse_mutation(data, copy.deepcopy(vector.data["payload"]))
    rejected = sum(hub.rejected.values())
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="custom_components.asset_tracker")
    message = ReceiveMessage(
        vector.data["topic"], json.dumps(payload), 1, False, "asset_tracker/#", time.monotonic()
    )
    hub.ingest.on_message(message)  # an exception in a handler escapes here
    await hass.async_block_till_done()  # and routine events are applied in slices after it
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[0].getMessage()
    event("rejected" if sum(hub.rejected.values()) > rejected else "accepted")
