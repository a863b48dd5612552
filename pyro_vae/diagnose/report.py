"""A diagnosis: one :class:`Check` per statistic, gathered in a :class:`Report` (text or JSON).

Every check carries its statistic and value, the threshold it is compared with, the section of
the papers that motivates it, a verdict and what to do. Verdicts:

- ``"alarm"``: the statistic crosses its threshold (beyond its standard error where it has one);
- ``"ok"``: it does not;
- ``"inconclusive"``: it crosses the threshold but not by more than two standard errors;
- ``"skipped"``: the check does not apply (the reason is the advice).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

VERDICTS = ("alarm", "inconclusive", "ok", "skipped")
GROUPS = ("posterior mismatch", "manifold", "noise variance", "latent dimension", "semi-supervised")
#: The checks whose alarms mean the ELBO is likely to misestimate p(x) (004 §5.1): the family's
#: floor and the richer family's gain; the q-specific ones (gap, k̂) may also reflect an
#: undertrained encoder.
DENSITY_KEYS = ("mean_field_floor", "richer_family")


@dataclass(frozen=True)
class Check:
    """One statistic compared with its threshold.

    Attributes
    ----------
    key : str
        Short identifier, e.g. ``"posterior_gap"``.
    group : str
        One of :data:`GROUPS`.
    statistic : str
        What was measured, in words.
    value : float or None
        Its value (None when skipped).
    threshold : str
        The rule, in words (e.g. "alarm above 0.1 nats per point").
    section : str
        The papers' section(s) behind the check.
    verdict : str
        One of :data:`VERDICTS`.
    advice : str
        What to do (or why the check was skipped).
    se : float or None
        Standard error of ``value`` where it has one.
    evidence : dict
        The supporting numbers (JSON-ready).
    """

    key: str
    group: str
    statistic: str
    value: float | None
    threshold: str
    section: str
    verdict: str
    advice: str
    se: float | None = None
    evidence: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r}: expected one of {VERDICTS}")
        if self.group not in GROUPS:
            raise ValueError(f"group={self.group!r}: expected one of {GROUPS}")


def skipped(key: str, group: str, statistic: str, section: str, why: str) -> Check:
    """A check that does not apply here; ``why`` says so."""
    return Check(key, group, statistic, None, "-", section, "skipped", why)


def verdict_above(value: float, threshold: float, se: float | None = None) -> str:
    """``"alarm"`` if ``value > threshold`` by more than 2 SE, ``"inconclusive"`` if above but
    within 2 SE, else ``"ok"``."""
    if not math.isfinite(value):
        return "alarm"
    if value <= threshold:
        return "ok"
    if se is not None and math.isfinite(se) and value - 2 * se <= threshold:
        return "inconclusive"
    return "alarm"


@dataclass
class Report:
    """The checks of one diagnosis, what they were run on (``context``) and, for the summary
    figure, the per-point statistics behind them (``arrays``: NumPy arrays, not in the JSON)."""

    checks: list[Check]
    context: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def by_key(self, key: str) -> Check:
        for check in self.checks:
            if check.key == key:
                return check
        raise KeyError(f"no check {key!r}; the report has {[c.key for c in self.checks]}")

    def group_verdict(self, group: str) -> str:
        """The worst verdict among a group's checks (alarm > inconclusive > ok > skipped)."""
        found = [c.verdict for c in self.checks if c.group == group]
        return min(found, key=VERDICTS.index) if found else "skipped"

    def density_verdict(self) -> str:
        """Worst verdict of the :data:`DENSITY_KEYS` checks ("skipped" if none ran)."""
        found = [c.verdict for c in self.checks if c.key in DENSITY_KEYS]
        return min(found, key=VERDICTS.index) if found else "skipped"

    def alarms(self) -> list[str]:
        """Keys of the checks whose verdict is an alarm."""
        return [c.key for c in self.checks if c.verdict == "alarm"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "context": self.context,
            "groups": {g: self.group_verdict(g) for g in GROUPS if any(c.group == g for c in self.checks)},
            "density_problem": self.density_verdict(),
            "checks": [asdict(c) for c in self.checks],
        }

    def text(self) -> str:
        """Plain-language report, one block per check."""
        lines = []
        ctx = self.context
        if ctx:
            lines.append("pyro-vae diagnose: " + ", ".join(f"{k}={v}" for k, v in ctx.items() if not isinstance(v, dict)))
            lines.append("")
        for group in GROUPS:
            checks = [c for c in self.checks if c.group == group]
            if not checks:
                continue
            lines.append(f"== {group}: {self.group_verdict(group).upper()}")
            for c in checks:
                value = "-" if c.value is None else f"{c.value:.4g}" + (f" ± {c.se:.2g}" if c.se is not None else "")
                lines.append(f"  [{c.verdict.upper():>12s}] {c.statistic}: {value}")
                lines.append(f"                 threshold: {c.threshold}   ({c.section})")
                lines.append(f"                 {c.advice}")
            lines.append("")
        alarms = self.alarms()
        lines.append("summary: " + (f"{len(alarms)} alarm(s): {', '.join(alarms)}" if alarms else "no alarm"))
        lines.append(f"density problem (004 §5.1: the family's floor, a richer family's gain): {self.density_verdict().upper()}")
        if isinstance(ctx.get("seconds"), dict) and ctx["seconds"]:
            lines.append("seconds: " + ", ".join(f"{k} {v:g}" for k, v in ctx["seconds"].items()))
        return "\n".join(lines)
