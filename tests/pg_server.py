"""A real PostgreSQL server for the tests, from Debian's postgresql package (installed by
`make test` through the Makefile's `postgres-server` target): initdb into a temporary directory,
started on a free port, stopped and removed afterwards."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise PostgresUnavailable("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                                  "run `make test` (it installs Debian's postgresql package) or "
                                  "`apt-get install postgresql`")
    return found[-1].parent


class PostgresServer:
    def __init__(self) -> None:
        self.bindir = _bindir()
        self.base = Path(tempfile.mkdtemp(prefix="recsys-pg-", dir="/tmp"))
        self.base.chmod(0o755)
        self.data, self.sock = self.base / "data", self.base / "sock"
        self.sock.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # The server refuses to run as root: run it as Debian's `postgres` user then.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.prefix:
            shutil.chown(self.base, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "recsys", "--no-sync",
                   "-E", "UTF8", "--locale", "C"])
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"), "-w",
                   "-o", f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
        self.url = f"postgresql://recsys@127.0.0.1:{self.port}/postgres"

    def _run(self, argv: list[str]) -> None:
        res = subprocess.run(self.prefix + argv, capture_output=True, text=True)
        if res.returncode != 0:
            log = (self.base / "server.log").read_text() if (self.base / "server.log").exists() else ""
            raise PostgresUnavailable(f"{' '.join(argv)} failed: {res.stderr or res.stdout}\n{log[-2000:]}")

    def stop(self) -> None:
        subprocess.run(self.prefix + [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
