"""The anomaly harness: labelled sensor and tag traces through the edge's real rules (docs/alerts.md)."""
