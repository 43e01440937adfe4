"""How the report writes a number, an interval, a config node and a markdown table, for
``tables`` and ``evidence_tables`` alike: errors in %, two decimals; "–" where there is no
number; p-values with three decimals, "<0.001" below that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ablate.identity import PROTOCOL_KEYS


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def pct(value: Any) -> str:
    return "–" if _missing(value) else f"{100 * float(value):.2f}"


def signed(value: float) -> str:
    text = f"{value:+.2f}"
    return "+0.00" if text == "-0.00" else text


def lr_text(value: Any) -> str:
    return "–" if _missing(value) else format(float(value), "g")


def p_text(p: float | None) -> str:
    return "–" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def mean_ci(mean: float, half_width: float, n: int) -> str:
    """``9.50 ± 6.35``: mean ± half-width of the 95 % t interval; the mean alone for n = 1."""
    return f"{pct(mean)} ± {pct(half_width)}" if n > 1 else pct(mean)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def node_text(value: Any) -> str:
    """A config node in one short line: ``SGD(momentum=0.9, weight_decay=0.001)``."""
    if isinstance(value, Mapping):
        skip = {"_target_", "_partial_", "name", "transform"}
        head = str(value.get("name") or str(value.get("_target_", "")).rsplit(".", 1)[-1])
        params = ", ".join(f"{k}={node_text(v)}" for k, v in sorted(value.items())
                           if k not in skip)
        return f"{head}({params})" if params else head
    if isinstance(value, list):
        return "[" + ", ".join(node_text(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) and not value else str(value)


def protocol_text(spec: Mapping[str, Any]) -> str:
    return "; ".join(f"{key} {node_text(spec[key])}" for key in PROTOCOL_KEYS
                     if spec.get(key) is not None)
