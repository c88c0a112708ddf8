"""The harness run recorded for Home Assistant (bench/accuracy/replay.py): what each node would have
put on the wire, and the harness's metrics over readings taken once a second."""

from __future__ import annotations

from typing import Any

from bench.accuracy.replay import Reading, Recording, agreement, figures, score
from bench.accuracy.scenario import build


def corridor() -> dict[str, Any]:
    """Two rooms side by side, a node in each, a tag walking between them."""
    return {
        "name": "corridor",
        "duration_s": 240,
        "warmup_s": 20,
        "floors": [{"id": "ground", "height": 0}],
        "rooms": [
            {"id": "a", "floor": "ground", "polygon": [[0, 0], [5, 0], [5, 4], [0, 4]]},
            {"id": "b", "floor": "ground", "polygon": [[5, 0], [10, 0], [10, 4], [5, 4]]},
        ],
        "walls": [{"floor": "ground", "from": [5, 0], "to": [5, 4]}],
        "nodes": [
            {"id": "a", "x": 1, "y": 2, "floor": "ground"},
            {"id": "b", "x": 9, "y": 2, "floor": "ground"},
        ],
        "tags": [
            {
                "id": "keys",
                "path": [
                    {"x": 2, "y": 2, "floor": "ground", "dwell_s": 40},
                    {"x": 8, "y": 2, "floor": "ground", "dwell_s": 40},
                ],
            }
        ],
        "radio": {"shadowing": {"sigma_db": 2}, "fading_sigma_db": 2, "advert_loss": 0.05},
    }


async def test_events_are_numbered_and_batched_as_a_node_sends_them() -> None:
    recording = Recording(build(corridor()), seed=2, locators=("ours",), extra=("ours_ha",))
    await recording.run()
    messages = recording.messages()
    seqs: dict[str, list[int]] = {}
    stamps: dict[str, list[tuple[int, int]]] = {}
    for message in messages:
        assert message.online is None
        assert message.events
        for event, stamp in message.events:
            seqs.setdefault(message.node, []).append(stamp.seq)
            stamps.setdefault(message.node, []).append(stamp.hlc)
            assert stamp.hlc[0] <= message.at_ms  # stamped when emitted, before it is delivered
            assert event.obs_ms is None or event.obs_ms <= stamp.hlc[0]
        if message.routine:  # a batch window's events together, critical ones alone
            assert all(e.priority == "routine" for e, _stamp in message.events)
        else:
            assert len(message.events) == 1
    for node, numbers in seqs.items():
        # every seq once; in emission order the stamps rise with the seq (outbox order)
        assert len(set(numbers)) == len(numbers)
        by_seq = [h for _s, h in sorted(zip(numbers, stamps[node], strict=True))]
        assert by_seq == sorted(by_seq)
        assert len(set(by_seq)) == len(by_seq)
    sent = sum(sim.counts.messages for sim in recording.edge.nodes.values())
    assert sent - len(recording.edge.nodes) <= len(messages) <= sent


async def test_readings_once_a_second_score_as_the_harness_does() -> None:
    recording = Recording(build(corridor()), seed=2, locators=("ours",), extra=("ours_ha",))
    result = await recording.run()
    assert [s.t_ms for s in recording.seconds] == list(range(1000, 240_001, 1000))
    answers = recording.answers["ours"]
    per_second = figures(recording, {"ours": score(recording, "ours", answers)})["ours"]
    harness = result["locators"]["ours"]
    assert abs(per_second["room_accuracy_pct"] - harness["room_accuracy_pct"]) < 2
    assert per_second["crossings"] == harness["crossings"]
    # readings that say nothing score as no room, and agree with nothing
    silent = [[Reading(None, None) for _tag in row] for row in answers]
    nothing = figures(recording, {"x": score(recording, "x", silent)})["x"]
    assert nothing["room_accuracy_pct"] == 0.0
    assert nothing["no_room_pct"] == 100.0
    assert agreement(answers, answers)["same_room_pct"] == 100.0
    assert agreement(silent, answers)["same_room_pct"] < 10
