"""Raw copies heal by default: a PubMed file whose bytes changed since its md5-verified
download, or a corpus whose content does not load, is moved aside and its download reopened,
so the next run fetches it again (with `parse.on_error: quarantine` it is listed instead, as
before). Library level: the parse unit on a hand-made home."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from mediswift.artifacts import Artifact
from mediswift.data.quarantine import RawFileError
from mediswift.stages.parse import CorpusSpec, PubmedSpec, run_unit

PUBMED = "raw/pubmed/baseline/pubmed26n0001.xml.gz"
CORPUS = "raw/corpus/biomed_text.jsonl"


def _home(tmp_path: Path, mirror_dir: Path) -> tuple[Path, Artifact]:
    home = tmp_path / "home"
    for rel, src in ((PUBMED, "pubmed/baseline/pubmed26n0001.xml.gz"),
                     (CORPUS, "corpus/biomed_text.jsonl")):  # fmt: skip
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mirror_dir / src, home / rel)
    download = Artifact("download", "d0", home / "download" / "d0").ensure()
    download.write_manifest({"pubmed": [{"path": PUBMED}], "corpora": [{"path": CORPUS}]})
    return home, download


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_pubmed_copy_whose_bytes_changed_is_moved_aside_and_fetched_again(
    tmp_path: Path, mirror_dir: Path
) -> None:
    home, download = _home(tmp_path, mirror_dir)
    spec = PubmedSpec(input=PUBMED, md5=_md5(home / PUBMED), rows_per_shard=1000)
    _flip(home / PUBMED)
    with pytest.raises(RawFileError) as err:
        run_unit(spec, home)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{home / PUBMED}: md5 "), line
    assert "it was downloaded with" in line and "the next run fetches it again" in line
    assert not (home / PUBMED).exists() and (home / "quarantine" / PUBMED).is_file()
    assert not download.done() and not spec.artifact(home).done()
    # The next run's download fetches the file again: then the unit parses it.
    shutil.copyfile(mirror_dir / "pubmed/baseline/pubmed26n0001.xml.gz", home / PUBMED)
    assert run_unit(spec, home).shards and spec.artifact(home).done()


def test_a_corpus_cut_short_is_moved_aside_by_default(tmp_path: Path, mirror_dir: Path) -> None:
    home, download = _home(tmp_path, mirror_dir)
    path = home / CORPUS
    path.write_bytes(path.read_bytes()[:5000])  # a line cut in the middle: not JSON
    spec = CorpusSpec(input=CORPUS, name="biomed_text", md5=_md5(path), rows_per_shard=1000)
    with pytest.raises(RawFileError, match=r"line \d+: .*the next run fetches it again") as err:
        run_unit(spec, home)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    assert (home / "quarantine" / CORPUS).is_file() and not path.exists()
    assert not download.done()


def test_with_on_error_quarantine_a_bad_copy_is_listed_as_before(
    tmp_path: Path, mirror_dir: Path
) -> None:
    home, download = _home(tmp_path, mirror_dir)
    spec = PubmedSpec(
        input=PUBMED, md5=_md5(home / PUBMED), rows_per_shard=1000, on_error="quarantine"
    )
    _flip(home / PUBMED)
    result = run_unit(spec, home)
    assert [q.input for q in result.quarantined] == [PUBMED]
    assert (home / PUBMED).is_file() and download.done()  # the stage's collect decides
    assert not spec.artifact(home).done()
