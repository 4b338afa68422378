"""Keeping the corpus current: with `download.track_upstream`, a new daily update file upstream
re-keys the download stage; the next run fetches and parses only that file and refreshes the
filtered corpus."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from flows.pipeline import mediswift
from mediswift.overrides import Overrides

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "recipes" / "tiny.yaml")
pytestmark = pytest.mark.slow


def test_new_update_file_upstream_is_picked_up(prefect_harness, mirror_dir: Path, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(mirror_dir / "pubmed", mirror / "pubmed")  # this part changes upstream
    (mirror / "pmc").symlink_to(mirror_dir / "pmc")
    home = tmp_path / "home"
    track = Overrides(extra={"download": {"track_upstream": True}})
    stages = ["download", "parse", "filter"]
    first = mediswift(TINY, stages, track, str(home), str(mirror))
    parsed = {p.parent.name for p in home.glob("parse/units/*/manifest.json")}

    # Nothing new upstream: the same keys, nothing runs again.
    assert mediswift(TINY, stages, track, str(home), str(mirror)) == first

    # NCBI publishes the next daily file (here: the last one's records again, compressed anew
    # under the next name: other bytes, so another unit).
    updates = mirror / "pubmed" / "updatefiles"
    new = updates / "pubmed26n0006.xml.gz"
    records = gzip.decompress((updates / "pubmed26n0005.xml.gz").read_bytes())
    new.write_bytes(gzip.compress(records, mtime=1))
    md5 = hashlib.md5(new.read_bytes()).hexdigest()
    (updates / "pubmed26n0006.xml.gz.md5").write_text(f"MD5({new.name})= {md5}\n")
    second = mediswift(TINY, stages, track, str(home), str(mirror))
    assert second["download"] != first["download"] and second["filter"] != first["filter"]
    manifest = yaml.safe_load((Path(second["download"]) / "manifest.json").read_text())
    assert [f["path"].rsplit("/", 1)[-1] for f in manifest["pubmed"]][-1] == new.name
    now = {p.parent.name for p in home.glob("parse/units/*/manifest.json")}
    assert len(now - parsed) == 1  # only the new file was parsed

    # Without tracking, the listing is not part of the key: the plan is the recipe's alone.
    plain = mediswift(TINY, ["download"], None, str(home), str(mirror))
    assert plain["download"] not in (first["download"], second["download"])
