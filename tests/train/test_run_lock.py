"""The run-folder lock: one writer per run folder, a clear error naming the holder, stale
locks of dead processes taken over (issue 12, defect 1)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from hetsiren.analysis.analyze import analyze_run
from hetsiren.errors import UserInputError
from hetsiren.rundir import CONFIG, LOCK, RunLock
from hetsiren.train.inference import load_run

_WAIT_AT_CHECKPOINT = """
import os, time
import hetsiren.train.trainer as trainer
save = trainer.save_checkpoint
def wait_then_save(*args, **kwargs):
    while not os.path.exists({go!r}):
        time.sleep(0.05)
    return save(*args, **kwargs)
trainer.save_checkpoint = wait_then_save
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(folder, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    info = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00",
            "command": "hetsiren train old", **fields}
    (folder / LOCK).write_text(json.dumps(info))


def test_two_trains_into_one_folder_second_is_refused(tiny_dataset, tmp_path, hetsiren_cli):
    # Before: both succeeded and left config.json of one run with model.pt of the other.
    run, go = tmp_path / "run", tmp_path / "go"
    star = tiny_dataset / "particles.star"
    # The first run waits at its first checkpoint until the second has tried.
    first = hetsiren_cli.popen("train", star, "-o", run, "--zdim", "2", "--epochs", "1",
                               "--device", "cpu", prelude=_WAIT_AT_CHECKPOINT.format(go=str(go)))
    deadline = time.time() + 120
    while not (run / LOCK).exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert (run / LOCK).exists(), first.communicate()
    second = hetsiren_cli("train", star, "-o", run, "--zdim", "3", "--epochs", "1",
                          "--device", "cpu")
    go.touch()
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2
    message = second.stderr.strip().splitlines()[-1]
    assert f"pid {first.pid} on host {socket.gethostname()}" in message
    assert "Traceback" not in second.stderr
    cfg, _, model, _ = load_run(run, "cpu")  # config and model from the same run
    assert cfg.zdim == 2 == model.net.config.zdim
    assert not (run / LOCK).exists()


def test_lock_names_the_holder_and_is_released(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        holder = json.loads((run / LOCK).read_text())
        assert holder["host"] == socket.gethostname() and holder["pid"] > 0
        with pytest.raises(UserInputError, match=rf"pid {holder['pid']} on host"):
            RunLock(run).__enter__()
        (run / "x").write_text("kept")
    assert not (run / LOCK).exists() and (run / "x").exists()


def test_a_failed_start_leaves_no_folder(tmp_path):
    run = tmp_path / "new"
    with pytest.raises(RuntimeError), RunLock(run):
        raise RuntimeError("failed before writing anything")
    assert not run.exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    _write_lock(run)
    with RunLock(run):
        assert json.loads((run / LOCK).read_text())["command"] != "hetsiren train old"
    assert "no longer running" in caplog.text


def test_lock_from_before_a_reboot_is_stale(tmp_path):
    run = tmp_path / "run"
    _write_lock(run, pid=os.getpid(), boot_id="another-boot")  # a live pid, but another boot
    with RunLock(run):
        pass


def test_lock_of_another_host_is_not_taken(tmp_path):
    run = tmp_path / "run"
    _write_lock(run, host="elsewhere.example")
    with pytest.raises(UserInputError, match=r"on host elsewhere.example.*delete .*\.lock"):
        RunLock(run).__enter__()


def test_analyze_is_refused_while_a_training_holds_the_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with RunLock(run), pytest.raises(UserInputError, match="being written by another"):
        analyze_run(run, k=2, decode=False, report=False)
    assert (run / CONFIG).exists()
