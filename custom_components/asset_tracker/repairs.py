"""Repair issues about the fleet's nodes: offline, clock far ahead, and outboxes losing events.

Each is raised from what a node reports (or stops reporting) and removed once the cause is gone,
so the repairs dashboard shows only what still needs a person.
"""

from __future__ import annotations

import logging

from homeassistant.helpers import issue_registry as ir

from .const import CONF_OFFLINE_AFTER, DOMAIN
from .fleet import Fleet
from .models import NodeState

_LOGGER = logging.getLogger(__name__)
WRITES_OK_S = 60  # of node uptime without a new failed commit before the repair goes away


class Repairs:
    """Raises and removes the issues of one fleet's nodes."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def _raise(
        self, issue_id: str, severity: ir.IssueSeverity, key: str, placeholders: dict[str, str]
    ) -> None:
        ir.async_create_issue(
            self._fleet.hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            severity=severity,
            translation_key=key,
            translation_placeholders=placeholders,
        )

    def _issue_id(self, kind: str, node: NodeState) -> str:
        return f"{kind}_{self._fleet.entry_id}_{node.node_id}"

    def node_online(self, node: NodeState) -> None:
        ir.async_delete_issue(self._fleet.hass, DOMAIN, self._issue_id("node_offline", node))

    def check_offline(self, now: int) -> None:
        """Nodes silent for longer than the offline limit (a node that died says nothing)."""
        limit = int(self._fleet.options[CONF_OFFLINE_AFTER]) * 1000
        for node in self._fleet.nodes.values():
            seen = node.last_seen_ms or 0
            if not node.online and now - seen > limit:
                self._raise(
                    self._issue_id("node_offline", node),
                    ir.IssueSeverity.WARNING,
                    "node_offline",
                    {"node": node.name},
                )

    def clock_merged(self, node: NodeState, merged: bool) -> None:
        """A clock too far ahead is not merged; said once, until the node's clock is merged."""
        issue_id = self._issue_id("clock_skew", node)
        if merged:
            if node.clock_rejected:
                node.clock_rejected = 0
                ir.async_delete_issue(self._fleet.hass, DOMAIN, issue_id)
            return
        node.clock_rejected += 1
        if node.clock_rejected == 1:
            _LOGGER.warning("Node %s clock is too far ahead; not merged", node.node_id)
            self._raise(issue_id, ir.IssueSeverity.WARNING, "clock_skew", {"node": node.name})

    def check_health(self, node: NodeState) -> None:
        """What a node's health report says about its outbox."""
        self._check_dropping(node)
        self._check_storage(node)
        self._check_rotation(node)
        self._check_broker(node)

    def _check_rotation(self, node: NodeState) -> None:
        """Events a node's store lost before they reached us cannot be recovered: say how many."""
        rotated = node.outbox.get("rotated") or {}
        lost = int(rotated.get("lost") or 0)
        at = int(rotated.get("at_ms") or 0)
        if lost and at > node.rotation_seen_ms:
            placeholders = {"node": node.name, "count": str(lost)}
            issue_id = self._issue_id("events_lost", node)
            self._raise(issue_id, ir.IssueSeverity.ERROR, "events_lost", placeholders)
        node.rotation_seen_ms = max(node.rotation_seen_ms, at)

    def _check_broker(self, node: NodeState) -> None:
        """A retained `offline` of ours that nothing live confirmed: the broker keeps retained
        messages per cluster node. The node sends anyway (acks keep delivery exact), but the
        broker lacks something the protocol leans on, and the user should know which."""
        transport = node.health.get("transport") or {}
        doubted = int(transport.get("stale_host_offline") or 0)
        if doubted > node.stale_offline_seen:
            _LOGGER.warning(
                "Node %s found a stale retained integration status on its broker; the broker "
                "keeps retained messages per cluster node",
                node.node_id,
            )
            placeholders = {"node": node.name, "count": str(doubted)}
            issue_id = f"broker_retained_scope_{self._fleet.entry_id}"
            self._raise(issue_id, ir.IssueSeverity.WARNING, "broker_retained_scope", placeholders)
        node.stale_offline_seen = doubted

    def _check_dropping(self, node: NodeState) -> None:
        dropped = node.dropped_total()
        if dropped > node.dropped_seen:
            placeholders = {"node": node.name, "count": str(dropped)}
            issue_id = self._issue_id("outbox_dropping", node)
            self._raise(issue_id, ir.IssueSeverity.WARNING, "outbox_dropping", placeholders)
        node.dropped_seen = dropped

    def _check_storage(self, node: NodeState) -> None:
        """A node whose outbox commits fail (a full disk) keeps events in memory only: say so."""
        errors = int(node.outbox.get("commit_errors") or 0)
        uptime = float(node.health.get("uptime_s") or 0)
        issue_id = self._issue_id("outbox_write_failing", node)
        if errors > node.commit_errors_seen:
            node.commit_errors_since = uptime
            placeholders = {"node": node.name, "count": str(errors)}
            self._raise(issue_id, ir.IssueSeverity.ERROR, "outbox_write_failing", placeholders)
        elif errors < node.commit_errors_seen or uptime - node.commit_errors_since >= WRITES_OK_S:
            # a restarted node, or one whose writes have succeeded for a while
            ir.async_delete_issue(self._fleet.hass, DOMAIN, issue_id)
        node.commit_errors_seen = errors
