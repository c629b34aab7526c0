"""Whether the engine's hot modules run compiled, and the two rules that keep that safe.

``make install`` builds the modules ``setup.py`` lists as mypyc extensions beside their sources, and
Python imports an extension before a ``.py`` of the same name. So:

- an extension older than its source is refused (``check_fresh``): it would silently run old code;
- ``FRAUDSTREAM_PURE_PYTHON=1`` in the environment makes ``topology`` import its Python sources even where
  an extension exists (``prefer_sources``): the same code, slower, visible to profilers and debuggers.

Both act when ``topology`` is first imported, before any of its modules: that is why this is read from the
environment here and not from ``services.config``.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    FileFinder,
    SourceFileLoader,
    SourcelessFileLoader,
)
from pathlib import Path

PURE_PYTHON_ENV = "FRAUDSTREAM_PURE_PYTHON"


def select(package_dir: str) -> None:
    """At ``topology``'s import: prefer the sources when the environment asks for it, else check freshness."""
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        prefer_sources(package_dir)
    else:
        check_fresh(Path(package_dir))


def compiled_modules() -> list[str]:
    """The ``topology`` modules imported as compiled extensions in this process, as dotted names."""
    ext = tuple(EXTENSION_SUFFIXES)
    files = {n: getattr(m, "__file__", None) or "" for n, m in sys.modules.items() if n.startswith("topology.")}
    return sorted(n for n, f in files.items() if f.endswith(ext))


def engine_label() -> str:
    """One line for logs and benchmarks: which engine this process runs."""
    n = len(compiled_modules())
    return f"compiled engine (mypyc, {n} modules)" if n else "Python engine (sources)"


def check_fresh(root: Path) -> None:
    """Raise ``ImportError`` naming the first extension built before its source last changed."""
    for ext, source in _extensions(root):
        if source.stat().st_mtime > ext.stat().st_mtime:
            raise ImportError(
                f"{source} changed after its compiled module {ext.name} was built: run `make install` to rebuild "
                f"it, `make install COMPILE=0` to remove the compiled modules, or set {PURE_PYTHON_ENV}=1"
            )


def prefer_sources(package_dir: str) -> None:
    """Make the import system find only sources (and their bytecode) in ``package_dir`` and its packages."""
    loaders = ((SourceFileLoader, SOURCE_SUFFIXES), (SourcelessFileLoader, BYTECODE_SUFFIXES))
    for directory, _, files in os.walk(package_dir):
        if "__init__.py" in files:
            sys.path_importer_cache[directory] = FileFinder(directory, *loaders)


def _extensions(root: Path) -> list[tuple[Path, Path]]:
    out = []
    for suffix in EXTENSION_SUFFIXES:
        for ext in sorted(root.rglob(f"*{suffix}")):
            source = ext.with_name(ext.name[: -len(suffix)] + ".py")
            if source.exists():  # the group's shared library has no source of its own
                out.append((ext, source))
    return out
