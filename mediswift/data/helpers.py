"""The parsers' optional compiled helpers (`_pmc_fast.pyx`, `_pubmed_fast.pyx`, built by the
install where a C compiler is at hand; see setup.py)."""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from lxml import etree


def load_helper(name: str) -> ModuleType | None:
    """`mediswift.data.<name>` where the install built it against the lxml in use, else None:
    the caller then runs its Python path, which gives the same output. A helper reads lxml's
    element struct, so one built against another lxml is not used (and a warning says so)."""
    try:
        module = importlib.import_module(f"mediswift.data.{name}")
    except ImportError:  # not built (no C compiler at install)
        return None
    if etree.__version__ != module.LXML_VERSION:
        logging.getLogger(__name__).warning(
            "the compiled helper mediswift.data.%s was built for lxml %s, not %s: running the "
            "Python path (reinstall to rebuild it)",
            name,
            module.LXML_VERSION,
            etree.__version__,
        )
        return None
    return module
