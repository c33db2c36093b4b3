"""Two sweep processes sharing one study through a real PostgreSQL server, started here on 127.0.0.1.

The server is Debian's `postgresql` package (.ci/run installs it); initdb refuses to run as root, so as
root the server runs as `nobody`, in a temporary folder it owns. Without server binaries the test skips.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers_sweep import check_shared_study, finish, load, start, sweep_args


def server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or list(filter(None, [shutil.which("initdb")]))
    return Path(found[-1]).parent if found else None


def as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "nobody", "--", *command]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = server_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb): install Debian's postgresql package")
    home = Path(tempfile.mkdtemp(prefix="cifar10-pg-"))  # under /tmp: `nobody` can reach it
    if os.geteuid() == 0:
        shutil.chown(home, "nobody", "nogroup")
    data, port = home / "data", free_port()
    run = lambda *cmd: subprocess.run(as_server_user([str(bin_dir / cmd[0]), *cmd[1:]]), check=True,  # noqa: E731
                                      capture_output=True, text=True, timeout=120)
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
        run("pg_ctl", "-D", str(data), "-l", str(home / "server.log"), "-w", "-t", "60", "start", "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    except subprocess.CalledProcessError as err:
        pytest.fail(f"{err.cmd} failed: {err.stderr}\n{(home / 'server.log').read_text() if (home / 'server.log').exists() else ''}")
    finally:
        subprocess.run(as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_two_processes_share_one_postgresql_study(postgres_url, tiny_archive, tmp_path):
    args = sweep_args(tiny_archive, tmp_path, "--storage", postgres_url, trials=6)
    logs = [tmp_path / f"sweep{i}.log" for i in (0, 1)]
    processes = [start(args, log) for log in logs]
    texts = [finish(p, log) for p, log in zip(processes, logs)]
    check_shared_study(load(postgres_url), texts, total=6)
    assert not (tmp_path / "logs" / "sweeps" / "optuna.sqlite3").exists()  # nothing went to the SQLite default
    for text in texts:
        assert '"storage": "postgresql+psycopg://postgres@127.0.0.1:' in text


def test_the_server_answers(postgres_url):
    """The fixture's server on its own: a study made through it is read back by a second connection."""
    import optuna

    from cifar10.sweep.storage import open_storage

    name = f"probe-{time.monotonic_ns()}"
    optuna.create_study(study_name=name, storage=open_storage(postgres_url)).set_user_attr("x", 1)
    assert optuna.load_study(study_name=name, storage=open_storage(postgres_url)).user_attrs == {"x": 1}
