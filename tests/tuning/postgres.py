"""A throwaway PostgreSQL server for tests and the benchmark: ``initdb`` + ``pg_ctl`` on a temporary folder,
listening on 127.0.0.1 only at a free port, run as the unprivileged ``postgres`` user when we are root (initdb
refuses root), stopped and deleted at the end. Needs the server binaries (Debian: ``apt-get install postgresql``)
and a driver (``pip install 'hrnas-automl[postgres]'``); :func:`missing` says what is absent."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["bin_dir", "missing", "postgres_server", "new_database"]


def bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: the newest /usr/lib/postgresql/*/bin, else the one on PATH."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.access(Path(folder, "initdb"), os.X_OK) and os.access(Path(folder, "pg_ctl"), os.X_OK):
            return Path(folder)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    return Path(initdb).parent if initdb and pg_ctl and Path(pg_ctl).parent == Path(initdb).parent else None


def missing() -> str | None:
    """Why no server can be started here (None when one can)."""
    if bin_dir() is None:
        return ("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH; "
                "install them with `apt-get install postgresql`")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "no PostgreSQL driver: pip install 'hrnas-automl[postgres]' (psycopg)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run initdb as (initdb refuses root)"
        if shutil.which("runuser") is None:
            return "running as root and `runuser` is missing (initdb refuses root)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yields the SQLAlchemy URL of its ``postgres`` database (user ``postgres``, trust auth)."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    folder = Path(tempfile.mkdtemp(prefix="hrnas-automl-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    tools, data, port = bin_dir(), folder / "data", _free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(tools / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        run(str(tools / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=200", "start")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(tools / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def new_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url``; returns its URL."""
    import psycopg

    with psycopg.connect(server_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"
