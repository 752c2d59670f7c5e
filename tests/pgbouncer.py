"""A local PgBouncer in transaction mode, as in front of Neon's pooled (`-pooler`) endpoint.

    with PgBouncer(server_host="127.0.0.1", server_port=5432) as bouncer:
        bouncer.url("test")      # postgresql://postgres@127.0.0.1:<port>/test, through PgBouncer

PgBouncer refuses to run as root; as root it runs as the `postgres` user (runuser), with its
config, log and pid in a temporary directory that user owns.
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer", path=SEARCH_PATH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgBouncer:
    def __init__(self, *, server_host: str = "127.0.0.1", server_port: int = 5432, user: str = "postgres"):
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install -y pgbouncer)")
        self.binary = binary
        self.user = user
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.run_as = "postgres" if os.geteuid() == 0 else None
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            f"""[databases]
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
pool_mode = transaction
auth_type = trust
auth_file = {self.directory / "userlist.txt"}
max_client_conn = 1000
default_pool_size = 20
max_db_connections = 0
server_lifetime = 3600
server_idle_timeout = 60
; psycopg2 sends application_name (PgBouncer passes it on); other drivers send these two
ignore_startup_parameters = extra_float_digits,options
logfile = {self.directory / "pgbouncer.log"}
pidfile = {self.directory / "pgbouncer.pid"}
"""
        )
        (self.directory / "userlist.txt").write_text(f'"{user}" ""\n')
        if self.run_as:
            account = pwd.getpwnam(self.run_as)
            for path in [self.directory, *self.directory.iterdir()]:
                os.chown(path, account.pw_uid, account.pw_gid)
        self.process: subprocess.Popen | None = None

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 15.0) -> "PgBouncer":
        command = [self.binary, str(self.directory / "pgbouncer.ini")]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on {self.port} within {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return (self.directory / "pgbouncer.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # runuser passes SIGTERM on to pgbouncer
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)

    def __enter__(self) -> "PgBouncer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
