#!/usr/bin/with-contenv bashio
# shellcheck shell=bash
# Starts the edge node with the add-on options and the broker the Supervisor provides
# (the `mqtt` service: host, port, username, password). The rendered configuration holds the
# broker password, so it is owner-only and left out of backups (config.yaml: backup_exclude).
set -euo pipefail

config=/data/edge-config.json

bashio::log.info "Reading the add-on options and the MQTT service from the Supervisor"
python3 -m asset_tracker_edge.supervisor --options /data/options.json --output "${config}"

bashio::log.info "Starting the Asset Tracker edge node"
exec asset-tracker-edge run --config "${config}"
