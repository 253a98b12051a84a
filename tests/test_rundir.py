"""The run folder (hetsiren.rundir): the record, open_run and its accessors, and a run written
by the code before this module existed (``tests/fixtures/old_run``, see its make_old_run.py),
which must open, analyse and resume."""

from __future__ import annotations

import dataclasses
import json
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest

from hetsiren.analysis.analyze import AnalysisConfig, analyze_run
from hetsiren.data import Preprocessing
from hetsiren.errors import UserInputError
from hetsiren.rundir import (
    ANALYSIS_FILES,
    CONFIG,
    LEGACY_NETWORK,
    LOG,
    RunRecord,
    analysis_folder,
    append_log,
    open_run,
    read_record,
    read_training_log,
    truncate_log,
    write_record,
)
from hetsiren.train.config import TrainConfig
from hetsiren.train.inference import decode_latent
from hetsiren.train.trainer import train

OLD_RUN = Path(__file__).parent / "fixtures" / "old_run"


@pytest.fixture
def old_run(tmp_path) -> tuple[Path, Path]:
    """A copy of the fixture run (and its particles) that a test may write into."""
    shutil.copytree(OLD_RUN / "run", tmp_path / "run")
    shutil.copytree(OLD_RUN / "data", tmp_path / "data")
    packed = tmp_path / "run" / "model.pt.xz"  # kept xz-compressed in git (5.6 → 4.1 MiB)
    (tmp_path / "run" / "model.pt").write_bytes(lzma.decompress(packed.read_bytes()))
    packed.unlink()
    return tmp_path / "run", tmp_path / "data" / "particles.star"


def test_the_old_record_has_no_network_and_gets_what_it_was_built_with(old_run):
    run_dir, _ = old_run
    stored = json.loads((run_dir / CONFIG).read_text())
    assert "network" not in stored  # written before config.json held it
    run = open_run(run_dir)
    net = run.record.network
    for name, value in LEGACY_NETWORK.items():
        assert getattr(net, name) == value
    # the options the network was built from come from the stored TrainConfig
    assert (net.box_size, net.zdim, net.omega0, net.decoupling) == (16, 2, 5.0, False)
    assert run.preprocessing == Preprocessing(**stored["preprocessing"])


def test_an_old_run_opens_decodes_and_analyses(old_run):
    run_dir, _ = old_run
    run = open_run(run_dir)
    z = run.latent()
    assert z.shape == (48, 2) and z.dtype == np.float32
    assert [e["epoch"] for e in run.log()] == [1, 2]
    assert np.array_equal(run.latent(2), run.latent().astype(np.float16).astype(np.float32))
    model = run.model("cpu")
    maps = decode_latent(model, z[:2], next(model.parameters()).device)
    assert maps.shape == (2, 16, 16, 16) and np.isfinite(maps).all()
    assert run.labels() is None and run.pca() is None and run.clusters() == {}
    result = analyze_run(run_dir, AnalysisConfig(k=2, pcs=1, n_samples=2, device="cpu"))
    assert result.report is not None and result.report.is_file()
    assert np.array_equal(run.labels(), result.clustering.labels)
    assert run.clusters()["k"] == 2
    np.testing.assert_array_equal(run.pca()["components"], result.pca.components)


def test_an_old_run_resumes(old_run):
    run_dir, particles = old_run
    stored = read_record(run_dir).train
    # the data moved with the fixture: the new path is a change the user allows
    cfg = dataclasses.replace(stored, particles=str(particles), epochs=3)
    result = train(cfg, run_dir, resume=True, progress=False, allow_changes=("particles",))
    assert (result.first_epoch, result.epochs_done) == (2, 3)
    assert [e["epoch"] for e in read_training_log(run_dir)] == [1, 2, 3]
    rewritten = json.loads((run_dir / CONFIG).read_text())
    assert rewritten["network"]["working_size"] == LEGACY_NETWORK["working_size"]
    assert rewritten["resumed"][0]["changes"]["particles"][1] == str(particles)
    assert open_run(run_dir).latent().shape == (48, 2)


def _record(tmp_path: Path) -> RunRecord:
    train_cfg = TrainConfig(particles=str(tmp_path / "p.star"), zdim=3, omega0=7.0)
    prep = Preprocessing(box_in=32, box=16, pixel_size_in_A=2.0, noise_std=0.5)
    return RunRecord.new(train_cfg, train_cfg.network(prep.box), prep)


def test_the_record_round_trips_and_stores_the_whole_network(tmp_path):
    record = _record(tmp_path)
    write_record(tmp_path, record)
    back = read_record(tmp_path)
    assert back == record
    assert back.network.omega0 == 7.0 and back.network.hidden_width == TrainConfig.hidden_width
    assert back.preprocessing.pixel_size_A == 4.0
    # a stored network wins over the code's constants (a changed default breaks no old run)
    data = json.loads((tmp_path / CONFIG).read_text())
    data["network"]["n_hidden"] = 5
    (tmp_path / CONFIG).write_text(json.dumps(data))
    assert read_record(tmp_path).network.n_hidden == 5
    # a stored network from before a field was added reads as the run it was
    assert back.network.feature_norm
    del data["network"]["feature_norm"]
    (tmp_path / CONFIG).write_text(json.dumps(data))
    assert not read_record(tmp_path).network.feature_norm


@pytest.mark.parametrize("text, message", [
    ('{"tool": "something else"}', "not a hetsiren run record"),
    ("{not json", "cannot read run configuration"),
])
def test_a_foreign_or_broken_record_is_a_clear_error(tmp_path, text, message):
    (tmp_path / CONFIG).write_text(text)
    with pytest.raises(UserInputError, match=message):
        open_run(tmp_path)
    with pytest.raises(UserInputError, match="not found"):
        open_run(tmp_path / "missing")


def test_the_log_is_appended_and_truncated_to_the_checkpoint(tmp_path):
    for epoch in (1, 2, 3):
        append_log(tmp_path, {"epoch": epoch, "total": 1.0 / epoch})
    with open(tmp_path / LOG, "a") as fh:
        fh.write('{"epoch": 4, "tot')  # a line cut by an interruption
    assert [e["epoch"] for e in read_training_log(tmp_path)] == [1, 2, 3]
    truncate_log(tmp_path, 2)
    assert [e["epoch"] for e in read_training_log(tmp_path)] == [1, 2]
    assert (tmp_path / LOG).read_text().endswith("}\n")


def test_analysis_file_names_have_one_owner():
    assert analysis_folder("r") == Path("r") / "analysis"
    assert analysis_folder("r", 5) == Path("r") / "analysis.005"
    assert len(set(ANALYSIS_FILES.values())) == len(ANALYSIS_FILES)
