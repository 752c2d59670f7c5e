"""The container setup, checked without a Docker engine.

1. docker-compose.yml and the Dockerfile, read as data: what they promise (a PostgreSQL with a
   volume and a healthcheck, the API started once it is healthy, a slim non-root image with a
   healthcheck and no secrets, dependencies in their own layer) and that every variable they set
   is one the service reads.
2. "Run as the image would": a clean virtualenv with only requirements.txt (the image's
   `pip install -r requirements.txt`), the files the Dockerfile COPYs (and nothing else) in a
   fresh directory, the Dockerfile's ENV, then its CMD verbatim under `sh -c` (as the image's
   non-root user when we are root), its HEALTHCHECK command, and a SIGTERM as `docker stop` sends.
   One deliberate difference: `--host 0.0.0.0` becomes `--host 127.0.0.1` (tests listen on
   loopback only). The virtualenv is cached in .venv-image/<hash of requirements.txt and Python>.
"""
import fcntl
import fnmatch
import glob
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from pydantic import AliasChoices

from conftest import TEST_SECRET, mint_token
from config import Settings

PROJECT = Path(__file__).resolve().parent.parent
IMAGE_VENVS = PROJECT / ".venv-image"
COMPOSE_DEFAULT = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


# ---------------------------------------------------------------- reading the files


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in (PROJECT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def instruction_args(name: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile() if keyword == name]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in instruction_args("ENV"):
        words = shlex.split(arguments)
        if "=" not in words[0]:  # legacy `ENV KEY value`
            env[words[0]] = " ".join(words[1:])
        else:
            env.update(word.split("=", 1) for word in words)
    return env


def exec_form(arguments: str) -> list[str]:
    command = json.loads(arguments)
    assert isinstance(command, list) and all(isinstance(part, str) for part in command), arguments
    return command


def healthcheck_command() -> list[str]:
    (arguments,) = instruction_args("HEALTHCHECK")
    return exec_form(arguments.split(" CMD ", 1)[1].strip())


def cmd() -> list[str]:
    *_, arguments = instruction_args("CMD")
    return exec_form(arguments)


def compose() -> dict:
    return yaml.safe_load((PROJECT / "docker-compose.yml").read_text())


def compose_value(value: str) -> str:
    """What `docker compose` makes of `${VAR:-default}` with VAR unset."""
    return COMPOSE_DEFAULT.sub(lambda match: match.group(2) or "", str(value))


def environment_of(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {name: str(value) for name, value in environment.items()}


def variables_the_service_reads() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        if isinstance(field.validation_alias, AliasChoices):
            names |= {choice.upper() for choice in field.validation_alias.choices if isinstance(choice, str)}
        elif isinstance(field.validation_alias, str):
            names.add(field.validation_alias.upper())
    return names


def variables_the_cmd_reads() -> set[str]:
    return set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", " ".join(cmd())))


# ---------------------------------------------------------------- docker-compose.yml


def test_compose_database_has_a_volume_and_a_healthcheck() -> None:
    config = compose()
    db = config["services"]["db"]
    volumes = [volume if isinstance(volume, str) else f"{volume['source']}:{volume['target']}" for volume in db["volumes"]]
    named = {volume.split(":")[0]: volume.split(":")[1] for volume in volumes}
    assert "/var/lib/postgresql/data" in named.values(), volumes
    volume_name = next(name for name, target in named.items() if target == "/var/lib/postgresql/data")
    assert volume_name in (config.get("volumes") or {}), "the data volume must be a declared named volume"
    test = db["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))


def test_compose_api_waits_for_a_healthy_database_and_reads_env_file() -> None:
    services = compose()["services"]
    api = services["api"]
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    for dependency in api["depends_on"]:
        assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck to wait for"
    env_files = api["env_file"] if isinstance(api["env_file"], list) else [api["env_file"]]
    assert ".env" in [item if isinstance(item, str) else item["path"] for item in env_files]
    assert api.get("build") in (".", {"context": "."}) or api["build"].get("context") == "."
    container_ports = {str(port).rsplit(":", 1)[-1].split("/")[0] for port in api["ports"]}
    port = environment_of(api).get("PORT", dockerfile_env()["PORT"])
    assert container_ports == {compose_value(port)}, (api["ports"], port)
    for published in api["ports"]:
        assert str(published).startswith("127.0.0.1:"), f"{published}: publish on loopback only"


def test_compose_api_sets_only_variables_the_service_reads() -> None:
    api = compose()["services"]["api"]
    known = variables_the_service_reads() | variables_the_cmd_reads()
    assert {"PORT", "WEB_CONCURRENCY"} <= variables_the_cmd_reads()
    unknown = set(environment_of(api)) - known
    assert not unknown, f"docker-compose.yml sets {sorted(unknown)}, which the service never reads"


def test_compose_api_database_and_redis_urls_match_their_services() -> None:
    services = compose()["services"]
    environment = environment_of(services["api"])
    database = urlsplit(compose_value(environment["DATABASE_URL"]))
    db_env = {name: compose_value(value) for name, value in environment_of(services["db"]).items()}
    assert database.scheme in ("postgresql", "postgres") and database.hostname == "db" and database.port == 5432
    assert database.username == db_env["POSTGRES_USER"] and database.password == db_env["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == db_env["POSTGRES_DB"]
    redis_url = urlsplit(compose_value(environment["REDIS_URL"]))
    assert redis_url.hostname in services, redis_url


def test_env_example_names_only_variables_the_service_reads() -> None:
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (PROJECT / ".env.example").read_text(), flags=re.MULTILINE)
    assert "BETTER_AUTH_SECRET" in names
    unknown = set(names) - variables_the_service_reads()
    assert not unknown, f".env.example mentions {sorted(unknown)}, which the service never reads"


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_uses_a_slim_base_and_runs_as_a_non_root_user() -> None:
    bases = instruction_args("FROM")
    assert bases and "slim" in bases[-1].split()[0], bases
    users = instruction_args("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), users


def test_dockerfile_healthcheck_probes_health() -> None:
    (arguments,) = instruction_args("HEALTHCHECK")
    assert "--timeout=" in arguments and "--interval=" in arguments
    assert "/health" in " ".join(healthcheck_command())


def test_dockerfile_holds_no_secret() -> None:
    text = (PROJECT / "Dockerfile").read_text()
    assert not re.search(r"BETTER_AUTH_SECRET\s*=\s*\S", text)
    for keyword, arguments in dockerfile():
        if keyword in ("ENV", "ARG"):
            for word in shlex.split(arguments):
                name = word.split("=", 1)[0]
                assert not re.search(r"SECRET|PASSWORD|TOKEN|KEY", name), f"{keyword} {word}: secrets come from the environment"
    ignored = (PROJECT / ".dockerignore").read_text().split()
    assert ".env" in ignored, "the build context must not carry .env"


def test_dockerfile_installs_requirements_before_copying_the_code() -> None:
    steps = dockerfile()
    copy_requirements = steps.index(("COPY", "requirements.txt ."))
    install = next(i for i, (keyword, arguments) in enumerate(steps) if keyword == "RUN" and "requirements.txt" in arguments)
    first_code = min(
        i for i, (keyword, arguments) in enumerate(steps) if keyword == "COPY" and "requirements.txt" not in arguments
    )
    assert copy_requirements < install < first_code


def test_dockerfile_cmd_is_the_canonical_start() -> None:
    command = cmd()
    assert command[:2] == ["sh", "-c"]
    script = command[2]
    assert script.index("alembic upgrade head") < script.index("exec uvicorn main:app")  # exec: uvicorn gets SIGTERM
    assert dockerfile_env()["PORT"] in instruction_args("EXPOSE")[0].split()


# ---------------------------------------------------------------- run as the image would


def non_root_account() -> pwd.struct_passwd | None:
    """Who runs the service, like the image's `USER app`: `nobody` when we are root, else ourselves."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


def runs_as(python: str, account: pwd.struct_passwd | None) -> bool:
    user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} if account else {}
    try:
        return subprocess.run([python, "-c", ""], capture_output=True, timeout=30, **user).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def image_python() -> tuple[str, pwd.struct_passwd | None]:
    """An interpreter of the FROM image's Python version that the non-root user can run (a
    Python under /root is not), and that user; or ours, run as ourselves, as a last resort."""
    tag = re.search(r"python:(\d+\.\d+)", instruction_args("FROM")[-1])
    version = tag.group(1) if tag else "%d.%d" % sys.version_info[:2]
    account = non_root_account()
    candidates = [sys.executable] + [shutil.which(f"python{version}", path=d) for d in ("/usr/local/bin", "/usr/bin")]
    for python in dict.fromkeys(c for c in candidates if c):
        probe = subprocess.run([python, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30)
        if probe.stdout.strip() == version and runs_as(python, account):
            return python, account
    return sys.executable, None


def image_virtualenv(python: str) -> Path:
    """A virtualenv with exactly requirements.txt, built once per (requirements, Python) and reused."""
    requirements = (PROJECT / "requirements.txt").read_bytes()
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True).stdout
    key = hashlib.sha256(requirements + python.encode() + version.encode()).hexdigest()[:16]
    venv = IMAGE_VENVS / key
    IMAGE_VENVS.mkdir(exist_ok=True)
    with open(IMAGE_VENVS / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then reuse it
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
        install = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--no-input", "-q",
             "-r", str(PROJECT / "requirements.txt")],
            capture_output=True, text=True, timeout=900,
        )
        if install.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.fail(f"pip install -r requirements.txt failed:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}")
        (venv / ".complete").write_text(version)
        for stale in IMAGE_VENVS.iterdir():  # built for older requirements: no longer needed
            if stale.name.split(".")[0] != key:
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return venv


def dockerignored(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    return any(fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) for pattern in patterns for i in range(len(parts)))


def copy_like_the_dockerfile(app_dir: Path) -> list[str]:
    """Every COPY of the Dockerfile, from the build context (minus .dockerignore) to WORKDIR."""
    patterns = [line.strip().rstrip("/") for line in (PROJECT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = []
    for arguments in instruction_args("COPY"):
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        *sources, destination = words
        target = app_dir / destination
        into_directory = destination.endswith("/") or destination == "." or len(sources) > 1
        for source in sources:
            matches = sorted(glob.glob(source, root_dir=PROJECT))
            assert matches, f"COPY {source}: nothing in the build context matches"
            for match in matches:
                if dockerignored(match, patterns):
                    continue
                origin = PROJECT / match
                if origin.is_dir():
                    shutil.copytree(origin, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    destination_path = target / origin.name if into_directory else target
                    destination_path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, destination_path)
                copied.append(match)
    return copied


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def image_venv() -> tuple[Path, pwd.struct_passwd | None]:
    python, account = image_python()
    return image_virtualenv(python), account


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite-default", "postgres"])
def test_the_image_starts_migrates_serves_passes_its_healthcheck_and_stops(image_venv, scratch_database, database) -> None:
    venv, account = image_venv
    app_dir = Path(tempfile.mkdtemp(prefix="task-api-image-"))
    log_path = app_dir.parent / f"{app_dir.name}.log"
    process = None
    try:
        copied = copy_like_the_dockerfile(app_dir)
        assert "main.py" in copied and "requirements.txt" in copied
        assert not (app_dir / ".env").exists() and not (app_dir / "tests").exists()

        port = free_port()
        env = {
            "PATH": f"{venv / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(app_dir),
            "LANG": "C.UTF-8",
            **dockerfile_env(),
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "BETTER_AUTH_SECRET": TEST_SECRET,
        }
        if database == "postgres":  # compose's setup: an empty database, migrated by the CMD
            env["DATABASE_URL"] = scratch_database("postgres", migrate=False)
        # else: no DATABASE_URL, the image's default SQLite file in its (writable) WORKDIR
        as_user: dict = {}
        if account is not None:  # like `USER app`: /app is the user's, the code stays root's
            os.chown(app_dir, account.pw_uid, account.pw_gid)
            as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        elif os.geteuid() == 0:
            print("no Python of the image's version runs as a non-root user here: running the CMD as root")

        command = cmd()
        assert command[2].count("--host 0.0.0.0") == 1
        command[2] = command[2].replace("--host 0.0.0.0", "--host 127.0.0.1")  # the one change: loopback only
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, **as_user)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"the CMD exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no /health within 90 s:\n{log_path.read_text()[-4000:]}"
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)

        assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 200
        auth = {"Authorization": f"Bearer {mint_token('image_user_' + uuid.uuid4().hex[:8])}"}
        created = httpx.post(f"{base}/api/tasks", json={"title": "from the image"}, headers=auth, timeout=10)
        assert created.status_code == 201, created.text
        assert httpx.get(f"{base}/api/tasks/{created.json()['id']}", headers=auth, timeout=10).status_code == 200
        if database == "sqlite-default":
            assert (app_dir / "tasks.db").exists()

        healthcheck = subprocess.run(healthcheck_command(), cwd=app_dir, env=env, capture_output=True, text=True,
                                     timeout=10, **as_user)
        assert healthcheck.returncode == 0, healthcheck.stderr

        deadline = time.monotonic() + 20  # WEB_CONCURRENCY=2: two worker processes under the master
        while time.monotonic() < deadline and log_path.read_text().count("Application startup complete") < 2:
            time.sleep(0.2)
        assert log_path.read_text().count("Application startup complete") == 2, log_path.read_text()[-4000:]

        process.send_signal(signal.SIGTERM)  # `docker stop`: SIGTERM to PID 1, which `exec` made uvicorn
        assert process.wait(timeout=20) == 0, log_path.read_text()[-4000:]
        assert subprocess.run(healthcheck_command(), cwd=app_dir, env=env, capture_output=True, timeout=10).returncode != 0
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        shutil.rmtree(app_dir, ignore_errors=True)
        log_path.unlink(missing_ok=True)
