"""Location accuracy harness: simulated buildings, radio and walks through the real edge pipeline.

`python -m bench.accuracy SCENARIO.yaml --seed 3` runs one scenario; `make accuracy` runs every
shipped scenario in `bench/accuracy/scenarios/`. See docs/accuracy.md.
"""
