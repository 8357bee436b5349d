"""Small helpers on ONNX nodes, shared by the importer and its converters."""

from __future__ import annotations

from typing import Any


def where(node: Any) -> str:
    """How messages name a node: its op type and name."""
    return f"ONNX node {node.op_type!r} ({node.name!r})"


def attributes(node: Any) -> dict[str, Any]:
    """The node's attributes as Python values."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
