"""The examples in docs/crdt.md run as written (in order, sharing one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "crdt.md"


def test_guide_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6
    namespace: dict[str, object] = {"__name__": "crdt_docs"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
