"""The PostgreSQL server of `make serve-team` (`MEDISWIFT_DB=postgres make serve`): one server
the serve script owns, its data folder under the home, on 127.0.0.1 only, with a database and a
user each for Prefect and MLflow.

  python deployments/postgres.py start --data <home>/postgres --run-dir .serve [--port N]

initialises the data folder on first use (passwords generated then, kept in `<data>/secrets`,
a libpq password file readable by its owner only), starts the server in a session of its own
(its pid in `<run-dir>/postgres.pid`: `deployments/stop.sh` ends it with a fast shutdown), waits until it takes
connections, creates what is missing (users, databases, Prefect's `pg_trgm` extension), and
prints for the shell:

  PGPASSFILE                           the password file (libpq and asyncpg read it)
  PREFECT_API_DATABASE_CONNECTION_URL  postgresql+asyncpg://prefect@127.0.0.1:<port>/prefect
  MEDISWIFT_PG_MLFLOW_URI              postgresql+psycopg2://mlflow@127.0.0.1:<port>/mlflow

No password is on a command line or in a URI: both servers find theirs in the password file.
The server binaries are PostgreSQL's own (`initdb` and `postgres` on PATH, or Debian's
/usr/lib/postgresql/<version>/bin; `MEDISWIFT_PG_BIN` names another folder). Started as root,
the server runs as the system user `postgres` (PostgreSQL refuses root), which must be able to
reach the data folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SUPERUSER = "postgres"
DATABASES = ("prefect", "mlflow")  # each owned by a user of the same name
OS_USER = "postgres"  # who runs the server when this is started as root
READY_S = 60


def find_bin() -> Path:
    """The folder holding `initdb` and `postgres`."""
    named = os.environ.get("MEDISWIFT_PG_BIN")
    candidates = [Path(named)] if named else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    sys.exit(
        "postgres.py: no PostgreSQL server found (initdb and postgres): install it "
        "(Debian: apt-get install postgresql) or set MEDISWIFT_PG_BIN to its bin folder"
    )


def run_as() -> pwd.struct_passwd | None:
    """The system user the server runs as when this runs as root (None: as this user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        sys.exit(
            f"postgres.py: started as root, and PostgreSQL refuses to run as root: create a "
            f"system user {OS_USER!r} (Debian's postgresql package does) or run as another user"
        )


def as_user(user: pwd.struct_passwd | None) -> dict:
    """subprocess options that run a command as `user`."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def read_secrets(path: Path) -> dict[str, str]:
    """user -> password from the libpq password file (host:port:db:user:password lines)."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 5:
            out[parts[3]] = parts[4]
    return out


def write_secrets(path: Path, passwords: dict[str, str]) -> None:
    """A libpq password file valid for any host, port and database (only this server's users
    are in it): 0600, written before it is named."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for user, password in passwords.items():
            f.write(f"*:*:*:{user}:{password}\n")
    os.replace(tmp, path)


def init(data: Path, bin_dir: Path, user: pwd.struct_passwd | None) -> dict[str, str]:
    """The data folder made once (`<data>/db`, owned by the server's user); the passwords."""
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o711 if user else 0o700)  # the server's user walks through, reads nothing
    secrets_file = data / "secrets"
    passwords = read_secrets(secrets_file) if secrets_file.is_file() else {}
    for name in (SUPERUSER, *DATABASES):
        passwords.setdefault(name, secrets.token_urlsafe(24))
    write_secrets(secrets_file, passwords)
    db = data / "db"
    if (db / "PG_VERSION").is_file():
        return passwords
    if db.exists():
        shutil.rmtree(db)  # an initdb cut short: made again
    db.mkdir(mode=0o700)
    if user:
        os.chown(db, user.pw_uid, user.pw_gid)
        reach = subprocess.run(["test", "-w", str(db)], **as_user(user), check=False)
        if reach.returncode != 0:
            sys.exit(
                f"postgres.py: the server runs as {user.pw_name} (started as root), which "
                f"cannot reach {db}: make its parent folders traversable (chmod o+x) or put "
                "the home elsewhere"
            )
    pwfile = data / ".initdb-pw"  # read by initdb as the server's user, then removed
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(passwords[SUPERUSER] + "\n")
    if user:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    try:
        out = subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(db), "-U", SUPERUSER, f"--pwfile={pwfile}",
             "--auth-host=scram-sha-256", "--auth-local=peer", "--encoding=UTF8",
             "--locale=C"],
            capture_output=True, text=True, check=False, **as_user(user),
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    if out.returncode != 0:
        shutil.rmtree(db, ignore_errors=True)
        sys.exit(f"postgres.py: initdb failed:\n{out.stdout}{out.stderr}")
    return passwords


def start(
    data: Path, run_dir: Path, port: int, bin_dir: Path, user: pwd.struct_passwd | None
) -> int:
    """The server in a session of its own, on 127.0.0.1:`port` only (no Unix socket); its pid."""
    log = open(run_dir / "postgres.log", "ab")  # noqa: SIM115 (the server keeps it)
    proc = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data / "db"),
         "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
         "-c", "unix_socket_directories=", "-c", "max_connections=200"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        **as_user(user),
    )  # fmt: skip
    (run_dir / "postgres.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def connect(port: int, password: str, dbname: str = "postgres"):  # noqa: ANN201
    import psycopg2

    return psycopg2.connect(
        host="127.0.0.1", port=port, user=SUPERUSER, password=password, dbname=dbname,
        connect_timeout=5,
    )  # fmt: skip


def wait_ready(pid: int, port: int, password: str, log: Path) -> None:
    import psycopg2

    deadline = time.monotonic() + READY_S
    while True:
        try:
            with contextlib.closing(connect(port, password)):
                return
        except psycopg2.OperationalError as e:
            why = str(e).strip()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our child: reaped if it died
        if not _alive(pid):
            sys.exit(f"postgres.py: the server exited before it took connections; see {log}")
        if time.monotonic() > deadline:
            sys.exit(
                f"postgres.py: the server took no connection in {READY_S} s ({why}); see {log}"
            )
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ensure_databases(port: int, passwords: dict[str, str]) -> None:
    """Each database and its owner (passwords set again: the file is the truth), and pg_trgm
    in Prefect's (its migrations create it, which takes a superuser without contrib trust)."""
    from psycopg2 import sql

    con = connect(port, passwords[SUPERUSER])
    con.autocommit = True
    with contextlib.closing(con), con.cursor() as cur:
        for name in DATABASES:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(name)),
                (passwords[name],),
            )
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not cur.fetchone():
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(name)
                    )
                )
    con = connect(port, passwords[SUPERUSER], "prefect")
    con.autocommit = True
    with contextlib.closing(con), con.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")


def cmd_start(args: argparse.Namespace) -> None:
    data, run_dir = args.data.resolve(), args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    if port_taken(port):
        sys.exit(f"postgres.py: 127.0.0.1:{port} is already in use: set MEDISWIFT_PG_PORT")
    bin_dir, user = find_bin(), run_as()
    t0 = time.monotonic()
    passwords = init(data, bin_dir, user)
    pid = start(data, run_dir, port, bin_dir, user)
    wait_ready(pid, port, passwords[SUPERUSER], run_dir / "postgres.log")
    ensure_databases(port, passwords)
    took = time.monotonic() - t0
    base = f"127.0.0.1:{port}"
    for key, value in (
        ("MEDISWIFT_PG_PORT", str(port)),
        ("MEDISWIFT_PG_START_S", f"{took:.1f}"),
        ("PGPASSFILE", str(data / "secrets")),
        ("PREFECT_API_DATABASE_CONNECTION_URL", f"postgresql+asyncpg://prefect@{base}/prefect"),
        ("MEDISWIFT_PG_MLFLOW_URI", f"postgresql+psycopg2://mlflow@{base}/mlflow"),
    ):
        print(f"export {key}={shlex.quote(value)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="initialise if needed, start, create users and databases")
    s.add_argument("--data", type=Path, required=True, help="the server's folder")
    s.add_argument("--run-dir", type=Path, required=True, help="pid and log folder")
    s.add_argument("--port", type=int, default=0, help="default: a free port")
    s.set_defaults(func=cmd_start)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
