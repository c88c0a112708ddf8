"""What the soak campaign checks, from what the user sees:

- every event an edge process appended (its commit log, plus what store reads found) is applied in
  Home Assistant exactly once (the integration's debug line per applied identity), or counted: lost
  in a power cut before it reached the integration (the cut took it out of the store; allowed with
  `storage.sync: normal`, and for `full` only while its commit had not finished), taken out of a
  store by a restored backup, or purged by the outbox (its own counter);
- no identity (node, epoch, seq) is applied for two different events, and every applied line names
  an event that was appended, with the HLC and asset it was appended with;
- order: on each node a later event carries a higher HLC (an exception is allowed only across a
  restored backup, when the node's clock restarts from the backup's lease); and the reading
  sensor of each asset, as Home Assistant's recorder kept it, never steps from a newer (HLC, node)
  to an older one;
- the entity states equal a replay of the applied log: per asset the value of the applied event
  with the highest (HLC, node), read through the REST API;
- no node's clock runs more than 2 s ahead of physical time: its HLC against real time, and its
  health `clock.ahead_ms` while its own clock shows real time (while the campaign has set it back,
  the HLC rightly stays ahead of it: a clock never goes back);
- recovery per fault kind: from the fault's end until the integration applies one of that node's
  events committed after it. Faults overlap (a kill during a broker restart waits for Home
  Assistant's MQTT reconnect); a sample is *isolated* when no other fault on that node or on every
  node was active between the fault's start and its recovery. Targets are judged on isolated
  samples; figures over all samples are reported next to them.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from e2e.hass_process import HassClient, websocket

from soak.parts import BLOCK, NODE_SPAN

if TYPE_CHECKING:
    from soak.ledger import Ledger
    from soak.run import Campaign, Fault

LEASE_MS = 2_000
TARGET_P95_S = {"kill": 5.0, "broker_restart": 5.0, "partition": 30.0}
READING_KEY = "reading_soak_n"

Order = tuple[int, int, str]


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat()


def replay(ledger: Ledger) -> dict[str, tuple[Order, int]]:
    """Per asset, the (HLC, node) and value of the newest applied event carrying the reading."""
    newest: dict[str, tuple[Order, int]] = {}
    for item in ledger.applied:
        if item.run is None:
            continue
        event = ledger.events.get((item.node, item.run, item.seq))
        if event is None or event.stored.value is None:
            continue
        order = (item.hlc[0], item.hlc[1], item.node)
        if item.asset not in newest or order > newest[item.asset][0]:
            newest[item.asset] = (order, event.stored.value)
    return newest


async def read_entities(campaign: Campaign, client: HassClient) -> dict[str, Any]:
    """The reading sensors' states through the REST API (once they show the replay, or after a
    deadline) and their history from the recorder."""
    async with websocket(client) as ws:
        registry = await ws.call("config/entity_registry/list")
    ids = {
        e["unique_id"].split(":")[2]: e["entity_id"]
        for e in registry
        if e["platform"] == "asset_tracker" and e["unique_id"].endswith(f":{READING_KEY}")
    }
    expected = {asset: value for asset, (_o, value) in replay(campaign.ledger).items()}

    def shown(states: dict[str, Any]) -> dict[str, Any]:
        return {a: states.get(e, {}).get("state") for a, e in ids.items()}

    def equal(now: dict[str, Any]) -> bool:
        return all(_number(now.get(a)) == v for a, v in expected.items())

    deadline = time.monotonic() + 30
    states = shown(await client.states())
    while not equal(states) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        states = shown(await client.states())
    history: dict[str, list[tuple[str, float]]] = {}
    if ids:
        # the recorder commits every second: wait until its last row is the state shown
        deadline = time.monotonic() + 30
        while True:
            history = await _history(campaign, client, ids)
            caught_up = all(
                (history.get(a) or [("", 0.0)])[-1][0] == states.get(a)
                for a in ids
                if states.get(a)
            )
            if caught_up or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    return {"entity_ids": ids, "states": states, "expected": expected, "history": history}


async def _history(
    campaign: Campaign, client: HassClient, ids: dict[str, str]
) -> dict[str, list[tuple[str, float]]]:
    """Per asset, the recorded states of its reading sensor with their time (campaign's
    monotonic clock)."""
    start = _iso(campaign.t0_wall - 600)
    end = _iso(time.time() + 60)
    path = (
        f"/api/history/period/{start}?filter_entity_id={','.join(ids.values())}"
        f"&end_time={end}&minimal_response&no_attributes&significant_changes_only=0"
    )
    rows = await client.get(path.replace("+00:00", "Z"))
    by_entity = {entity: asset for asset, entity in ids.items()}
    wall_minus_mono = time.time() - time.monotonic()
    history: dict[str, list[tuple[str, float]]] = {}
    for series in rows:
        if not series:
            continue
        entity = series[0].get("entity_id")
        asset = by_entity.get(entity)
        if asset is not None:
            history[asset] = [
                (
                    str(row.get("state")),
                    datetime.fromisoformat(row["last_changed"]).timestamp() - wall_minus_mono,
                )
                for row in series
            ]
    return history


def _number(state: Any) -> int | None:
    try:
        value = float(state)
    except (TypeError, ValueError):
        return None
    return int(value) if value.is_integer() else None


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered), math.ceil(0.95 * len(ordered))) - 1]
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
    }


# events ----------------------------------------------------------------------------------------


def event_figures(campaign: Campaign) -> dict[str, Any]:
    ledger = campaign.ledger
    removed = campaign.removed
    times: Counter[tuple[str, int, int]] = Counter()
    identities: dict[tuple[str, int, int], set[tuple[str, int, int]]] = defaultdict(set)
    unknown: list[dict[str, Any]] = []
    mismatched: list[dict[str, Any]] = []
    for item in ledger.applied:
        key = (item.node, item.run or 0, item.seq)
        event = ledger.events.get(key)
        if event is None:
            unknown.append(ledger.summary_of(item))
            continue
        if event.stored.hlc != item.hlc or event.stored.asset != item.asset:
            mismatched.append(ledger.summary_of(item))
        times[key] += 1
        identities[(item.node, item.epoch, item.seq)].add(key)
    duplicated = {k: c - 1 for k, c in times.items() if c > 1}
    applications: dict[tuple[str, int, int], list[tuple[int, int]]] = defaultdict(list)
    for item in ledger.applied:
        key = (item.node, item.run or 0, item.seq)
        if key in duplicated:
            applications[key].append((item.start, item.epoch))
    causes: Counter[str] = Counter()
    for apps in applications.values():
        starts = {a[0] for a in apps}
        epochs = {a[1] for a in apps}
        if len(epochs) > 1:
            causes["under two epochs"] += len(apps) - 1
        elif len(starts) > 1:
            causes["same epoch, applied again after a Home Assistant restart"] += len(apps) - 1
        else:
            causes["same epoch, same Home Assistant run"] += len(apps) - 1
    reused = {i: sorted(keys) for i, keys in identities.items() if len(keys) > 1}
    per_node: dict[str, dict[str, Any]] = {}
    lost_sample: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    for node in campaign.nodes:
        keys = [k for k in ledger.events if k[0] == node.name]
        missing = [k for k in keys if k not in times]
        in_cut = [k for k in missing if k in removed.by_cut]
        full_committed = [k for k in in_cut if k in removed.committed_by_full_cut]
        in_restore = [k for k in missing if k in removed.by_restore and k not in removed.by_cut]
        rest = [k for k in missing if k not in removed.by_cut and k not in removed.by_restore]
        purged = min(len(rest), node.figures.dropped)
        unexplained = len(rest) - purged
        for key in rest[:5] if unexplained else []:
            stored = ledger.events[key].stored
            lost_sample.append({"node": key[0], "run": key[1], "seq": key[2], "n": stored.n})
        row = {
            "sync": node.sync,
            "appended": len(keys),
            "applied": sum(1 for k in keys if k in times),
            "lost_in_power_cuts": len(in_cut) - len(full_committed),
            "committed_lost_with_sync_full": len(full_committed),
            "lost_in_restores": len(in_restore),
            "purged": purged,
            "lost_unexplained": unexplained,
            "duplicated": sum(c for k, c in duplicated.items() if k[0] == node.name),
            "lost_counted_by_edge": sum(node.figures.rotations.values()),
            "rotations_seen": len(node.figures.rotations),
            "processes": node.processes,
            "commit_errors": node.figures.commit_errors,
            "ack_ahead_max": node.figures.ack_ahead,
            "stores_moved_aside": len(node.figures.recovered_stores),
            "unexpected_exits": len(node.figures.unexpected_exits),
        }
        per_node[node.name] = row
        for k, v in row.items():
            if isinstance(v, int) and not isinstance(v, bool):
                totals[k] += v
    return {
        "per_node": per_node,
        "totals": dict(totals),
        "applied_lines": len(ledger.applied),
        "found_in_stores_only": ledger.found_in_stores_only,
        "duplicated": sum(duplicated.values()),
        "duplicated_by_cause": dict(causes),
        "duplicated_sample": [
            {"event": list(k), "applied (ha start, epoch)": applications[k]}
            for k in list(duplicated)[:10]
        ],
        "identities_reused": len(reused),
        "identities_reused_sample": [
            [list(i), [list(k) for k in ks]] for i, ks in list(reused.items())[:10]
        ],
        "applied_not_appended": len(unknown),
        "applied_not_appended_sample": unknown[:10],
        "applied_with_other_hlc_or_asset": len(mismatched),
        "applied_with_other_hlc_or_asset_sample": mismatched[:10],
        "lost_sample": lost_sample,
        "epochs_closed_for_reuse": len(ledger.reuse_closures),
        "closing_acks_seen": len(campaign.closing_acks),
        "unexpected_exits": {
            n.name: n.figures.unexpected_exits[:5]
            for n in campaign.nodes
            if n.figures.unexpected_exits
        },
        "stores_moved_aside": {
            n.name: n.figures.recovered_stores[:5]
            for n in campaign.nodes
            if n.figures.recovered_stores
        },
    }


# order ---------------------------------------------------------------------------------------


def order_figures(campaign: Campaign, entities: dict[str, Any]) -> dict[str, Any]:
    ledger = campaign.ledger
    restored_processes: dict[str, list[int]] = defaultdict(list)
    for fault in campaign.faults:
        if fault.kind == "restore" and fault.node is not None and "process" in fault.detail:
            restored_processes[fault.node].append(int(fault.detail["process"]))
    regressions = 0
    across_restore = 0
    regression_sample: list[dict[str, Any]] = []
    for node in campaign.nodes:
        base = (node.index + 1) * NODE_SPAN
        events = sorted(
            (e.stored for e in ledger.events.values() if e.node == node.name), key=lambda s: s.n
        )
        for a, b in itertools.pairwise(events):
            if a.hlc < b.hlc:
                continue
            pa, pb = (a.n - base) // BLOCK, (b.n - base) // BLOCK
            if any(pa < r <= pb for r in restored_processes[node.name]):
                across_restore += 1
                continue
            regressions += 1
            if len(regression_sample) < 10:
                regression_sample.append(
                    {"node": node.name, "n": [a.n, b.n], "hlc": [list(a.hlc), list(b.hlc)]}
                )
    # what the user saw: the reading sensors' history, value by value
    by_value: dict[int, Order] = {}
    for event in ledger.events.values():
        if event.stored.value is not None:
            by_value[event.stored.value] = (event.stored.hlc[0], event.stored.hlc[1], event.node)
    state_steps = 0
    state_regressions = 0
    unknown_values = 0
    state_sample: list[dict[str, Any]] = []
    after_ha_restart = 0
    for asset, states in (entities.get("history") or {}).items():
        previous: Order | None = None
        for raw, at_m in states:
            value = _number(raw)
            if value is None:
                continue
            order = by_value.get(value)
            if order is None:
                unknown_values += 1
                continue
            if previous is not None and order != previous:
                state_steps += 1
                if order < previous:
                    state_regressions += 1
                    # the first state a Home Assistant start writes is the one it restored
                    since = [at_m - m for m in campaign.ha_starts_m if 0 <= at_m - m < 60]
                    after_ha_restart += bool(since)
                    if len(state_sample) < 10:
                        state_sample.append(
                            {
                                "asset": asset,
                                "from": previous,
                                "to": order,
                                "s_after_a_ha_start": round(min(since), 1) if since else None,
                            }
                        )
            previous = order
    # arrivals older than what the asset already showed: kept as history, not shown (by design)
    late = 0
    newest: dict[str, Order] = {}
    for item in ledger.applied:
        order = (item.hlc[0], item.hlc[1], item.node)
        if item.asset in newest and order < newest[item.asset]:
            late += 1
        else:
            newest[item.asset] = order
    return {
        "node_hlc_regressions": regressions,
        "node_hlc_regressions_sample": regression_sample,
        "node_hlc_regressions_across_restore": across_restore,
        "state_history_steps": state_steps,
        "state_history_regressions": state_regressions,
        "state_history_regressions_sample": state_sample,
        "state_history_regressions_within_60_s_of_a_ha_start": after_ha_restart,
        "state_history_unknown_values": unknown_values,
        "applied_older_than_shown": late,
    }


def state_figures(entities: dict[str, Any]) -> dict[str, Any]:
    expected: dict[str, int] = entities.get("expected") or {}
    states: dict[str, Any] = entities.get("states") or {}
    mismatches = {
        asset: {"shown": states.get(asset), "replay": value}
        for asset, value in expected.items()
        if _number(states.get(asset)) != value
    }
    return {
        "assets_checked": len(expected),
        "entity_ids": entities.get("entity_ids"),
        "mismatches": mismatches,
    }


def clock_figures(campaign: Campaign) -> dict[str, Any]:
    per_node = {
        n.name: {
            "ahead_of_real_ms_max": n.clock.ahead_of_real_ms,
            "health_ahead_ms_max_at_true_time": n.clock.health_ahead_ms_true,
            "health_ahead_ms_max_while_set_back": n.clock.health_ahead_ms_set_back,
            "backward_jumps_max": n.clock.backward_jumps,
            "remote_clock_rejected_max": n.clock.rejected,
            "statuses": n.clock.statuses,
        }
        for n in campaign.nodes
    }
    return {
        "per_node": per_node,
        "ahead_of_real_ms_max": max(r["ahead_of_real_ms_max"] for r in per_node.values()),
        "health_ahead_ms_max_at_true_time": max(
            r["health_ahead_ms_max_at_true_time"] for r in per_node.values()
        ),
    }


# faults and recovery -------------------------------------------------------------------------


def _variant(fault: Fault) -> str:
    d = fault.detail
    if fault.kind == "partition":
        return f"partition:{d.get('how')}"
    if fault.kind == "broker_restart":
        return f"broker_restart:{'persistent' if d.get('persistence') else 'no persistence'}"
    if fault.kind == "clock_jump":
        return f"clock_jump:{d.get('direction')}"
    if fault.kind == "power_cut":
        return f"power_cut:sync={d.get('sync')}"
    return fault.kind


def recovery_figures(campaign: Campaign) -> dict[str, Any]:
    faults = campaign.faults
    timeout = 120.0

    def active_until(fault: Fault) -> float:
        ends = [
            s.recovered_m if s.recovered_m is not None else s.end_m + timeout for s in fault.samples
        ]
        return max(ends, default=fault.end_m)

    until = {f.id: active_until(f) for f in faults}
    by_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    unrecovered: Counter[str] = Counter()
    overlapped_by: Counter[str] = Counter()
    timeline: list[dict[str, Any]] = []
    t0 = campaign.started_m
    for fault in faults:
        row: dict[str, Any] = {
            "id": fault.id,
            "kind": fault.kind,
            "node": fault.node,
            "start_s": round(fault.start_m - t0, 2),
            "end_s": round(fault.end_m - t0, 2),
            "detail": fault.detail,
            "samples": [],
        }
        timeline.append(row)
        for sample in fault.samples:
            window_end = sample.recovered_m if sample.recovered_m is not None else until[fault.id]
            others = [
                g
                for g in faults
                if g.id != fault.id
                and (g.node is None or g.node == sample.node)
                and g.start_m < window_end
                and until[g.id] > fault.start_m
            ]
            for kind in {fault.kind, _variant(fault)}:
                seconds = sample.seconds
                if seconds is None:
                    unrecovered[kind] += 1
                    continue
                by_kind[kind]["all"].append(seconds)
                if not others:
                    by_kind[kind]["isolated"].append(seconds)
            for g in others:
                overlapped_by[f"{fault.kind} by {g.kind}"] += 1
            row["samples"].append(
                {
                    "node": sample.node,
                    "recovery_s": None if sample.seconds is None else round(sample.seconds, 3),
                    "overlapped_by": [g.id for g in others],
                }
            )
    table = {
        kind: {
            "all": _stats(v["all"]),
            "isolated": _stats(v["isolated"]),
            "unrecovered": unrecovered.get(kind, 0),
        }
        for kind, v in sorted(by_kind.items())
    }
    for kind, count in unrecovered.items():
        table.setdefault(kind, {"all": _stats([]), "isolated": _stats([]), "unrecovered": count})
    starts = [x for n in campaign.nodes for x in n.start_to_connected_s]
    return {
        "per_kind": table,
        "overlaps": dict(overlapped_by.most_common(20)),
        "edge_start_to_broker_session_s": _stats(starts),
        "timeline": timeline,
    }


def broker_breakdown(campaign: Campaign) -> dict[str, Any]:
    """After a broker restart: when each edge had a broker session again, and when Home Assistant
    was back (the integration's live `online`, published once its MQTT client reconnected)."""
    ha: list[float] = []
    edges: list[float] = []
    for fault in campaign.faults:
        if fault.kind != "broker_restart":
            continue
        after = [m - fault.end_m for m in campaign.host_online_m if m >= fault.end_m]
        if after and after[0] < 120:
            ha.append(after[0])
        for node in campaign.nodes:
            back = [m - fault.end_m for m in node.connected_at_m if m >= fault.end_m]
            if back and back[0] < 120:
                edges.append(back[0])
    return {
        "edge_session_after_broker_restart_s": _stats(edges),
        "ha_online_after_broker_restart_s": _stats(ha),
    }


def injected_figures(campaign: Campaign) -> dict[str, Any]:
    counts = Counter(f.kind for f in campaign.faults)
    variants = Counter(_variant(f) for f in campaign.faults if _variant(f) != f.kind)
    detail: Counter[str] = Counter()
    for f in campaign.faults:
        d = f.detail
        if f.kind == "power_cut":
            detail[f"power_cut trigger: {d.get('trigger')}"] += 1
            detail[f"power_cut sectors: {d.get('sectors')}"] += 1
        if f.kind == "disk_full" and d.get("commit_failed"):
            detail["disk_full that failed a commit"] += 1
    per_node = Counter(f"{f.kind}@{f.node}" for f in campaign.faults if f.node is not None)
    return {
        "planned": campaign.planned,
        "injected": {k: counts.get(k, 0) for k in campaign.planned},
        "not_injected": campaign.shortfall,
        "variants": dict(sorted(variants.items())),
        "detail": dict(sorted(detail.items())),
        "per_node": dict(sorted(per_node.items())),
        "sigkills_of_edges": counts.get("kill", 0) + counts.get("power_cut", 0),
    }


# the verdict -----------------------------------------------------------------------------------


def evaluate(campaign: Campaign, final: dict[str, Any]) -> dict[str, Any]:
    events = event_figures(campaign)
    order = order_figures(campaign, final)
    states = state_figures(final)
    clock = clock_figures(campaign)
    recovery = recovery_figures(campaign)
    injected = injected_figures(campaign)
    totals = events["totals"]
    lost = totals.get("lost_unexplained", 0) + totals.get("lost_in_restores", 0)
    targets: list[dict[str, Any]] = []

    def target(name: str, value: Any, ok: bool, note: str = "") -> None:
        targets.append({"target": name, "value": value, "ok": bool(ok), "note": note})

    short = {k: v for k, v in injected["planned"].items() if injected["injected"][k] < v}
    target("every planned fault injected", short or "all", not short)
    target(
        "lost (beyond counted power-cut loss) = 0",
        lost,
        lost == 0,
        f"power-cut loss counted apart: {totals.get('lost_in_power_cuts', 0)}",
    )
    target(
        "committed events lost with sync=full = 0",
        totals.get("committed_lost_with_sync_full", 0),
        totals.get("committed_lost_with_sync_full", 0) == 0,
    )
    target("duplicated = 0", events["duplicated"], events["duplicated"] == 0)
    out_of_order = order["node_hlc_regressions"] + order["state_history_regressions"]
    target(
        "out of order = 0",
        out_of_order,
        out_of_order == 0,
        "HLC regressions on a node + steps back in a reading sensor's history",
    )
    reused = (
        events["identities_reused"]
        + events["applied_not_appended"]
        + events["applied_with_other_hlc_or_asset"]
    )
    target("identities reused = 0", reused, reused == 0)
    target(
        "entity states = replay of the applied log",
        len(states["mismatches"]),
        not states["mismatches"] and states["assets_checked"] > 0,
    )
    target(
        "node clock <= 2 s ahead of physical time",
        clock["ahead_of_real_ms_max"],
        clock["ahead_of_real_ms_max"] <= LEASE_MS,
        "HLC wall part minus real time, every status line",
    )
    target(
        "health clock.ahead_ms <= 2 s while the node clock is right",
        clock["health_ahead_ms_max_at_true_time"],
        clock["health_ahead_ms_max_at_true_time"] <= LEASE_MS,
    )
    phantom = {
        name: row["lost_counted_by_edge"]
        for name, row in events["per_node"].items()
        if row["lost_counted_by_edge"]
        > row["lost_in_power_cuts"]
        + row["committed_lost_with_sync_full"]
        + row["lost_in_restores"]
        + row["purged"]
    }
    target(
        "edge-reported losses within those the campaign counted",
        phantom or "yes",
        not phantom,
        "outbox.rotated.lost per rotation vs events taken out of the store by cuts and restores",
    )
    exits = totals.get("unexpected_exits", 0)
    target("no edge process ended by itself", exits, exits == 0)
    broker = broker_breakdown(campaign)
    for kind, limit in TARGET_P95_S.items():
        row = recovery["per_kind"].get(kind, {})
        iso = row.get("isolated", {})
        p95 = iso.get("p95")
        note = (
            f"isolated n {iso.get('n')}; all samples: p95 {row.get('all', {}).get('p95')} s, "
            f"n {row.get('all', {}).get('n')}"
        )
        if kind == "broker_restart":
            edge = broker["edge_session_after_broker_restart_s"]
            ha = broker["ha_online_after_broker_restart_s"]
            note += (
                f"; edges back on the broker p95 {edge['p95']} s, Home Assistant's MQTT client "
                f"back p50 {ha['p50']} s (it retries every 10 s)"
            )
        target(
            f"recovery p95 after {kind} <= {limit:g} s (isolated samples)",
            p95,
            p95 is not None and p95 <= limit,
            note,
        )
    unrecovered = sum(
        r.get("unrecovered", 0) for k, r in recovery["per_kind"].items() if ":" not in k
    )
    target("every fault recovered from within 120 s", unrecovered, unrecovered == 0)
    return {
        "form": f"{campaign.minutes:g} minutes",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": campaign.seed,
        "rate_events_per_s_per_node": campaign.rate,
        "duration_s": final.get("duration_s"),
        "drained": final.get("drained"),
        "nodes": {n.name: {"sync": n.sync, "assets": n.assets} for n in campaign.nodes},
        "edge_config": campaign.nodes[0].config() | {"storage": "per node (see nodes)"},
        "injected": injected,
        "events": events,
        "order": order,
        "states": states,
        "clock": clock,
        "recovery": recovery,
        "broker": broker,
        "notes": campaign.notes,
        "ha_warnings": campaign.ledger.warnings,
        "ha_warning_samples": campaign.ledger.warning_samples[:20],
        "targets": targets,
        "passed": all(t["ok"] for t in targets),
    }
