# The two commands: `make setup` prepares everything (run as root on Debian/Ubuntu), `make test` runs
# the whole suite. `make demo` runs the main job; `make bench` writes build/bench/report.{json,md}.
SHELL := /bin/bash
PY314 := scripts/py314
PY311 := .venv311/bin/python

.PHONY: setup test test-edge311 test-edge314 test-integration lint bench bench-fleet accuracy accuracy-ha alerts demo demo-check e2e screenshots faults faults-long faults-cluster fuzz check-wheels clean soak

setup:
	bash scripts/toolchain.sh

test:
	bash scripts/run-tests.sh

test-edge311:
	$(PY311) -m pytest tests/edge -p no:cacheprovider

test-edge314:
	$(PY314) python -m pytest tests/edge -p no:cacheprovider -p no:homeassistant

test-integration:
	$(PY314) python -m pytest tests/integration -p no:cacheprovider

lint:
	$(PY314) ruff check custom_components edge_addon tests bench
	$(PY314) ruff format --check custom_components edge_addon tests bench
	$(PY314) mypy
	$(PY311) -m mypy --config-file pyproject.toml edge_addon/asset_tracker_edge

clean:
	rm -rf build .venv311 .venv314 .venv-ha-*

# Targets whose scripts are owned by the parts they exercise.
bench:
	$(PY314) python bench/report.py

# the fleet benchmark in its full form: 50 nodes x 100 tags (5,000 assets, 4 entries) into one
# Home Assistant with the recorder, through mosquitto and through a three-node RabbitMQ cluster,
# a 300 s window each (about 20 minutes); `make bench` runs its quick form (mosquitto, 60 s).
# Writes build/bench/parts/fleet.json, then merges the parts into build/bench/report.{json,md}
bench-fleet:
	$(PY314) python bench/fleet.py --full
	$(PY314) python bench/report.py --no-run

# location accuracy: every scenario of bench/accuracy/scenarios at full length, three locators;
# writes build/accuracy/report.{json,md} (ACCURACY_SEED=n for another seed); `make bench` runs a
# quick form
accuracy:
	$(PY314) python -m bench.accuracy --seed $(or $(ACCURACY_SEED),1)

# location accuracy through Home Assistant: each run's edge events over a real mosquitto into the
# integration in a Home Assistant test instance, its entities read every simulated second and scored
# next to the off-line estimator of the same run; writes build/accuracy/report-ha.{json,md}
# (ACCURACY_HA_SCENARIOS="a.yaml b.yaml", ACCURACY_SEED=n, ACCURACY_HA_DURATION=s,
# ACCURACY_HA_MODES="rooms plan"; default: the companion's set-up and house_6db, full length)
accuracy-ha:
	ACCURACY_SEED=$(or $(ACCURACY_SEED),1) $(PY314) python -m pytest tests/integration/accuracy_ha.py \
		-p no:cacheprovider -q -s -p no:logging

# anomaly alerts: a week of normal sensor and tag traces and each injected incident four times,
# through the edge's rules; writes build/alerts/report.{json,md} (ALERTS_SEED=n for another seed);
# `make bench` runs a quick form (docs/alerts.md)
alerts:
	$(PY314) python -m bench.alerts --seed $(or $(ALERTS_SEED),1)

demo:
	bash scripts/demo.sh

# the demo's scenario for its full 10 minutes on a stack of its own: notifications equal to the
# incidents the simulator injected and no repair (`make test` runs it compressed to 2 minutes);
# report in build/e2e-demo/demo_scenario.json
demo-check:
	ASSET_TRACKER_DEMO_MINUTES=$(or $(DEMO_MINUTES),10) $(PY314) python -m pytest tests/e2e/test_demo_scenario.py \
		-p no:cacheprovider -p no:homeassistant

e2e:
	$(PY314) python -m pytest tests/e2e -p no:cacheprovider -p no:homeassistant

# the README's pictures, refreshed on purpose: the end-to-end dashboard and adoption tests take
# them under build/e2e/ and build/e2e-demo/ (tests never write into the tracked tree), this
# copies them to docs/
screenshots:
	$(PY314) python -m pytest tests/e2e/test_end_to_end.py -p no:cacheprovider -p no:homeassistant \
		-k "test_assets_appear_with_their_areas or test_dashboard_renders_the_asset_cards_in_chromium or test_floor_plan_view"
	cp build/e2e/dashboard.png docs/dashboard.png
	cp build/e2e/floor-plan.png docs/floor-plan.png
	$(PY314) python -m pytest tests/e2e/test_demo_scenario.py -p no:cacheprovider -p no:homeassistant \
		-k test_adding_a_heard_tag_takes_two_clicks_and_reaches_every_node
	cp build/e2e-demo/screenshots/add_asset_picked.png docs/add_asset.png

faults:
	$(PY314) python -m pytest tests/faults -p no:cacheprovider -p no:homeassistant

faults-long:
	ASSET_TRACKER_FAULTS=long $(PY314) python -m pytest tests/faults -p no:cacheprovider -p no:homeassistant

# the fault campaign on a three-node RabbitMQ cluster in its long form (21 node kills, 5
# partitions); `make faults` runs its short form. Report: build/faults-cluster/report.{json,md}
faults-cluster:
	ASSET_TRACKER_FAULTS=long $(PY314) python -m pytest tests/faults/test_cluster.py -p no:cacheprovider -p no:homeassistant

# 100,000 generated inputs per fuzz test (hours on a small machine); `make test` runs 300 each
fuzz:
	ASSET_TRACKER_FUZZ=long $(PY314) python -m pytest -p no:cacheprovider -p no:homeassistant \
		tests/edge/test_fuzz_protocol.py tests/edge/test_fuzz_boundaries.py tests/edge/test_fuzz_node.py \
		--hypothesis-show-statistics
	ASSET_TRACKER_FUZZ=long $(PY314) python -m pytest -p no:cacheprovider --no-cov \
		tests/integration/test_fuzz_protocol.py tests/integration/test_fuzz_services.py \
		tests/integration/test_fuzz_hub.py \
		--hypothesis-show-statistics

check-wheels:
	bash scripts/check-wheels.sh

# soak campaign: every fault at the counts of an hour (SOAK_MINUTES=60 by default, counts scale with
# it), real mosquitto, `hass` and three edge processes; writes build/soak/report.{json,md}
soak:
	$(PY314) python tests/soak/run.py --minutes $(or $(SOAK_MINUTES),60)
