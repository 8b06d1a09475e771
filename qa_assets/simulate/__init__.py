"""The telemetry simulator: a production-like landing directory with injected faults and their ground truth.

    from qa_assets.simulate import simulate
    summary = simulate("data/landing", topology="shop", hours=24, scale="small", seed=0, faults="default")

See ``simulator.simulate`` for the arguments, ``faults`` for the fault model and scenarios, and
``topology`` for the built-in systems (``shop``, ``bank``, ``random``).
"""

from qa_assets.simulate.faults import DecoySpec, FaultSpec, FAULT_KINDS, scenario_names
from qa_assets.simulate.simulator import SCALES, SimulationError, SimulationSummary, simulate
from qa_assets.simulate.topology import builtin_topologies, get_topology

__all__ = [
    "DecoySpec",
    "FAULT_KINDS",
    "FaultSpec",
    "SCALES",
    "SimulationError",
    "SimulationSummary",
    "builtin_topologies",
    "get_topology",
    "scenario_names",
    "simulate",
]
