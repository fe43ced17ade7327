"""JUnit XML of a check: one ``<testcase>`` per gate, ``classname`` = ``<suite>.<cell>`` so CI systems group
the gates of each cell (the part before the first dot is read as a package). A failed gate is a
``<failure>``; a warning passes and says so in ``<system-out>`` (JUnit has no "warning" outcome)."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

from qbench.regress.gates import FAIL, WARN, Gate


def junit_tree(gates: Sequence[Gate], *, suite: str, properties: dict[str, str] | None = None) -> ET.ElementTree:
    """The XML document (``testsuites`` > ``testsuite`` > ``testcase`` per gate)."""
    failures = sum(g.outcome == FAIL for g in gates)
    counts = {"tests": str(len(gates)), "failures": str(failures), "errors": "0", "skipped": "0", "time": "0"}
    root = ET.Element("testsuites", {"name": "qbench check", **counts})
    testsuite = ET.SubElement(root, "testsuite", {"name": f"qbench check {suite}", **counts,
                                                  "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                  "hostname": socket.gethostname()})
    if properties:
        props = ET.SubElement(testsuite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", {"name": key, "value": str(value)})
    for gate in gates:
        case = ET.SubElement(testsuite, "testcase", {"classname": f"{suite}.{gate.cell}", "name": gate.name,
                                                      "time": "0"})
        if gate.outcome == FAIL:
            failure = ET.SubElement(case, "failure", {"message": gate.message, "type": "regression"})
            failure.text = gate.message
        elif gate.outcome == WARN:
            ET.SubElement(case, "system-out").text = f"WARNING: {gate.message}"
        else:
            ET.SubElement(case, "system-out").text = gate.message
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: Path, gates: Sequence[Gate], *, suite: str, properties: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(gates, suite=suite, properties=properties).write(path, encoding="utf-8", xml_declaration=True)
