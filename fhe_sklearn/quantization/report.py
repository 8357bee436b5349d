"""Debugging reports of a quantized module: integer ranges and bit-widths per op, the
compiled circuit's statistics, and what to change when a circuit does not compile."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .quantizers import integer_bit_width

#: concrete operations that multiply an encrypted tensor by a matrix or a kernel
_MATMULS = ("matmul", "dot", "conv1d", "conv2d", "conv3d")
#: concrete operations lowered to one small PBS per removed bit
_BIT_REMOVALS = ("truncate_bit_pattern", "round_bit_pattern")


def integer_values(module: Any, *x: Any) -> dict[str, np.ndarray]:
    """Every input and op output of ``module`` on float rows ``x``, as the integers of the
    graph (``fhe="disable"``, op by op)."""
    x_q = module.quantize_input(*x)
    values = dict(zip(module.input_names, x_q if module.n_inputs > 1 else (x_q,)))
    for op in module.ops:
        values[op.name] = np.asarray(op.q_impl(*[values[n] for n in op.inputs]), dtype=np.int64)
    return values


def bitwidth_and_range_report(module: Any, *x: Any) -> dict[str, dict[str, Any]]:
    """Per value of the graph (inputs, then ops in order): its op type, whether it is a table
    lookup, the worst-case integer range and bit-width the circuit is built for and, with
    data ``x``, the range and bit-width observed on it.

    Returns
    -------
    dict of value name to dict
        ``{"op_type", "lookup", "range", "bitwidth", "worst_case_range", "worst_case_bitwidth"}``;
        ``range``/``bitwidth`` are the observed ones with ``x``, else the worst case (as
        Concrete ML's ``bitwidth_and_range_report`` keys them).
    """
    module._check_calibrated()
    specs = dict(zip(module.input_names, module.input_specs))
    kinds = dict.fromkeys(module.input_names, ("Input", False))
    for op in module.ops:
        specs[op.name] = op.output_spec
        kinds[op.name] = (op.op_type, bool(op.is_univariate))
    observed = integer_values(module, *x) if x else {}
    report = {}
    for name, spec in specs.items():
        worst = (int(np.min(spec.lo)), int(np.max(spec.hi)))
        entry = {"op_type": kinds[name][0], "lookup": kinds[name][1]}
        entry["worst_case_range"], entry["worst_case_bitwidth"] = worst, spec.bit_width
        if name in observed and observed[name].size:
            seen = (int(observed[name].min()), int(observed[name].max()))
            entry["range"], entry["bitwidth"] = seen, integer_bit_width(*seen)
        else:
            entry["range"], entry["bitwidth"] = worst, spec.bit_width
        report[name] = entry
    return report


def circuit_report(circuit: Any, measure_keys: bool = False) -> dict[str, Any]:
    """The compiled circuit's costs in one dict.

    ``pbs`` (total), ``pbs_by_precision`` (bits a table lookup reads → count),
    ``pbs_bit_removal`` (the rest: truncations and roundings, one small PBS per removed bit),
    ``max_bit_width``, ``encrypted_matmuls`` (encrypted × clear products and convolutions,
    by kind) and ``encrypted_products`` (encrypted × encrypted), ``complexity``, ``p_error``,
    ``global_p_error``, key sizes as concrete estimates them (``bootstrap_key_bytes``,
    ``keyswitch_key_bytes``) and, with ``measure_keys`` (generates the keys if needed), the
    serialized ``evaluation_key_bytes``.
    """
    if circuit is None:
        raise RuntimeError("no compiled circuit: call compile(X) first")
    stats = circuit.statistics
    by_precision: Counter = Counter()
    matmuls: Counter = Counter()
    products = 0
    graph = circuit.graph
    for node in graph.graph.nodes:
        encrypted = [v for v in node.inputs if v.is_encrypted]
        name = node.properties.get("name")
        if node.converted_to_table_lookup and encrypted and name not in _BIT_REMOVALS:
            bits = max(v.dtype.bit_width for v in encrypted)
            # a lookup after a truncation reads the bits that are left; one of x minus its
            # truncation (wide_lookup's low part) reads the bits removed
            removed = [p.properties.get("kwargs", {}).get("lsbs_to_remove", 0) for p in graph.ordered_preds_of(node)]
            precision = bits - max([r for r in removed if isinstance(r, int)] or [0])
            low = _low_part_bits(graph, node)
            if low is not None:
                precision = low
            by_precision[precision] += int(np.prod(node.output.shape, dtype=np.int64))
        if name in _MATMULS and encrypted:
            if len(encrypted) > 1:
                products += 1
            else:
                matmuls[name] += 1
    total = int(stats["programmable_bootstrap_count"])
    report = {
        "pbs": total,
        "pbs_by_precision": dict(sorted(by_precision.items())),
        "pbs_bit_removal": total - sum(by_precision.values()),
        "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
        "encrypted_matmuls": dict(matmuls),
        "encrypted_products": products,
        "complexity": float(stats["complexity"]),
        "p_error": float(stats["p_error"]),
        "global_p_error": float(stats["global_p_error"]),
        "bootstrap_key_bytes": int(stats["size_of_bootstrap_keys"]),
        "keyswitch_key_bytes": int(stats["size_of_keyswitch_keys"]),
        "key_switches": int(stats["key_switch_count"]),
    }
    if measure_keys:
        circuit.keygen()
        report["evaluation_key_bytes"] = len(circuit.keys.evaluation.serialize())
    return report


def format_report(report: dict[str, dict[str, Any]]) -> str:
    """A :func:`bitwidth_and_range_report` as an aligned text table."""
    rows = [("value", "op", "lookup", "range", "bits", "worst-case range", "worst bits")]
    for name, e in report.items():
        rows.append(
            (
                name,
                e["op_type"],
                "yes" if e["lookup"] else "",
                str(e["range"]),
                str(e["bitwidth"]),
                str(e["worst_case_range"]),
                str(e["worst_case_bitwidth"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def explain_compile_failure(module: Any) -> str:
    """What a circuit that concrete could not compile asks for: its widest lookups and
    integers, by op, and what to change for each."""
    widths = [(op.output_spec.bit_width, op) for op in module.ops if op.output_spec is not None]
    if not widths:
        return "Lower n_bits or relax p_error."
    lines = []
    lookups = []
    for op in module.ops:
        if op.is_univariate and op.input_specs:
            lookups.append((max(s.bit_width for s in op.input_specs), op))
    if lookups:
        bits, op = max(lookups, key=lambda t: t[0])
        hint = (
            "round its input first (rounding_threshold_bits, e.g. 6) or lower n_bits of the values it reads"
            if bits > 8
            else "lower n_bits, or relax p_error/global_p_error (a looser error budget admits cheaper parameters)"
        )
        lines.append(f"the widest table lookup reads {bits} bits: {op.op_type} '{op.name}': {hint}")
    bits, op = max(widths, key=lambda t: t[0])
    lines.append(f"the widest integer has {bits} bits: {op.op_type} '{op.name}': {op.overflow_hint}")
    return "; ".join(lines) + ". module.bitwidth_and_range_report(X) lists every op."


def _low_part_bits(graph: Any, node: Any) -> int | None:
    """The bits of ``x - truncate_bit_pattern(x, c)`` read by lookup ``node``: ``c``, or None
    if its input is not such a difference."""
    preds = graph.ordered_preds_of(node)
    if len(preds) != 1 or preds[0].properties.get("name") != "subtract":
        return None
    operands = graph.ordered_preds_of(preds[0])
    if len(operands) != 2 or operands[1].properties.get("name") != "truncate_bit_pattern":
        return None
    if graph.ordered_preds_of(operands[1]) != [operands[0]]:
        return None
    lsbs = operands[1].properties.get("kwargs", {}).get("lsbs_to_remove")
    return lsbs if isinstance(lsbs, int) else None
