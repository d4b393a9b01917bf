"""The documentation site builds in strict mode, with every page and every public name.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the nav
that a link needs, and a docstring mkdocstrings cannot read; the API reference is
generated from the public modules' docstrings.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = ["phoenix_cluster", "phoenix_cluster.errors", "phoenix_cluster.telemetry",
                  "phoenix_cluster.crdt", "phoenix_cluster.testing"]


def _mkdocs() -> str:
    found = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    if not Path(found).exists():
        pytest.fail("mkdocs is missing: install the test extra (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([_mkdocs(), "build", "--strict", "--site-dir", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _nav_pages(entries: list[object]) -> set[str]:
    pages: set[str] = set()
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            pages |= _nav_pages(value)
        else:
            pages.add(str(value))
    return pages


def test_every_page_is_in_the_nav() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    nav = _nav_pages(config["nav"])
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages - nav == set(), "add these pages to mkdocs.yml's nav"
    assert nav - pages == set(), "mkdocs.yml's nav names pages that do not exist"


def test_the_site_has_every_page(site: Path) -> None:
    for page in (ROOT / "docs").rglob("*.md"):
        relative = page.relative_to(ROOT / "docs").with_suffix("")
        built = site / "index.html" if relative.name == "index" else site / relative / "index.html"
        assert built.is_file(), relative


def test_the_api_reference_documents_every_public_name(site: Path) -> None:
    html = (site / "reference" / "index.html").read_text()
    missing = [f"{name}.{attr}" for name in PUBLIC_MODULES
               for attr in getattr(importlib.import_module(name), "__all__", [])
               if not attr.startswith("__") and f'id="{name}.{attr}"' not in html]
    assert not missing, f"not in the API reference: {missing}"
