"""A measurement's result, the run's report, and the table printed at the end."""

from __future__ import annotations

from dataclasses import dataclass, field

from bidsbench.common import Sizes


@dataclass(frozen=True)
class Result:
    name: str
    measured: str
    target: str
    ratio: float | None
    passed: bool
    enforced: bool

    @property
    def verdict(self) -> str:
        word = "PASS" if self.passed else "FAIL"
        return word if self.enforced else f"{word.lower()} (not enforced)"


@dataclass
class Report:
    sizes: Sizes
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def format_report(report: Report, elapsed: float) -> str:
    header = ("measurement", "target", "ratio", "result")
    rows = [header] + [
        (r.name, r.target, "-" if r.ratio is None else f"{r.ratio:.2f}", r.verdict)
        for r in report.results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"bids benchmark on PostgreSQL, {report.sizes.label} sizes", ""]
    for i, row in enumerate(rows):
        lines.append(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            lines.append("-+-".join("-" * w for w in widths))
    lines += ["", "measured:"] + [f"- {r.name}: {r.measured}" for r in report.results]
    lines += ["", "notes:"] + [f"- {note}" for note in report.notes]
    lines.append(f"total run time: {elapsed:.1f} s")
    return "\n".join(lines)


def failed(report: Report) -> bool:
    return any(r.enforced and not r.passed for r in report.results)
