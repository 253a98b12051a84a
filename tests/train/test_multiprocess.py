"""Training on several processes (torchrun, gloo on the CPU) and from the image cache.

- the cache: a second run on the same particles and box, its --resume and its encode read no
  original image; a float32 cache trains the same run as the stacks;
- torchrun with 2 processes: one coherent run folder written by rank 0, the latent in input
  order, the same losses as 1 process; a kill -9 of one rank, then --resume (with another
  number of processes);
- slow: the landscape of 2 processes against 1 process over seeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hetsiren.io.mrc import MrcImageSource
from hetsiren.rundir import CONFIG, LATENT, LATENT_PRIOR, LOCK, LOG, MODEL, load_checkpoint
from hetsiren.simulate import SimulationSpec, simulate_phantom
from hetsiren.train import TrainConfig
from hetsiren.train.inference import encode_file
from hetsiren.train.trainer import train


def _config(dataset: Path, **kw) -> TrainConfig:
    base = TrainConfig(particles=str(dataset / "particles.star"), zdim=2, epochs=1,
                       batch_size=16, device="cpu", snapshot_every=0)
    return replace(base, **kw)


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / LOG).read_text().splitlines()]


def test_second_run_resume_and_encode_read_no_original_stack(tiny_dataset, tmp_path,
                                                             monkeypatch):
    cfg = _config(tiny_dataset, cache_dir=str(tmp_path / "caches"),
                  ref=str(tiny_dataset / "truth_maps" / "state_00.mrc"))
    first = train(cfg, tmp_path / "a", progress=False)
    reads = []
    monkeypatch.setattr(MrcImageSource, "read",
                        lambda self, idx: reads.append(len(idx)) or 1 / 0)
    second = train(cfg, tmp_path / "b", progress=False)
    train(replace(cfg, epochs=2), tmp_path / "b", resume=True, progress=False)
    z = encode_file(tmp_path / "b", tiny_dataset / "particles.star", device="cpu")
    assert reads == []
    np.testing.assert_allclose(second.latent, first.latent, atol=1e-6)  # same images, seed
    np.testing.assert_allclose(z, np.load(tmp_path / "b" / LATENT), atol=1e-5)
    assert len(list((tmp_path / "caches").iterdir())) == 1  # one cache, shared


def test_float32_cache_trains_the_run_the_stacks_train(tiny_dataset, tmp_path):
    from_stacks = train(_config(tiny_dataset, cache=False), tmp_path / "stacks",
                        progress=False)
    assert not (tmp_path / "stacks" / "cache").exists()
    cached = train(_config(tiny_dataset, cache_dtype="float32"), tmp_path / "cached",
                   progress=False)
    assert (tmp_path / "cached" / "cache").is_dir()  # RUN/cache by default
    np.testing.assert_allclose(cached.latent, from_stacks.latent, atol=1e-4)
    a, b = _log(tmp_path / "stacks")[0], _log(tmp_path / "cached")[0]
    assert a["total"] == pytest.approx(b["total"], rel=1e-5)


# --------------------------------------------------------------------------------------------
# torchrun
# --------------------------------------------------------------------------------------------
def _torchrun(nproc: int, *args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(nproc), "-m", "hetsiren", "train", *map(str, args)]


def _train_args(star: Path, run: Path, epochs: int, *extra) -> list:
    return [star, "-o", run, "--zdim", "2", "--epochs", epochs, "--batch-size", "16",
            "--device", "cpu", "--pose-decoupling", "0", "--ctf-decoupling", "0",
            "--snapshot-every", "0", *extra]


def test_two_processes_write_one_coherent_run(tiny_dataset, tmp_path, cli_environ):
    star = tiny_dataset / "particles.star"
    run = tmp_path / "run2"
    # started as users start it on one machine: `hetsiren train --nproc 2` runs torchrun
    res = subprocess.run([sys.executable, "-m", "hetsiren", "train",
                          *map(str, _train_args(star, run, 2)), "--nproc", "2"],
                         env=cli_environ, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("trained 2 epochs") == 1  # rank 0 reports
    names = sorted(p.name for p in run.iterdir())
    assert names == ["cache", CONFIG, LATENT, LATENT_PRIOR, LOG, MODEL], names
    assert LOCK not in names and not [n for n in names if n.startswith(".")]
    assert [e["epoch"] for e in _log(run)] == [1, 2]
    assert load_checkpoint(run)["epoch"] == 2
    z = np.load(run / LATENT)
    assert z.shape == (64, 2)
    # input order: one process encoding the file with the saved model gives the same rows
    np.testing.assert_allclose(encode_file(run, star, device="cpu"), z, atol=1e-5)
    # the same global batches as one process: the same losses (up to summation order)
    one = tmp_path / "run1"
    res = subprocess.run(_torchrun(1, *_train_args(star, one, 2)), env=cli_environ,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    for a, b in zip(_log(one), _log(run), strict=True):
        assert b["data"] == pytest.approx(a["data"], rel=1e-4)
    assert np.corrcoef(np.load(one / LATENT).ravel(), z.ravel())[0, 1] > 0.999


def _rank_pids(parent: int, deadline: float) -> dict[int, int]:
    """pid of each worker torchrun started (children of its agent, by their RANK)."""
    while time.time() < deadline:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                env = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent:
                for item in env:
                    if item.startswith(b"RANK="):
                        found[int(item[5:])] = int(entry.name)
        if len(found) == 2:
            return found
        time.sleep(0.1)
    raise AssertionError("torchrun's workers not found")


@pytest.fixture(scope="module")
def slow_star(tmp_path_factory):
    """256 particles of 16 px: epochs of a few seconds."""
    out = tmp_path_factory.mktemp("mp") / "sim"
    simulate_phantom(out, "discrete", 16, SimulationSpec(n_particles=256, snr=1.0, seed=5,
                                                         pixel_size_A=5.0), progress=False)
    return out / "particles.star"


def test_kill_one_rank_then_resume_with_another_world_size(slow_star, tmp_path, cli_environ):
    run = tmp_path / "run"
    args = _train_args(slow_star, run, 4)
    agent = subprocess.Popen(_torchrun(2, *args), env=cli_environ, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        ranks = _rank_pids(agent.pid, deadline)
        while not (run / MODEL).is_file() and agent.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.kill(ranks[1], signal.SIGKILL)
        _, err = agent.communicate(timeout=300)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode != 0, "the run ended before the kill"
    done = load_checkpoint(run)["epoch"]
    assert 1 <= done < 4, done
    # --resume on one process (any world size): the run goes on from its checkpoint
    res = subprocess.run(_torchrun(1, *args, "--resume"), env=cli_environ,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [e["epoch"] for e in _log(run)] == [1, 2, 3, 4]
    assert np.load(run / LATENT).shape == (256, 2)
    assert not (run / LOCK).exists()
    # and on two again, for more epochs
    more = [a if a != 4 else 5 for a in args]
    res = subprocess.run(_torchrun(2, *more, "--resume"), env=cli_environ,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [e["epoch"] for e in _log(run)] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_two_processes_find_the_landscape_one_process_finds(tmp_path, cli_environ):
    """ARI of KMeans(3) on the latent vs the true states, 1 vs 2 processes, seeds 1-3 (the
    CI-sized run of test_trainer.py: 1000 particles, 32 px, SNR 2, 30 epochs)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    data = tmp_path / "sim"
    simulate_phantom(data, "discrete", 32, SimulationSpec(n_particles=1000, snr=2.0, seed=3,
                                                          pixel_size_A=5.0, max_shift_px=1.0),
                     progress=False)
    truth = np.load(data / "truth.npz")["state"]
    ari: dict[int, list[float]] = {1: [], 2: []}
    for nproc in (1, 2):
        for seed in (1, 2, 3):
            run = tmp_path / f"n{nproc}s{seed}"
            args = [data / "particles.star", "-o", run, "--zdim", "4", "--epochs", 30,
                    "--seed", seed, "--ref", "auto", "--pose-decoupling", "0",
                    "--ctf-decoupling", "0", "--device", "cpu"]
            res = subprocess.run(_torchrun(nproc, *args), env=cli_environ, capture_output=True,
                                 text=True, timeout=3600)
            assert res.returncode == 0, res.stderr
            labels = KMeans(3, n_init=10, random_state=0).fit_predict(np.load(run / LATENT))
            ari[nproc].append(adjusted_rand_score(truth, labels))
    print("ARI by number of processes:", ari)
    # within the seed scatter: the 2-process runs' range overlaps the 1-process runs'
    assert max(ari[2]) >= min(ari[1]) and min(ari[2]) <= max(ari[1]), ari
