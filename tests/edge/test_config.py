"""The edge configuration schema: the example parses, every bad input is one clear line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from asset_tracker_edge.config import (
    REDACTED,
    ConfigError,
    env_overrides,
    file_problems,
    load,
    redacted,
    validate,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "edge_addon" / "asset-tracker-edge.example.yaml"


def minimal(**sections: Any) -> dict[str, Any]:
    return {"node": {"id": "n1"}, **sections}


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert str(err.value) == "; ".join(err.value.problems)
    return err.value.problems


def test_the_example_is_valid_and_says_what_it_configures() -> None:
    config = load(EXAMPLE, environ={})
    assert config["node"]["id"] == "workshop"
    assert config["mqtt"]["tls"]["enabled"] is True
    assert [a["id"] for a in config["assets"]] == [
        "forklift_1",
        "pallet_jack",
        "freezer",
        "alice_phone",
    ]
    freezer = config["assets"][2]
    assert freezer["match"]["mac"] == "a4:c1:38:00:00:00"  # normalised to lower case
    assert freezer["thresholds"] == {"temperature_max": -12.0, "battery_voltage_min": 2.4}
    assert config["assets"][1]["type"] == "tag"  # the default


def test_minimal_config_gets_every_default() -> None:
    config = validate(minimal())
    assert config["mqtt"]["host"] == "127.0.0.1"
    assert "port" not in config["mqtt"]
    assert config["mqtt"]["root_topic"] == "asset_tracker"
    assert config["presence"] == {"away_timeout_s": 60, "debounce": 2}
    assert config["telemetry"] == {"interval_s": 30, "delta_db": 4.0, "min_interval_s": 2.0}
    assert config["rules"]["missing"] == {"enabled": True, "after_s": 900}
    assert config["rules"]["zscore"]["z"] == 4.0
    assert config["scanner"] == {"adapter": None, "mode": "passive"}
    assert config["assets"] == []
    assert config["simulator"]["seed"] == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, ["node: required key is missing"]),
        (minimal(bogus=1), ["bogus: unknown key"]),
        (minimal(mqtt={"hots": "x"}), ["mqtt.hots: unknown key"]),
        (minimal(mqtt={"port": "eighty"}), ["mqtt.port: expected int"]),
        (minimal(mqtt={"port": 70000}), ["mqtt.port: value must be at most 65535"]),
        (minimal(mqtt={"root_topic": "a/#"}), None),
        ({"node": {"id": "Bad Id"}}, None),
        (minimal(presence={"debounce": 0}), ["presence.debounce: value must be at least 1"]),
        (minimal(scanner={"mode": "loud"}), None),
        (minimal(scanner={"adapter": "wlan0"}), None),
        (minimal(rules={"zscore": {"z": 50}}), ["rules.zscore.z: value must be at most 10"]),
        (minimal(telemetry={"delta_db": 31}), ["telemetry.delta_db: value must be at most 30"]),
        (minimal(telemetry={"delta_db": "big"}), ["telemetry.delta_db: expected float"]),
        (
            minimal(telemetry={"min_interval_s": 0.1}),
            ["telemetry.min_interval_s: value must be at least 0.5"],
        ),
        (
            minimal(telemetry={"interval_s": 10, "min_interval_s": 20}),
            ["telemetry.min_interval_s: must be at most interval_s (20 > 10)"],
        ),
        (minimal(storage={"sync": "sometimes"}), None),
        (minimal(assets={"id": "x"}), None),
    ],
)
def test_each_problem_is_one_line_with_its_key_path(
    raw: dict[str, Any], expected: list[str] | None
) -> None:
    found = problems(raw)
    assert len(found) == 1
    assert "\n" not in found[0]
    if expected is not None:
        assert found == expected
    else:
        # the line names the key it is about
        key = next(iter(k for k in raw if k != "node" or len(raw) == 1))
        assert found[0].startswith(key)


def test_several_problems_are_all_reported_sorted() -> None:
    found = problems(
        minimal(mqtt={"port": 0, "keepalive_s": "soon"}, presence={"away_timeout_s": 1}, x=1)
    )
    assert found == sorted(found)
    assert found == [
        "mqtt.keepalive_s: expected int",
        "mqtt.port: value must be at least 1",
        "presence.away_timeout_s: value must be at least 5",
        "x: unknown key",
    ]


def asset(asset_id: str, **match: Any) -> dict[str, Any]:
    return {"id": asset_id, "match": match or {"mac": "aa:bb:cc:dd:ee:ff"}}


def test_duplicate_asset_ids_are_named() -> None:
    found = problems(minimal(assets=[asset("a"), asset("b"), asset("a"), asset("b")]))
    assert found == ["assets: duplicate asset ids: a, b; give each asset an id of its own"]


def test_duplicate_ids_are_reported_with_the_other_asset_problems() -> None:
    """voluptuous stops at the first failing validator: a bad item used to hide the duplicate."""
    found = problems(minimal(assets=[asset("a"), asset("a", mac="zz"), {"id": "b"}, asset("b")]))
    assert found == [
        "assets.1.match.mac: does not match regular expression ^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$",
        "assets.2.match: required key is missing",
        "assets: duplicate asset ids: a, b; give each asset an id of its own",
    ]


def tls(**fields: Any) -> dict[str, Any]:
    return validate(minimal(mqtt={"tls": {"enabled": True, **fields}}))


def test_the_tls_files_a_configuration_names_must_exist(tmp_path: Path) -> None:
    ca, cert = tmp_path / "ca.crt", tmp_path / "node.crt"
    assert file_problems(tls(ca_file=str(ca))) == [
        f"mqtt.tls.ca_file: {ca} does not exist; put the CA certificate that signed the broker's "
        "certificate there or set mqtt.tls.ca_file to where it is, or leave ca_file out to trust "
        "the system's CA certificates"
    ]
    ca.write_text("pem")
    assert file_problems(tls(ca_file=str(ca))) == []
    assert file_problems(tls(ca_file=str(tmp_path))) == [
        f"mqtt.tls.ca_file: {tmp_path} is a folder, not a file; put the CA certificate that "
        "signed the broker's certificate there or set mqtt.tls.ca_file to where it is, or leave "
        "ca_file out to trust the system's CA certificates"
    ]
    assert file_problems(tls(cert_file=str(cert), key_file=str(tmp_path / "node.key"))) == [
        f"mqtt.tls.cert_file: {cert} does not exist; put this node's client certificate (mutual "
        "TLS) there or set mqtt.tls.cert_file to where it is",
        f"mqtt.tls.key_file: {tmp_path / 'node.key'} does not exist; put the private key of "
        "cert_file there or set mqtt.tls.key_file to where it is",
    ]
    assert file_problems(tls(key_file=str(ca))) == [
        "mqtt.tls.key_file: set without cert_file; add the client certificate as cert_file or "
        "remove key_file"
    ]
    # without TLS the files are not used, so not checked
    assert file_problems(validate(minimal(mqtt={"tls": {"ca_file": str(tmp_path / "x")}}))) == []


def test_an_unreadable_tls_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("pem")
    ca.chmod(0)
    if os.geteuid() == 0:  # root reads every file: the permission check answers as for a user
        real_access = os.access
        monkeypatch.setattr(
            "asset_tracker_edge.config.os.access",
            lambda p, mode: False if Path(p) == ca else real_access(p, mode),
        )
    (line,) = file_problems(tls(ca_file=str(ca)))
    assert line.startswith(f"mqtt.tls.ca_file: {ca} is not readable by this user; put")


def test_every_bad_asset_is_reported_not_only_the_first() -> None:
    found = problems(
        minimal(
            assets=[
                asset("a", mac="zz"),
                asset("ok"),
                {"id": "b", "match": {}},
                {**asset("c"), "type": "x"},
                5,
            ]
        )
    )
    assert found == [
        "assets.0.match.mac: does not match regular expression ^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$",
        "assets.2.match: needs one of mac, ibeacon, eddystone or irk",
        "assets.3.type: value must be one of ['sensor', 'tag']",
        "assets.4: expected a dictionary",
    ]
    assert problems(minimal(assets="a")) == ["assets: expected a list"]


def test_an_asset_needs_a_match() -> None:
    assert problems(minimal(assets=[{"id": "a", "match": {}}])) == [
        "assets.0.match: needs one of mac, ibeacon, eddystone or irk"
    ]
    assert problems(minimal(assets=[{"id": "a"}])) == ["assets.0.match: required key is missing"]


@pytest.mark.parametrize(
    "match",
    [
        {"mac": "aa:bb:cc:dd:ee"},
        {"ibeacon": {"uuid": "not-a-uuid", "major": 1, "minor": 1}},
        {"ibeacon": {"uuid": "e2c56db5-dffb-48d2-b060-d0f5a71096e0", "major": 70000, "minor": 1}},
        {"eddystone": {"namespace": "00", "instance": "0123456789ab"}},
        {"irk": "ec0234a357c8ad05"},
        {"mac": "aa:bb:cc:dd:ee:ff", "colour": "red"},
    ],
)
def test_bad_matches_are_rejected_at_their_path(match: dict[str, Any]) -> None:
    found = problems(minimal(assets=[{"id": "a", "match": match}]))
    assert len(found) == 1
    assert found[0].startswith("assets.0.match.")


@pytest.mark.parametrize(
    ("thresholds", "expected"),
    [
        ({"speed_max": 3}, "assets.1.thresholds.speed_max: unknown key"),
        ({"temperature_min": "cold"}, "assets.1.thresholds.temperature_min: expected float"),
    ],
)
def test_bad_threshold_key_and_type(thresholds: dict[str, Any], expected: str) -> None:
    found = problems(minimal(assets=[asset("a"), {**asset("b"), "thresholds": thresholds}]))
    assert found == [expected]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "nope.yaml", environ={})
    assert err.value.problems == [f"{tmp_path / 'nope.yaml'}: file not found"]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  id: n1\nmqtt: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    (line,) = err.value.problems
    assert line.startswith(f"{path}: invalid YAML: ")
    assert "line 4" in line or "line 3" in line


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    assert err.value.problems == [f"{path}: the top level must be a mapping of sections"]


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_bytes(b"node:\n  id: \xff\xfe\n")
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    (line,) = err.value.problems
    assert line.startswith(f"{path}: cannot read")


def test_empty_file_is_only_missing_the_node(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, ""), environ={})
    assert err.value.problems == ["node: required key is missing"]


def test_env_overrides_build_a_tree_of_yaml_scalars() -> None:
    environ = {
        "ASSET_TRACKER__MQTT__PORT": "8883",
        "ASSET_TRACKER__MQTT__TLS__ENABLED": "true",
        "ASSET_TRACKER__PRESENCE__AWAY_TIMEOUT_S": "120",
        "ASSET_TRACKER__MQTT__USERNAME": "",
        "OTHER__MQTT__PORT": "1",
        "PATH": "/usr/bin",
    }
    assert env_overrides(environ) == {
        "mqtt": {"port": 8883, "tls": {"enabled": True}, "username": None},
        "presence": {"away_timeout_s": 120},
    }


def test_env_overrides_win_over_the_file_and_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump(minimal(mqtt={"port": 1883, "host": "broker"})))
    config = load(path, environ={"ASSET_TRACKER__MQTT__PORT": "8883"})
    assert config["mqtt"]["port"] == 8883
    assert config["mqtt"]["host"] == "broker"  # the rest of the section stays
    with pytest.raises(ConfigError) as err:
        load(path, environ={"ASSET_TRACKER__MQTT__PORT": "99999"})
    assert err.value.problems == ["mqtt.port: value must be at most 65535"]


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"ASSET_TRACKER__": "x"}, "ASSET_TRACKER__: names no setting"),
        ({"ASSET_TRACKER__NODE__ID": "[x"}, "ASSET_TRACKER__NODE__ID: invalid YAML: "),
        (
            {"ASSET_TRACKER__MQTT": "x", "ASSET_TRACKER__MQTT__HOST": "b"},
            "ASSET_TRACKER__MQTT__HOST: another variable sets mqtt to a single value",
        ),
        (
            {"ASSET_TRACKER__MQTT__HOST__X": "b", "ASSET_TRACKER__MQTT__HOST": "a"},
            "ASSET_TRACKER__MQTT__HOST__X: another variable sets host to a single value",
        ),
    ],
)
def test_bad_env_overrides_are_one_line_problems(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        env_overrides(environ)
    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith(problem)
    assert "\n" not in raised.value.problems[0]


def test_env_alone_can_configure_a_node() -> None:
    config = load(None, environ={"ASSET_TRACKER__NODE__ID": "garage"})
    assert config["node"]["id"] == "garage"


def test_redacted_hides_password_and_irks_without_touching_the_config() -> None:
    config = load(EXAMPLE, environ={"ASSET_TRACKER__MQTT__PASSWORD": "s3cret"})
    shown = redacted(config)
    assert shown["mqtt"]["password"] == REDACTED
    assert shown["assets"][3]["match"]["irk"] == REDACTED
    assert "s3cret" not in repr(shown)
    assert "ec0234a357c8ad05341010a60a397d9b" not in repr(shown)
    assert config["mqtt"]["password"] == "s3cret"
    assert config["assets"][3]["match"]["irk"] == "ec0234a357c8ad05341010a60a397d9b"


def test_an_unset_spacing_never_exceeds_a_short_interval() -> None:
    # `interval_s: 1` was valid before the spacing existed and stays valid
    assert validate(minimal(telemetry={"interval_s": 1}))["telemetry"]["min_interval_s"] == 1.0
    telemetry = validate(minimal(telemetry={"interval_s": 5, "delta_db": 0}))["telemetry"]
    assert telemetry == {"interval_s": 5, "delta_db": 0.0, "min_interval_s": 2.0}
    assert problems(minimal(telemetry={"interval_s": 1, "min_interval_s": 2})) == [
        "telemetry.min_interval_s: must be at most interval_s (2 > 1)"
    ]
