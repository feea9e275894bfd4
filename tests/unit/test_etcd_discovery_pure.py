"""Pure parts of the etcd discovery: endpoint parsing and the watch's snapshot diff."""

from __future__ import annotations

import pytest

from stator.errors import ConfigError
from stator.runtime.discovery.base import WatchEvent, WatchEventKind
from stator.runtime.discovery.etcd_endpoints import (
    EtcdEndpoint,
    parse_etcd_endpoint,
    parse_etcd_endpoints,
)
from stator.runtime.discovery.etcd_watch import diff_snapshot

PUT, DELETE = WatchEventKind.PUT, WatchEventKind.DELETE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://10.0.0.5:2379", EtcdEndpoint("10.0.0.5", 2379)),
        ("http://etcd.local:32379/", EtcdEndpoint("etcd.local", 32379)),
        ("127.0.0.1:4001", EtcdEndpoint("127.0.0.1", 4001)),
        ("etcd", EtcdEndpoint("etcd", 2379)),
        ("http://[::1]:2379", EtcdEndpoint("[::1]", 2379)),
    ],
)
def test_endpoints_parse(text: str, expected: EtcdEndpoint) -> None:
    assert parse_etcd_endpoint(text) == expected


def test_endpoint_url_round_trips() -> None:
    assert parse_etcd_endpoint("http://[::1]:2379").url == "http://[::1]:2379"
    assert parse_etcd_endpoint("etcd").url == "http://etcd:2379"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("https://etcd:2379", "TLS"),
        ("unix:///run/etcd.sock", "scheme"),
        ("http://etcd:2379/v3", "path"),
        ("http://etcd:notaport", "bad port"),
        ("http://:2379", "no host"),
    ],
)
def test_bad_endpoints_name_the_flag(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_etcd_endpoint(text)
    assert info.value.flag == "--etcd-endpoints"


def test_no_endpoints_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no etcd endpoint"):
        parse_etcd_endpoints([])
    assert len(parse_etcd_endpoints(["a:1", "b:2"])) == 2


def test_diff_snapshot_reports_vanished_new_and_changed_keys() -> None:
    known = {"k/gone": b"1", "k/same": b"2", "k/changed": b"3"}
    current = {"k/same": b"2", "k/changed": b"33", "k/new": b"4"}
    assert diff_snapshot(known, current) == [
        WatchEvent(DELETE, "k/gone", None),
        WatchEvent(PUT, "k/changed", b"33"),
        WatchEvent(PUT, "k/new", b"4"),
    ]


def test_first_snapshot_is_all_puts_and_no_change_is_no_event() -> None:
    current = {"b": b"2", "a": b"1"}
    assert diff_snapshot({}, current) == [WatchEvent(PUT, "a", b"1"), WatchEvent(PUT, "b", b"2")]
    assert diff_snapshot(current, dict(current)) == []
