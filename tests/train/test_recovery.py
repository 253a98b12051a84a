"""Run folders that can always be recovered, and --resume that says what it does (issue 12,
defects 4, 7 and 10): kill -9 at a random point of the first epoch and during a checkpoint
write, honest NaN messages, refused changes on resume, truthful epoch counts."""

from __future__ import annotations

import json
import random
import shutil
import signal
import time

import pytest
import torch

from hetsiren.cli import main
from hetsiren.rundir import CONFIG, LOCK, LOG, MODEL, load_checkpoint
from hetsiren.simulate import SimulationSpec, simulate_phantom
from hetsiren.train.trainer import _diverged


@pytest.fixture(scope="module")
def slow_epoch_star(tmp_path_factory):
    """768 particles of 16 px: a first epoch of a few seconds on one CPU thread (the
    default step without decoupling does 256 in about one)."""
    out = tmp_path_factory.mktemp("recovery") / "sim"
    simulate_phantom(out, "discrete", 16, SimulationSpec(n_particles=768, snr=1.0, seed=5,
                                                         pixel_size_A=5.0), progress=False)
    return out / "particles.star"


def _epochs(run) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / LOG).read_text().splitlines()]


def _leftovers(run) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith("."))


def _copy(run, dst):
    shutil.copytree(run, dst)
    return dst


def test_kill_at_a_random_point_of_the_first_epoch(slow_epoch_star, tmp_path, hetsiren_cli,
                                                   capsys, caplog):
    # Before: the folder could neither be resumed ("no checkpoint; train first") nor
    # restarted ("already holds a run: use --resume").
    seed = random.randrange(10**6)
    delay = random.Random(seed).uniform(0.0, 1.0)
    run = tmp_path / "run"
    args = ["train", str(slow_epoch_star), "-o", str(run), "--zdim", "2", "--epochs", "1",
            "--batch-size", "16", "--device", "cpu"]
    proc = hetsiren_cli.popen(*args)
    deadline = time.time() + 300
    while not (run / CONFIG).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"seed {seed}: the run ended before the kill"
    assert (run / CONFIG).is_file() and not (run / MODEL).exists(), f"seed {seed}"
    assert (run / LOCK).exists()  # the dead process's lock is left: the next run takes it

    again = _copy(run, tmp_path / "again")
    assert main(args + ["--resume"]) == 0, f"seed {seed}"
    assert "--resume starts it again from scratch with its stored options" in caplog.text
    assert "no longer running" in caplog.text  # the stale lock was taken over
    assert _epochs(run) == [1] and load_checkpoint(run)["epoch"] == 1
    assert _leftovers(run) == []
    caplog.clear()
    args[args.index(str(run))] = str(again)
    assert main(args) == 0, f"seed {seed}"  # a plain re-run takes the folder over too
    assert "this run starts it again from scratch, with this command's options" in caplog.text
    assert _epochs(again) == [1] and _leftovers(again) == []
    assert "trained 1 epochs (1-1)" in capsys.readouterr().out


_KILL_IN_SECOND_CHECKPOINT = """
import os, signal
import torch
calls = []
save = torch.save
def killed_while_saving(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) < 2:
        return save(obj, f, *args, **kwargs)
    with open(f, "wb") as fh:
        fh.write(b"PK half a checkpoint")
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = killed_while_saving
"""


def test_kill_during_a_checkpoint_write(tiny_dataset, tmp_path, hetsiren_cli, capsys):
    # Before: the partial .model.pt.*.tmp.pt was never cleaned.
    run = tmp_path / "run"
    args = ["train", str(tiny_dataset / "particles.star"), "-o", str(run), "--zdim", "2",
            "--epochs", "2", "--batch-size", "16", "--device", "cpu"]
    proc = hetsiren_cli(*args, prelude=_KILL_IN_SECOND_CHECKPOINT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = [p.name for p in run.glob(".model.pt.*.tmp.pt")]
    assert len(partial) == 1
    assert load_checkpoint(run)["epoch"] == 1  # the previous checkpoint is whole
    assert main(args + ["--resume"]) == 0
    assert "trained 1 epochs (2-2); the run has 2 epochs" in capsys.readouterr().out
    assert _leftovers(run) == [] and _epochs(run) == [1, 2]
    assert load_checkpoint(run)["epoch"] == 2


def test_nan_messages_say_what_exists(tmp_path):
    # Before: "the last good checkpoint (epoch 0) is kept" when none had been written.
    losses = {"data": torch.tensor(float("nan")), "total": torch.tensor(float("nan"))}
    message = str(_diverged(tmp_path, 0, losses))
    assert "in epoch 1" in message and "no checkpoint was written yet" in message
    assert "kept" not in message
    (tmp_path / MODEL).write_bytes(b"x")
    message = str(_diverged(tmp_path, 3, losses))
    assert "the checkpoint of epoch 3 is kept" in message and "--allow-change lr" in message


def test_resume_refuses_changes_it_was_not_asked_to_allow(tiny_run, tmp_path, capsys):
    # Before: --resume silently ignored another particle file, --lr or --zdim, and
    # `--resume --epochs 2` on a longer run printed "trained 2 epochs".
    run = _copy(tiny_run, tmp_path / "run")
    stored = json.loads((run / CONFIG).read_text())["config"]
    star = stored["particles"]
    moved = shutil.copy(star, tmp_path / "moved.star")
    base = ["train", star, "-o", str(run), "--resume", "--device", "cpu"]

    def refused(argv, *expected):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert all(e in err for e in expected), err
        assert _epochs(run) == [1]

    refused(["train", str(moved), *base[2:]], "particle file", "--allow-change particles")
    refused(base + ["--zdim", "3"], "--zdim 3 (the run has 2)", "cannot change")
    refused(base + ["--lr", "0.001"], "--lr 0.001 (the run has 0.0003)", "--allow-change lr")
    refused(base + ["--lr", "0.001", "--allow-change", "bogus"], "not an option of train")
    assert main(base + ["--lr", "0.001", "--allow-change", "lr", "--epochs", "2"]) == 0
    assert "trained 1 epochs (2-2); the run has 2 epochs" in capsys.readouterr().out
    record = json.loads((run / CONFIG).read_text())
    assert record["config"]["lr"] == 0.001 and record["config"]["epochs"] == 2
    assert record["resumed"][0]["changes"]["lr"] == [0.0003, 0.001]
    assert main(base + ["--epochs", "1"]) == 2
    assert "has already trained 2 epochs; give --epochs 2 or more" in capsys.readouterr().err
    assert main(base) == 0  # the stored options: nothing left to train
    assert "no epoch to train: the run already has 2" in capsys.readouterr().out
    assert main(["train", star, "-o", str(run), "--device", "cpu"]) == 2  # never overwritten
    assert "already holds a run: use --resume" in capsys.readouterr().err


def test_resume_after_a_torn_log_line(tiny_run, tmp_path, capsys):
    # Before: a half-written last line of log.jsonl gave a JSONDecodeError on resume.
    run = _copy(tiny_run, tmp_path / "run")
    with open(run / LOG, "a") as fh:
        fh.write('{"epoch": 2, "total": 1.2')
    star = json.loads((run / CONFIG).read_text())["config"]["particles"]
    assert main(["train", star, "-o", str(run), "--resume", "--epochs", "2",
                 "--device", "cpu"]) == 0
    assert _epochs(run) == [1, 2]


def test_broken_checkpoints_and_bad_numbers_are_one_line(tiny_run, tiny_dataset, tmp_path,
                                                          capsys):
    # Before: KeyError for a model.pt missing keys; tracebacks for --lr nan, encode
    # --batch-size 0 and --multires 1 64 (which also left config.json behind).
    star = str(tiny_dataset / "particles.star")
    run = _copy(tiny_run, tmp_path / "run")
    state = load_checkpoint(run)

    def one_line(argv, expected):
        assert main(argv + ["--device", "cpu"]) == 2, argv
        assert expected in capsys.readouterr().err, argv

    encode = ["encode", str(run), star, "-o", str(tmp_path / "z.npy")]
    torch.save({"model": state["model"]}, run / MODEL)
    one_line(encode, "not a hetsiren checkpoint: no optimizer, epoch")
    weights = dict(state["model"])
    weights.pop("volume.v0_grid")
    torch.save({**state, "model": weights}, run / MODEL)
    one_line(encode, "model.pt: the weights do not fit the run's configuration (no ")
    one_line(["encode", str(tiny_run), star, "-o", str(tmp_path / "z.npy"), "--batch-size", "0"],
             "--batch-size 0: expected a positive integer")
    one_line(["train", star, "-o", str(tmp_path / "r1"), "--lr", "nan"],
             "--lr must be a finite number, got nan")
    one_line(["train", star, "-o", str(tmp_path / "r2"), "--multires", "1", "64"],
             "factor 64 would shrink the 16 px training images to 0 px")
    assert not (tmp_path / "z.npy").exists()
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_a_foreign_config_json_is_never_taken_over(tiny_dataset, tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / CONFIG).write_text('{"tool": "something else"}\n')
    (folder / LOG).write_text("theirs\n")
    assert main(["train", str(tiny_dataset / "particles.star"), "-o", str(folder),
                 "--device", "cpu"]) == 2
    assert "not a hetsiren run record" in capsys.readouterr().err
    assert (folder / LOG).read_text() == "theirs\n" and _leftovers(folder) == []
