"""The package's shape: imports run one way, without cycles, and the CLI starts light.

The layers themselves are an import-linter contract (pyproject.toml, run by ``make lint``); these
tests add what a contract cannot say: no cycle at all among semcache's modules, counting imports
inside functions and under TYPE_CHECKING, and which heavy packages a fresh ``import`` loads.
"""

from __future__ import annotations

import json
import subprocess
import sys

import grimp

HEAVY = ("instructor", "openai", "torch", "onnxruntime", "faiss", "sentence_transformers")


def test_no_import_cycle_among_semcache_modules() -> None:
    graph = grimp.build_graph("semcache")  # function-level and TYPE_CHECKING imports included
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join((module, *back)))
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import json, sys; {statement}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_the_cli_imports_no_llm_client_nor_ml_stack() -> None:
    assert _loaded_after("import semcache.cli") == []


def test_maintenance_imports_no_llm_client_nor_ml_stack() -> None:
    modules = "admin, audit_log, check, export, export_format, importer, tuning, traffic"
    assert _loaded_after(f"from semcache.ops import {modules}") == []


def test_the_check_is_not_blind() -> None:
    """The subprocess probe does see a heavy import when there is one."""
    assert _loaded_after("import semcache.integrations.instructor_cache") == ["instructor"]
