"""The lab: what drills, notebooks, benchmarks and tests use to attack edgebuf and count.

Nothing in the core (``edgebuf`` top level, ``store``, ``delivery``, ``space``) imports
this package. Its public API is ``__all__`` below (pinned by tests/test_architecture.py);
each name is imported on first use, so ``import edgebuf.lab`` loads neither pandas nor
matplotlib.

- outage drill: ``DrillConfig``, ``run_drill``, ``format_summary``
- restore drill (the cloud restored from a backup): ``RestoreConfig``, ``run_restore_drill``,
  ``format_restore``
- faults: ``FaultProxy`` (a misbehaving HTTP hop), ``Fault``, ``EventLog``, ``kill_process``
- counting what arrived: ``audit``, ``fetch_predictions``, ``fetch_stats``, ``fetch_gaps``
- plots: ``plot_backlog``, ``plot_latency``, ``plot_requests``, ``plot_fleet``, ``plot_frame``,
  ``plot_gaps``
- virtual-clock fleet sizing: ``simulate_camera``, ``simulate_outage``
- policy tests without sockets: ``ScriptedCloud``, ``Reply``, ``FAST_SETTINGS``
- a simulated camera process: ``fake_prediction``, ``producer_command``
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DrillConfig": "drill",
    "run_drill": "drill",
    "format_summary": "drill",
    "FaultProxy": "faults",
    "Fault": "fault",
    "EventLog": "events",
    "kill_process": "processes",
    "audit": "verify",
    "fetch_predictions": "verify",
    "fetch_stats": "verify",
    "fetch_gaps": "verify",
    "plot_backlog": "plots",
    "plot_latency": "plots",
    "plot_requests": "plots",
    "plot_fleet": "plots",
    "plot_frame": "plots",
    "plot_gaps": "plots",
    "RestoreConfig": "restore",
    "run_restore_drill": "restore",
    "format_restore": "restore",
    "simulate_camera": "fleet",
    "simulate_outage": "fleet",
    "ScriptedCloud": "testing",
    "Reply": "testing",
    "FAST_SETTINGS": "testing",
    "fake_prediction": "producer",
    "producer_command": "producer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgebuf.lab' has no attribute {name!r}")
    target = "command" if name == "producer_command" else name
    value = getattr(importlib.import_module(f"edgebuf.lab.{module}"), target)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
