"""The rings as tests: which package may import which, and no import circles (lazy imports included)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("firmware", "device", "provisioning", "backoffice")
# third-party libraries the pure core may use (HOUSE_STYLE section 1; issue 9)
CORE_LIBRARIES = {"cbor2", "cryptography", "base45"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def imports_of(path: Path) -> set[str]:
    """Every module imported anywhere in the file (top level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            for alias in node.names:  # "from firmware.core import prov_code" imports a module
                if f"{node.module}.{alias.name}" in MODULES:
                    out.add(f"{node.module}.{alias.name}")
    return out


def internal(name: str) -> str | None:
    """The project module an import names (a name inside a module counts as the module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


GRAPH = {name: {m for m in (internal(i) for i in imports_of(path)) if m and m != name}
         for name, path in MODULES.items()}


def under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _package_of(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def test_there_are_no_import_circles():
    # a package's __init__ re-exporting its own modules is not a circle of the design
    graph = {m: {d for d in deps if not (_package_of(m) and d.startswith(m + "."))} for m, deps in GRAPH.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if under(m, "firmware.core")))
def test_the_core_imports_only_the_core_the_standard_library_and_its_codecs(module):
    outside = set()
    for name in imports_of(MODULES[module]):
        top = name.split(".")[0]
        if internal(name):
            if not under(internal(name), "firmware.core") and internal(name) != "firmware":
                outside.add(name)
        elif top not in sys.stdlib_module_names and top not in CORE_LIBRARIES:
            outside.add(name)
    assert outside == set()


RULES = [
    # (modules, what they must not import, why)
    (("firmware.ports",), ("firmware.adapters", "firmware.features", "firmware.app", "firmware.commands",
                           "firmware.bench", "firmware.cli", "device", "provisioning"), "ports name core types only"),
    (("firmware.alarms",), ("firmware.adapters", "firmware.features", "firmware.app", "device", "provisioning"),
     "alarms stand beside the ports"),
    (("firmware.adapters",), ("firmware.features", "firmware.app", "firmware.commands", "firmware.bench",
                              "firmware.cli", "provisioning"), "adapters import core and ports"),
    (("firmware.features",), ("firmware.adapters", "firmware.app", "firmware.commands", "firmware.bench",
                              "firmware.cli", "device", "provisioning"),
     "features get adapters through their constructors"),
    (("firmware.app", "firmware.commands", "firmware.bench", "firmware.cli"), ("provisioning", "backoffice"),
     "the gate never imports the operator tools (the CLI table names them as strings)"),
    (("firmware.core", "firmware.ports", "firmware.alarms", "firmware.adapters", "firmware.features", "device"),
     ("backoffice",), "the gate never depends on the back office"),
    (("backoffice",), ("firmware.app", "firmware.commands", "firmware.cli", "firmware.features"),
     "the back office reuses the core, the adapters and the tools, never the daemon's wiring"),
    (("device",), ("firmware.adapters", "firmware.features", "firmware.app", "firmware.commands",
                   "firmware.bench", "firmware.cli", "provisioning"), "hardware adapters import core and ports"),
    (("provisioning",), ("firmware.app", "firmware.commands", "firmware.cli"),
     "the tools reuse the core, the ports and the adapters, never the daemon's wiring"),
]


@pytest.mark.parametrize("owners,forbidden,why", RULES, ids=[r[0][0] for r in RULES])
def test_each_ring_imports_only_inward(owners, forbidden, why):
    broken = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if under(m, *owners)
                    for d in deps if under(d, *forbidden))
    assert broken == [], why


def test_features_do_not_import_each_other():
    broken = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if under(m, "firmware.features")
                    for d in deps if under(d, "firmware.features") and not _package_of(d))
    assert broken == []


def test_no_bench_or_tool_module_sits_at_the_root_of_firmware():
    root = sorted(p.name for p in (REPO / "firmware").glob("*.py"))
    assert root == ["__init__.py", "alarms.py", "cli.py", "ports.py"]


def test_nothing_reaches_into_the_app_object():
    offenders = [str(p.relative_to(REPO)) for p in REPO.glob("*/**/*.py")
                 if ".venv" not in p.parts and "getattr(app" in p.read_text(encoding="utf-8")
                 and p.name != "test_layers.py"]
    assert offenders == []


def test_every_feature_of_the_gate_starts_and_stops():
    import importlib

    from firmware.ports import Feature

    features = {
        "firmware.features.device_monitor": "DeviceMonitor", "firmware.features.status_report": "StatusReport",
        "firmware.features.remote_control": "RemoteControl", "firmware.features.passage_check": "PassageCheck",
        "firmware.features.list_updates": "GateLists", "firmware.features.provisioning": "GateProvisioning",
        "firmware.features.home_assistant": "HomeAssistantDiscovery",
        "firmware.features.dcc_trust_updates": "DccTrustUpdates",
    }
    lacking = [f"{m}.{c}" for m, c in features.items()
               if not all(callable(getattr(getattr(importlib.import_module(m), c), n, None))
                          for n in Feature.__dict__ if n in ("start", "stop"))]
    assert lacking == []
    # and every module of firmware/features/ holds one of them (or is the scan loop itself)
    modules = {m for m in MODULES if under(m, "firmware.features") and not _package_of(m)}
    assert modules - set(features) == {"firmware.features.scan_loop"}
