"""The metric names a PromQL expression reads, by a small honest extractor.

Not a PromQL parser: it removes what cannot be a metric name (string literals,
label matchers ``{...}``, range and subquery brackets ``[...]``, the label lists of
``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``, numbers and
durations, keywords), then every identifier left that is not called like a
function (``name(``) is a metric name. ``label_values(metric, label)`` (a Grafana
variable query) names its first argument. Good for the expressions this project
writes; tests/integration/test_observability_assets.py checks it on tricky ones.
"""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,[^)]*\)")
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_:])(?:\d+(?:\.\d*)?(?:e[+-]?\d+)?|0x[0-9a-f]+)(?:[smhdwy]|ms)?", re.I
)
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    text = _STRING.sub(" ", expr)
    names = set(_LABEL_VALUES.findall(text))
    text = _LABEL_VALUES.sub(" ", text)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    previous = None
    while previous != text:  # nested brackets and matchers, innermost first
        previous = text
        text = _MATCHERS.sub(" ", _BRACKETS.sub(" ", text))
    text = _LABEL_LISTS.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(name)
    return names
