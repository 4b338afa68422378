"""Running a parser's tests on both of its paths: with its compiled helper and without."""

from __future__ import annotations

import os
from types import ModuleType

import pytest


def use_parser_path(path: str, parser: ModuleType, monkeypatch: pytest.MonkeyPatch) -> str:
    """`path` "python": the parser's helper (`parser._fast`) is set aside for the test;
    "compiled": the helper must be there. CI sets MEDISWIFT_REQUIRE_COMPILED: there a helper that
    was not built fails the test (elsewhere it skips), so a failed build cannot pass unseen."""
    if path == "python":
        monkeypatch.setattr(parser, "_fast", None)
    elif parser._fast is None:
        if os.environ.get("MEDISWIFT_REQUIRE_COMPILED"):
            pytest.fail(f"the compiled helper of {parser.__name__} was not built or not loaded")
        pytest.skip("the compiled helper is not built in this install")
    return path
