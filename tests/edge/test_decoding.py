"""Decoding real advertisement payloads from the formats' public specifications, and garbage."""

from __future__ import annotations

import asyncio

import pytest
from asset_tracker_edge.advert import Advert
from asset_tracker_edge.decoding import (
    BTHOME_UUID,
    EDDYSTONE_UUID,
    DecodeError,
    Decoder,
    Reading,
    decode_eddystone,
)
from asset_tracker_edge.simulator import TAG_UUID, bthome_data, ibeacon_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAC = "c4:7c:8d:6a:11:22"
APPLE, RUUVI = 0x004C, 0x0499
XIAOMI_UUID = "0000fe95-0000-1000-8000-00805f9b34fb"
PVVX_UUID = "0000181a-0000-1000-8000-00805f9b34fb"
# Ruuvi data format 5 (RAWv2), the "valid data" vector of the format's specification
RUUVI_SPEC = bytes.fromhex("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F")
# iBeacon: 02 15, proximity UUID, major, minor, measured power at 1 m
IBEACON = bytes.fromhex("0215fda50693a4e24fb1afcfc6eb0764782527114cb9c5")
# Eddystone UID: frame 0x00, ranging data -18 dBm at 0 m, 10-byte namespace, 6-byte instance, RFU
EDDYSTONE_UID = bytes.fromhex("00ee8b0ca750e9b3a7d3d2f40123456789ab0000")
# Eddystone TLM (unencrypted): 3000 mV, 25.5 degC (8.8 fixed point), 1000 adverts, 50 s uptime
EDDYSTONE_TLM = bytes.fromhex("20000bb81980000003e8000001f4")


def advert(address: str = MAC, **fields: object) -> Advert:
    return Advert(address=address, rssi=-60, received_ms=1_000, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def decoder() -> Decoder:
    d = Decoder()
    await d.async_setup()
    return d


async def test_ibeacon(decoder: Decoder) -> None:
    reading = decoder.decode(advert(manufacturer_data={APPLE: IBEACON}))
    assert reading == Reading(
        format="ibeacon",
        ibeacon=("fda50693-a4e2-4fb1-afcf-c6eb07647825", 10001, 19641),
        tx_power=-59,
    )
    assert decoder.formats["ibeacon"] == 1


async def test_ibeacon_from_the_simulator(decoder: Decoder) -> None:
    reading = decoder.decode(advert(manufacturer_data={APPLE: ibeacon_data(1, 42, power=-65)}))
    assert reading is not None
    assert reading.ibeacon == (TAG_UUID, 1, 42)
    assert reading.tx_power == -65


async def test_other_apple_frames_are_not_ibeacons(decoder: Decoder) -> None:
    # "Nearby" (0x10) frames from iPhones are manufacturer data, not a beacon identity
    reading = decoder.decode(advert(manufacturer_data={APPLE: bytes.fromhex("1005031c8b1f3a")}))
    assert reading is not None
    assert reading.format == "manufacturer"
    assert reading.ibeacon is None


async def test_eddystone_uid(decoder: Decoder) -> None:
    reading = decoder.decode(advert(service_data={EDDYSTONE_UUID: EDDYSTONE_UID}))
    assert reading == Reading(
        format="eddystone_uid",
        eddystone_uid=("8b0ca750e9b3a7d3d2f4", "0123456789ab"),
        tx_power=-18 - 41,
    )


async def test_eddystone_tlm(decoder: Decoder) -> None:
    reading = decoder.decode(advert(service_data={EDDYSTONE_UUID: EDDYSTONE_TLM}))
    assert reading == Reading(
        format="eddystone_tlm", readings={"battery_voltage": 3.0, "temperature": 25.5}
    )


def test_eddystone_tlm_without_temperature_or_battery() -> None:
    # 0x8000 means "not supported" for the temperature, 0 mV for the battery
    frame = bytes.fromhex("2000000080000000000100000002")
    assert decode_eddystone(frame).readings == {}


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x00\xee\x8b", b"\x20\x00\x0b", b"\x20\x01" + bytes(12), b"\x10\x00\x03abc"],
)
def test_eddystone_frames_that_do_not_parse(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_eddystone(frame)


async def test_bthome_v2_spec_example(decoder: Decoder) -> None:
    reading = decoder.decode(advert(service_data={BTHOME_UUID: bytes.fromhex("4002c40903bf13")}))
    assert reading is not None
    assert reading.format == "bthome"
    assert reading.readings == {"temperature": 25.0, "humidity": 50.55}
    assert reading.battery is None


async def test_bthome_from_the_simulator(decoder: Decoder) -> None:
    data = bthome_data(temperature=-18.25, humidity=61.5, battery=9)
    reading = decoder.decode(advert(service_data={BTHOME_UUID: data}))
    assert reading is not None
    assert reading.readings == {"temperature": -18.25, "humidity": 61.5}
    assert reading.battery == 9


async def test_ruuvi_rawv2_spec_vector(decoder: Decoder) -> None:
    reading = decoder.decode(advert(manufacturer_data={RUUVI: RUUVI_SPEC}))
    assert reading is not None
    assert reading.format == "ruuvi"
    assert reading.readings["temperature"] == 24.3
    assert reading.readings["humidity"] == 53.49
    assert reading.readings["pressure"] == 1000.44  # hPa: 100044 Pa
    assert reading.readings["battery_voltage"] == pytest.approx(2.977)  # reported in mV


async def test_xiaomi_mibeacon_unencrypted(decoder: Decoder) -> None:
    # MiBeacon v2 from a LYWSDCGQ (product 0x01aa): object 0x100d, temperature and humidity x10
    frame = bytes.fromhex("5020aa01da219335342d580d1004fe004802")
    reading = decoder.decode(advert(address="58:2d:34:35:93:21", service_data={XIAOMI_UUID: frame}))
    assert reading is not None
    assert reading.format == "xiaomi"
    assert reading.readings == {"temperature": 25.4, "humidity": 58.4}


async def test_govee_h5075(decoder: Decoder) -> None:
    # company 0xEC88; 24 bits big endian, temperature x10000 + humidity x10, then battery %
    frame = bytes.fromhex("000341c26400")  # 213442: 21.3 degC, 44.2 %
    reading = decoder.decode(
        advert(local_name="GVH5075_2762", manufacturer_data={0xEC88: frame}, tx_power=-2)
    )
    assert reading == Reading(
        format="govee", readings={"temperature": 21.3, "humidity": 44.2}, battery=100.0, tx_power=-2
    )


async def test_govee_company_id_without_a_govee_name_is_no_govee_reading(decoder: Decoder) -> None:
    reading = decoder.decode(advert(local_name="other", manufacturer_data={0xEC88: b"\x00\x03"}))
    assert reading == Reading(format="manufacturer")


async def test_formats_not_wanted_are_not_decoded(decoder: Decoder) -> None:
    bthome = advert(service_data={BTHOME_UUID: bytes.fromhex("4002c40903bf13")})
    beacon = advert(manufacturer_data={APPLE: IBEACON})
    assert decoder.decode(bthome, wanted={"ibeacon"}) is None
    assert decoder.decode(beacon, wanted={"ibeacon"}) is not None
    assert decoder.decode(beacon, wanted=()) is None
    assert decoder.formats == {"ibeacon": 1}
    # the skipped advert left no state behind: the tag's first decoded advert reports everything
    reading = decoder.decode(bthome)
    assert reading is not None
    assert reading.readings == {"temperature": 25.0, "humidity": 50.55}


async def test_unknown_manufacturer_falls_back_to_a_generic_reading(decoder: Decoder) -> None:
    reading = decoder.decode(advert(manufacturer_data={0x0059: b"\x01\x02\x03"}, tx_power=-4))
    assert reading == Reading(format="manufacturer", tx_power=-4)


async def test_nothing_recognisable(decoder: Decoder) -> None:
    assert decoder.decode(advert()) is None
    assert decoder.decode(advert(service_uuids=("0000180f-0000-1000-8000-00805f9b34fb",))) is None
    assert sum(decoder.errors.values()) == 0


async def test_stale_values_are_not_reported_again(decoder: Decoder) -> None:
    first = decoder.decode(advert(service_data={BTHOME_UUID: bytes.fromhex("4002c40903bf13")}))
    assert first is not None
    # the next advert of the same tag carries only the humidity
    second = decoder.decode(advert(service_data={BTHOME_UUID: bytes.fromhex("4003e803")}))
    assert second is not None
    assert second.readings == {"humidity": 10.0}


@pytest.mark.parametrize(
    ("service_data", "metric"),
    [
        (bytes.fromhex("4002204e"), "temperature"),  # 200.00 C
        (bytes.fromhex("4003983a"), "humidity"),  # 150.00 %
    ],
)
async def test_out_of_range_values_are_dropped_and_counted(
    decoder: Decoder, service_data: bytes, metric: str
) -> None:
    reading = decoder.decode(advert(service_data={BTHOME_UUID: service_data}))
    # no reading, but what was set aside, for the data-quality rule
    assert reading is not None and reading.readings == {} and reading.battery is None
    assert list(reading.rejected) == [metric]
    assert decoder.errors["out_of_range"] == 1
    good = decoder.decode(advert(service_data={BTHOME_UUID: bytes.fromhex("4002c40903bf13")}))
    assert good is not None
    assert metric in good.readings


@pytest.mark.parametrize(
    "fields",
    [
        {"manufacturer_data": {APPLE: IBEACON[:12]}},
        {"manufacturer_data": {APPLE: IBEACON[:-1]}},
        {"manufacturer_data": {RUUVI: RUUVI_SPEC[:5]}},
        {"service_data": {EDDYSTONE_UUID: EDDYSTONE_UID[:9]}},
        {"service_data": {EDDYSTONE_UUID: b"\x30\x00"}},
    ],
)
async def test_truncated_payloads_are_counted_as_malformed(
    decoder: Decoder, fields: dict[str, object]
) -> None:
    assert decoder.decode(advert(**fields)) is None  # type: ignore[arg-type]
    assert decoder.errors["malformed"] == 1
    assert decoder.stats()["errors"] == {"malformed": 1}


FORMAT_KEYS = st.sampled_from(
    [
        ("manufacturer_data", APPLE, b"\x02\x15"),
        ("manufacturer_data", RUUVI, b"\x05"),
        ("manufacturer_data", RUUVI, b""),
        ("service_data", BTHOME_UUID, b"\x40"),
        ("service_data", BTHOME_UUID, b""),
        ("service_data", EDDYSTONE_UUID, b"\x00"),
        ("service_data", EDDYSTONE_UUID, b"\x20\x00"),
        ("service_data", XIAOMI_UUID, b""),
        ("service_data", PVVX_UUID, b""),
        ("manufacturer_data", 0xEC88, b""),
    ]
)

_DECODER = Decoder()
asyncio.run(_DECODER.async_setup())


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=FORMAT_KEYS, tail=st.binary(max_size=40), name=st.sampled_from([None, "GVH5075"]))
def test_arbitrary_bytes_never_raise(
    key: tuple[str, object, bytes], tail: bytes, name: str | None
) -> None:
    where, ident, prefix = key
    before = sum(_DECODER.errors.values()) + sum(_DECODER.formats.values())
    fields = {where: {ident: prefix + tail}}
    reading = _DECODER.decode(advert(local_name=name, **fields))  # type: ignore[arg-type]
    after = sum(_DECODER.errors.values()) + sum(_DECODER.formats.values())
    if reading is not None:
        assert after >= before + 1  # counted under its format
        for metric, value in reading.readings.items():
            assert value == value, metric  # never NaN
    assert isinstance(reading, Reading | None)


def test_atc1441_and_pvvx_custom_formats_decode():
    """Xiaomi LYWSD03MMC on custom firmware: ATC1441 (big endian) and pvvx (little endian)."""
    import struct

    from asset_tracker_edge.decoding import decode_atc

    atc = bytes.fromhex("a4c138000001") + struct.pack(">hBBH", 215, 48, 87, 2950) + b"\x01"
    reading = decode_atc(atc)
    assert reading.readings == {"temperature": 21.5, "humidity": 48.0, "battery_voltage": 2.95}
    assert reading.battery == 87.0
    pvvx = bytes.fromhex("01000038c1a4") + struct.pack("<hHHBBB", -550, 4825, 2950, 87, 1, 4)
    reading = decode_atc(pvvx)
    assert reading.readings["temperature"] == -5.5 and reading.readings["humidity"] == 48.25


def test_atc_frames_of_the_wrong_size_or_range_are_malformed():
    import struct

    from asset_tracker_edge.advert import Advert
    from asset_tracker_edge.decoding import ATC_UUID, Decoder

    decoder = Decoder()
    short = Advert("a4:c1:38:00:00:01", -60, 0, service_data={ATC_UUID: b"\x01\x02\x03"})
    hot = bytes.fromhex("a4c138000001") + struct.pack(">hBBH", 3000, 48, 87, 2950) + b"\x01"
    bad = Advert("a4:c1:38:00:00:01", -60, 0, service_data={ATC_UUID: hot})
    assert decoder.decode(short) is None
    assert decoder.decode(bad) is None
    assert decoder.errors["malformed"] == 2
