"""The examples in docs/registry.md run as written (in order, sharing one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "registry.md"


def test_guide_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict[str, object] = {"__name__": "registry_docs"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
