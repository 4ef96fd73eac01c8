"""Ports and conformance, as `anychip ports` and `anychip conform` report them."""

import anychip


def test_ports_lists_the_clis_ports():
    ports = {p["name"]: p for p in anychip.ports()}
    assert {"cpu", "ref"} <= set(ports)
    assert ports["cpu"]["available"] and "f32" in ports["cpu"]["storage"]
    assert ports["ref"]["available"] and ports["ref"]["error"] is None


def test_conform_returns_the_report():
    report = anychip.conform("cpu", level="L1")
    assert report["port"] == "cpu" and report["passed"] is True
    levels = {r["level"] for r in report["rows"]}
    assert levels == {"L0", "L1"}
    assert all(r["status"] != "fail" for r in report["rows"])
    assert len(report["rows"].to_pandas()) == len(report["rows"])
