"""The pieces of multi-process training (train/distributed.py), on CPU with gloo.

The split of an epoch is checked directly; the collectives run in two real processes started
by torchrun (the way users start them), each checking what it receives.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hetsiren.errors import UserInputError
from hetsiren.train.distributed import Dist, check_split, rank_batches, share


@pytest.mark.parametrize("n, batch, world", [(100, 16, 1), (100, 16, 2), (101, 16, 3),
                                             (97, 8, 4), (64, 16, 2), (33, 16, 2)])
def test_every_step_deals_out_one_global_batch(n, batch, world):
    order = np.random.default_rng(n).permutation(n)
    shares = [rank_batches(order, batch, Dist(rank=r, world_size=world)) for r in range(world)]
    steps = {len(s) for s in shares}
    assert len(steps) == 1, "every rank takes part in every step"
    single = rank_batches(order, batch, Dist())
    seen = np.concatenate([np.concatenate(s) for s in shares])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # each particle once an epoch
    n_steps = steps.pop()
    for k in range(n_steps):
        union = np.sort(np.concatenate([s[k] for s in shares]))
        if k < n_steps - 1:
            np.testing.assert_array_equal(union, np.sort(single[k]))  # the 1-process batch
        if world > 1:
            assert min(len(s[k]) for s in shares) >= 2


def test_one_process_split_is_the_plain_chunking():
    order = np.arange(50)
    chunks = rank_batches(order, 16, Dist())
    assert [len(c) for c in chunks] == [16, 16, 16, 2]


def test_too_many_processes_for_the_batch_is_a_clear_error():
    with pytest.raises(UserInputError, match="--batch-size 16 over 16 processes"):
        check_split(1000, 16, Dist(rank=0, world_size=16))


def test_shares_cover_the_set_in_order():
    parts = [share(10, Dist(rank=r, world_size=3)) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(10))


_WORKER = textwrap.dedent("""
    import numpy as np, torch
    from hetsiren.errors import UserInputError
    from hetsiren.train import distributed as D

    dist, device = D.from_environment(torch.device("cpu"))
    assert dist.world_size == 2
    r = dist.rank
    # weighted gradient mean: rank 0 has 2 particles with gradient 1, rank 1 has 6 with 3
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.full((3,), 1.0 if r == 0 else 3.0)
    total, finite = D.all_reduce_gradients([p], 2 if r == 0 else 6, True, dist)
    assert total == 8 and finite, (total, finite)
    assert torch.allclose(p.grad, torch.full((3,), (2 * 1 + 6 * 3) / 8)), p.grad
    # one rank's non-finite loss stops every rank
    _, finite = D.all_reduce_gradients([p], 1, r == 0, dist)
    assert not finite
    # the latent gathered in input order
    n = 11
    rows = D.share(n, dist)
    z = np.stack([rows, rows * 10], axis=1).astype(np.float32)
    full = D.gather_rows(z, n, dist, device)
    assert np.array_equal(full[:, 0], np.arange(n)), full
    # sums
    s = D.sum_across({"a": 1.0 + r, "b": 2.0}, dist, device)
    assert s == {"a": 3.0, "b": 4.0}, s
    # rank 0's result reaches everyone; its error too
    assert D.on_main(lambda: {"rank": dist.rank}, dist) == {"rank": 0}
    def fail():
        raise UserInputError("no such file")
    try:
        D.on_main(fail, dist)
    except UserInputError as exc:
        assert "no such file" in str(exc), exc
    else:
        raise AssertionError("no error")
    m = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(m.weight, float(r))
    D.broadcast_module(m, dist)
    assert float(m.weight.detach().sum()) == 0.0
    D.shutdown(dist)
    print(f"rank {r} ok", flush=True)
""")


def test_collectives_in_two_processes(tmp_path, cli_environ):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", str(script)], env=cli_environ,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rank 0 ok" in res.stdout and "rank 1 ok" in res.stdout
