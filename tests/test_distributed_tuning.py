"""Distributed hyperparameter tuning of WPO with the RL Zoo on a real PostgreSQL database.

A throw-away PostgreSQL server (Debian's ``postgresql`` package, installed by .ci/run) runs on 127.0.0.1 on a
free port, from a temporary folder, as a non-root user (PostgreSQL refuses to run as root: as root, the test runs
it as ``postgres`` or creates a system user). Two ``python -m rl_zoo3.train --algo wpo --optimize`` workers share
one study; every trial of both must be in it, none lost or duplicated."""

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from sb3_wpo import _zoo_hook

PG_USER_FALLBACK = "sb3wpo-pg"  # created when running as root without a ``postgres`` user
DB_USER = "wpo"
N_WORKERS = 2
N_TRIALS = 2  # per worker


def postgres_bin(name):
    """Path of a PostgreSQL server program: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    return candidates[-1] if candidates else None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_user():
    """The account that runs the server: ourselves, or (as root) ``postgres`` or a system user created for it."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", PG_USER_FALLBACK):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER_FALLBACK],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(PG_USER_FALLBACK)


def as_user(user, command):
    if user is None:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--", *command]
    return ["su", "-s", "/bin/sh", user.pw_name, "-c", " ".join(f"'{part}'" for part in command)]


@pytest.fixture
def postgres_url():
    """A PostgreSQL server on 127.0.0.1 (trust authentication), stopped and deleted afterwards; yields the URL of
    an empty database."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        message = "PostgreSQL server programs not found (apt-get install postgresql; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs the server: its absence there is a failure, not a skip
        pytest.skip(message)
    import psycopg2  # in the tests extra

    user = server_user()
    root = Path(tempfile.mkdtemp(prefix="sb3-wpo-postgres-"))
    data, log = root / "data", root / "server.log"
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    env = dict(os.environ, LC_ALL="C", LANG="C")
    port = free_port()

    def pg(*command, check=True):
        return subprocess.run(as_user(user, list(command)), cwd=root, env=env, capture_output=True, text=True, check=check)

    started = False
    try:
        pg(initdb, "-D", str(data), "-U", DB_USER, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        result = pg(pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start", check=False)
        started = result.returncode == 0
        assert started, f"PostgreSQL did not start: {result.stderr}\n{log.read_text() if log.exists() else ''}"
        connection = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE optuna")
        connection.close()
        # psycopg2 named explicitly: SQLAlchemy >= 2.1 reads a bare postgresql:// as psycopg (3).
        yield f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{port}/optuna"
    finally:
        if started:
            pg(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study(postgres_url, tmp_path):
    study_name = "wpo-Pendulum-v1"
    # Create the study (and the database tables) once, as one does before starting workers on several machines:
    # two workers creating Optuna's tables at the same instant can collide in PostgreSQL.
    optuna.create_study(storage=postgres_url, study_name=study_name, direction="maximize")

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop(_zoo_hook.ENV_VAR, None)
    workers = []
    for worker in range(N_WORKERS):
        args = ["--algo", "wpo", "--env", "Pendulum-v1", "-n", "300", "--num-threads", "1", "--seed", str(worker)]
        args += ["-f", str(tmp_path / f"logs{worker}"), "-params", "learning_starts:290"]
        args += ["--optimize", "--n-trials", str(N_TRIALS), "--n-jobs", "1", "--sampler", "random", "--pruner", "none"]
        args += ["--n-evaluations", "1", "--eval-episodes", "1", "--no-optim-plots"]
        args += ["--storage", postgres_url, "--study-name", study_name]
        process = subprocess.Popen(
            [sys.executable, "-m", "rl_zoo3.train", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        workers.append(process)
    deadline = time.monotonic() + 500
    outputs = []
    for process in workers:
        try:
            stdout, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            raise
        assert process.returncode == 0, f"worker failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
        outputs.append(stdout + stderr)

    # Each worker ran its own trials ("Trial N finished" in its Optuna log) ...
    finished = [{int(n) for n in re.findall(r"Trial (\d+) finished", output)} for output in outputs]
    assert [len(numbers) for numbers in finished] == [N_TRIALS] * N_WORKERS, finished
    assert not finished[0] & finished[1], finished
    # ... and all of them are in the study, once each, finished.
    study = optuna.load_study(storage=postgres_url, study_name=study_name)
    trials = study.get_trials(deepcopy=False)
    numbers = [trial.number for trial in trials]
    assert sorted(numbers) == list(range(N_WORKERS * N_TRIALS)) == sorted(finished[0] | finished[1])
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(trial.state in finished_states for trial in trials), [trial.state for trial in trials]
    assert {"learning_rate", "num_samples", "dual_learning_rate", "net_arch"} <= set(trials[0].params)
    assert "command" in study.user_attrs  # saved by the first worker
