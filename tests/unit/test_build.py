"""The compiled engine's guards: a stale extension is refused, and the sources can be preferred."""

from __future__ import annotations

import importlib
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from topology.build import check_fresh, engine_label, prefer_sources


def _package(root: Path, name: str) -> Path:
    pkg = root / name
    (pkg / "inner").mkdir(parents=True)
    for d in (pkg, pkg / "inner"):
        (d / "__init__.py").write_text("")
    (pkg / "inner" / "mod.py").write_text("WHERE = 'source'\n")
    (pkg / "inner" / f"mod{EXTENSION_SUFFIXES[0]}").write_bytes(b"not an extension")
    return pkg


def test_an_extension_older_than_its_source_is_refused_naming_both(tmp_path: Path) -> None:
    pkg = _package(tmp_path, "stalepkg")
    ext = pkg / "inner" / f"mod{EXTENSION_SUFFIXES[0]}"
    os.utime(ext, (1_000_000, 1_000_000))
    with pytest.raises(ImportError, match=r"inner/mod\.py changed after its compiled module mod\..*make install"):
        check_fresh(pkg)
    os.utime(ext, None)  # rebuilt: newer than the source
    check_fresh(pkg)


def test_preferring_sources_imports_the_py_beside_an_extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _package(tmp_path, "bothpkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ImportError):  # Python's own order: the extension first (here not a real one)
            importlib.import_module("bothpkg.inner.mod")
        for name in [n for n in sys.modules if n.startswith("bothpkg")]:
            del sys.modules[name]
        prefer_sources(str(pkg))
        assert importlib.import_module("bothpkg.inner.mod").WHERE == "source"
    finally:
        for name in [n for n in sys.modules if n.startswith("bothpkg")]:
            del sys.modules[name]
        for d in (pkg, pkg / "inner"):
            sys.path_importer_cache.pop(str(d), None)


def test_the_engine_label_names_what_this_process_imported() -> None:
    import topology.state.window as window

    compiled = window.__file__ is not None and window.__file__.endswith(tuple(EXTENSION_SUFFIXES))
    assert engine_label().startswith("compiled engine (mypyc" if compiled else "Python engine")
