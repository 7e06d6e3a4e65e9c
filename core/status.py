"""``convergence status``: what a running server says about itself, as text (no I/O here).

The command asks the server of its configuration twice over the control path
(:meth:`convergence.control.Control.ask`, answered with ``core.metrics.status()``), ``interval``
seconds apart, and prints the second answer with the rates between the two: endpoints, logins,
failed logins and messages per protocol, messages routed per outcome, and every gauge the core
and its plugins export (their names and help texts come from the metrics, so nothing here names
a protocol).
"""
from __future__ import annotations


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min")) if n]
    return " ".join(parts or [f"{seconds} s"])


def _rate(after: dict, before: dict | None, key: str, elapsed: float) -> str:
    if before is None or elapsed <= 0:
        return "-"
    return f"{(after.get(key, 0) - before.get(key, 0)) / elapsed:.1f}"


def report(after: dict, before: dict | None = None) -> list[str]:
    """The lines to print for the answer ``after`` (and the earlier ``before``, for rates)."""
    elapsed = after["now"] - before["now"] if before else 0.0
    lines = [f"convergence serving {after['domain']}: pid {after['pid']}, up "
             f"{_duration(after['now'] - after['started'])}"]
    protocols = sorted(set(after["endpoints"]) | set(after["logins"]) | set(after["failures"])
                       | set(after["received"]) | set(after["sent"]))
    per = f" (per second over the last {elapsed:.1f} s)" if before else ""
    lines.append(f"{'protocol':<10}{'endpoints':>10}{'logins':>8}{'failed':>8}"
                 f"{'msgs in/s':>11}{'out/s':>8}{per}")
    for protocol in protocols:
        lines.append(f"{protocol:<10}{after['endpoints'].get(protocol, 0):>10}"
                     f"{after['logins'].get(protocol, 0):>8}{after['failures'].get(protocol, 0):>8}"
                     f"{_rate(after['received'], before and before['received'], protocol, elapsed):>11}"
                     f"{_rate(after['sent'], before and before['sent'], protocol, elapsed):>8}")
    outcomes = sorted(after["routed"])
    lines.append("messages routed since start: " + (", ".join(
        f"{after['routed'][o]} {o} ({_rate(after['routed'], before and before['routed'], o, elapsed)}/s)"
        for o in outcomes) or "none"))
    if after["gauges"]:
        lines.append("gauges:")
        width = max(len(_gauge_name(g)) for g in after["gauges"])
        for gauge in after["gauges"]:
            value = gauge[2]
            shown = int(value) if float(value).is_integer() else value
            lines.append(f"  {_gauge_name(gauge):<{width}} {shown:>8}  {gauge[3]}")
    return lines


def _gauge_name(gauge) -> str:
    name, labels = gauge[0], gauge[1]
    return name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
                   if labels else "")
