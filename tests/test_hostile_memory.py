"""The memory fault matrix: real `mediswift run`s of the data stages on hostile input, each with a
planted `<home>/prefect/logging.yml` (and a `profiles.toml` pointing Prefect at it) whose `()`
factory would touch a marker file when Prefect configures logging.

- a clean run of the tiny recipe's download and parse stages (with a small extra corpus): the
  baseline peak (every hostile run stops in one of these two stages, so later stages would only
  add time);
- a PubMed file whose one record holds 10M empty elements (a 1 MB gzip): the run fails naming
  the file and `parse.max_xml_record_nodes`;
- an extra corpus whose second line is 48 times `parse.max_record_bytes` (lowered to 1 MiB so
  the file stays small; the 500 MB line behaves the same, see the README): the run fails at the
  download check naming the file and the line, and nothing after it runs.

Each bomb's peak memory (the largest process's RSS, from `wait4`, and the process tree's summed
PSS, polled) stays within 200 MB of the clean run's. All runs share one Prefect server started here, so no
run starts a temporary one; the planted files are read when each run imports Prefect.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import server_fixtures

REPO = Path(__file__).resolve().parents[1]
TINY = (REPO / "tests" / "recipes" / "tiny.yaml").read_text()
OVER_CLEAN_MB = 200
pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

PLANTED_LOGGING = """\
version: 1
filters:
  planted:
    (): subprocess.Popen
    args: [touch, {marker}]
root:
  level: INFO
  filters: [planted]
"""
PLANTED_PROFILES = """\
active = "planted"
[profiles.planted]
PREFECT_LOGGING_SETTINGS_PATH = "{logging}"
PREFECT_LOGGING_CONFIG_PATH = "{logging}"
"""


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    with server_fixtures.prefect_server(tmp_path_factory.mktemp("prefect")) as url:
        yield url


class Run:
    """One `mediswift run` with planted Prefect configuration; its outcome and peaks."""

    def __init__(self, tmp: Path, api: str, mirror: Path, corpus: Path, *sets: str):
        self.home, self.marker = tmp / "home", tmp / "planted-config-ran"
        prefect = self.home / "prefect"
        prefect.mkdir(parents=True)
        logging_yml = prefect / "logging.yml"
        logging_yml.write_text(PLANTED_LOGGING.format(marker=self.marker))
        (prefect / "profiles.toml").write_text(PLANTED_PROFILES.format(logging=logging_yml))
        recipe = tmp / "recipe.yaml"
        recipe.write_text(
            TINY.replace("download:\n", f"download:\n  extra_corpora: ['{corpus}']\n", 1)
        )
        env = {**os.environ, "PREFECT_API_URL": api}
        env.pop("PREFECT_HOME", None)
        args = [sys.executable, "-m", "mediswift.cli", "run", "--recipe", str(recipe),
                "--home", str(self.home), "--mirror", str(mirror),
                "--stages", "download,parse"]  # fmt: skip
        for s in sets:
            args += ["--set", s]
        err = tmp / "stderr.txt"
        with open(err, "w") as f:
            proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=f)
        self.tree_mb = 0.0
        done = threading.Event()
        poller = threading.Thread(target=self._poll, args=(proc.pid, done))
        poller.start()
        # wait4's ru_maxrss: the largest single process among the run and the descendants it
        # waited for (KiB on Linux), spikes included.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        poller.join()
        self.rc, self.max_mb = proc.returncode, usage.ru_maxrss / 1024
        self.err = err.read_text()

    def _poll(self, pid: int, done: threading.Event) -> None:
        """The process tree's summed PSS, every 20 ms (a spike between polls can be missed:
        the single-process peak from the kernel catches those). PSS, not RSS: a child just
        forked (a `git` or `ldconfig` some library starts) shares its parent's pages until it
        execs, and RSS counted them twice (a CI run once saw a second process of 236 MB at the
        bomb's peak where no second Python process runs: most likely such a child)."""
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.NoSuchProcess):  # it just ended
                        total += p.memory_full_info().pss
            except psutil.NoSuchProcess:
                return
            self.tree_mb = max(self.tree_mb, total / 2**20)
            time.sleep(0.02)


@pytest.fixture(scope="module")
def good_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "extra.jsonl"
    path.write_text('{"id": "x1", "text": "Aspirin inhibits cyclooxygenase."}\n')
    return path


def _bomb_mirror(mirror: Path, tmp: Path) -> tuple[Path, Path]:
    """The mirror with its first baseline file replaced by a 10M-element record (md5 matching)."""
    out = tmp / "mirror"
    out.mkdir()
    for entry in mirror.iterdir():
        if entry.name != "pubmed":
            (out / entry.name).symlink_to(entry)
    (out / "pubmed").mkdir()
    (out / "pubmed" / "updatefiles").symlink_to(mirror / "pubmed" / "updatefiles")
    baseline = out / "pubmed" / "baseline"
    baseline.mkdir()
    bomb = baseline / "pubmed26n0001.xml.gz"
    block = gzip.compress(b"<AbstractText/>\n" * 100_000, compresslevel=9)
    with open(bomb, "wb") as f:
        f.write(
            gzip.compress(
                b'<?xml version="1.0"?>\n<PubmedArticleSet><PubmedArticle><MedlineCitation>'
                b"<PMID>1</PMID><Article><Abstract>"
            )
        )
        for _ in range(100):  # 10M elements
            f.write(block)
        f.write(gzip.compress(b"</Abstract></Article></MedlineCitation></PubmedArticle>"))
        f.write(gzip.compress(b"</PubmedArticleSet>\n"))
    md5 = hashlib.md5(bomb.read_bytes()).hexdigest()
    (baseline / f"{bomb.name}.md5").write_text(f"MD5({bomb.name})= {md5}\n")
    return out, bomb


def _giant_line_corpus(tmp: Path, line_mb: int) -> Path:
    path = tmp / "giant.jsonl"
    block = b"x" * (1 << 20)
    with open(path, "wb") as f:
        f.write(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "')
        for _ in range(line_mb):
            f.write(block)
        f.write(b'"}\n')
    return path


def _one_line_error(run: Run) -> str:
    lines = [line for line in run.err.splitlines() if line.strip()]
    assert run.rc == 1, (run.rc, run.err[-3000:])
    assert "Traceback" not in run.err, run.err[-3000:]
    return lines[-1]


def test_hostile_data_fails_by_name_in_bounded_memory(
    prefect_api: str, mirror_dir: Path, good_corpus: Path, tmp_path: Path
) -> None:
    clean = Run(tmp_path / "clean", prefect_api, mirror_dir, good_corpus)
    assert clean.rc == 0, clean.err[-3000:]
    assert not clean.marker.exists(), "a planted Prefect logging.yml ran"

    (tmp_path / "xml").mkdir()
    mirror, bomb = _bomb_mirror(mirror_dir, tmp_path / "xml")
    xml = Run(tmp_path / "xml", prefect_api, mirror, good_corpus)
    line = _one_line_error(xml)
    assert bomb.name in line and "parse.max_xml_record_nodes" in line, line
    assert "500000 elements" in line, line
    assert not xml.marker.exists(), "a planted Prefect logging.yml ran"

    (tmp_path / "corpus").mkdir()
    giant = _giant_line_corpus(tmp_path / "corpus", 48)
    corpus = Run(
        tmp_path / "corpus", prefect_api, mirror_dir, giant, "parse.max_record_bytes=1048576"
    )
    line = _one_line_error(corpus)
    assert "giant.jsonl" in line and "line 2: longer than 1048576 bytes" in line, line
    assert "parse.max_record_bytes" in line, line
    assert not (corpus.home / "parse").exists(), "a refused corpus went on to parse"
    assert not corpus.marker.exists(), "a planted Prefect logging.yml ran"

    peaks = {
        name: (round(r.tree_mb), round(r.max_mb))
        for name, r in (("clean", clean), ("xml", xml), ("corpus", corpus))
    }
    print("peak MB (tree PSS, largest process RSS):", peaks)
    for r in (xml, corpus):
        assert r.tree_mb - clean.tree_mb < OVER_CLEAN_MB, peaks
        assert r.max_mb - clean.max_mb < OVER_CLEAN_MB, peaks
