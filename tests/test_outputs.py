"""The output-path check every command uses, atomic writes that honour the umask, and OS
errors as one line (issue 12, defects 2, 6 and 9)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat

import pytest

from hetsiren.cli import main
from hetsiren.errors import UserInputError
from hetsiren.outputs import atomic_path, check_outputs, describe_os_error


# --------------------------------------------------------------------------------------------
# the check itself
# --------------------------------------------------------------------------------------------
def test_an_output_that_is_an_input_is_refused_by_any_name(tmp_path):
    src = tmp_path / "data" / "particles.star"
    src.parent.mkdir()
    src.write_text("data_\n")
    (tmp_path / "link.star").symlink_to(src)
    os.link(src, tmp_path / "hard.star")
    (tmp_path / "sub").mkdir()
    for name in (src, tmp_path / "link.star", tmp_path / "sub" / ".." / "data" / "particles.star",
                 tmp_path / "hard.star"):
        with pytest.raises(UserInputError, match="one of the files this command reads"):
            check_outputs(files=[name], inputs=[src])
    check_outputs(files=[tmp_path / "new.star"], inputs=[src])  # a new name is fine
    assert src.read_text() == "data_\n"


def test_folder_and_file_mix_ups_are_refused(tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(UserInputError, match="is a folder; expected a file name"):
        check_outputs(files=[tmp_path])
    with pytest.raises(UserInputError, match="is a file; expected a folder"):
        check_outputs(folders=[a_file])
    with pytest.raises(UserInputError, match="f.txt is a file, not a folder"):
        check_outputs(files=[a_file / "out.npy"])
    check_outputs(files=[tmp_path / "new" / "deeper" / "out.npy"], folders=[tmp_path / "run"])
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UserInputError, match="cannot write in"):
            check_outputs(files=[folder / "out.npy"])
    finally:
        folder.chmod(0o755)


def test_os_errors_are_one_line():
    exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/model.pt")
    text = describe_os_error(exc)
    assert text.startswith("/data/run/model.pt: ") and "disk is full" in text
    assert "\n" not in text


def test_atomic_files_have_the_umask_mode(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    with atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"1")
    assert stat.S_IMODE((tmp_path / "x.bin").stat().st_mode) == 0o666 & ~mask


# --------------------------------------------------------------------------------------------
# through the real command line
# --------------------------------------------------------------------------------------------
def _one_line_error(proc, rc: int = 2) -> str:
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_encode_never_overwrites_what_it_reads(tiny_run, tiny_dataset, tmp_path, hetsiren_cli,
                                               capsys):
    # Before: `encode run s/particles.star -o s/particles.star` replaced the STAR (rc 0).
    star, stack = tiny_dataset / "particles.star", tiny_dataset / "particles.mrcs"
    before = {p: p.read_bytes() for p in (star, stack, tiny_run / "model.pt")}
    proc = hetsiren_cli("encode", tiny_run, star, "-o", star, "--device", "cpu")
    assert "one of the files this command reads" in _one_line_error(proc)
    (tmp_path / "alias.star").symlink_to(star)
    for target in (stack, tmp_path / "alias.star", tiny_run / "model.pt",
                   tiny_dataset / ".." / tiny_dataset.name / "particles.star"):
        assert main(["encode", str(tiny_run), str(star), "-o", str(target),
                     "--device", "cpu"]) == 2
        assert "one of the files this command reads" in capsys.readouterr().err
    assert all(p.read_bytes() == data for p, data in before.items())


def test_unwritable_outputs_fail_before_the_compute(tiny_dataset, tmp_path, hetsiren_cli,
                                                    monkeypatch, capsys):
    # Before: a Python traceback, after reconstructing everything.
    star = tiny_dataset / "particles.star"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    never = ("import hetsiren.data as hd\n"
             "def no(*a, **k):\n    raise SystemExit('compute started')\n"
             "hd.reconstruct_particles = no\n")
    proc = hetsiren_cli("reconstruct", star, "-o", blocker / "map.mrc", prelude=never)
    assert "is a file, not a folder" in _one_line_error(proc)

    import hetsiren.data

    def no_compute(*args, **kwargs):
        raise AssertionError("compute started")

    monkeypatch.setattr(hetsiren.data, "reconstruct_particles", no_compute)
    (tmp_path / "h_half2.mrc").mkdir()
    assert main(["reconstruct", str(star), "-o", str(tmp_path / "h.mrc"), "--half-maps"]) == 2
    assert "h_half2.mrc: is a folder" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="compute started"):  # a good output passes
        main(["reconstruct", str(star), "-o", str(tmp_path / "ok.mrc")])


def test_resume_checks_its_outputs_before_loading(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "latent.npy").unlink()
    (run / "latent.npy").mkdir()
    particles = json.loads((run / "config.json").read_text())["config"]["particles"]
    assert main(["train", particles, "-o", str(run), "--resume", "--epochs", "2",
                 "--device", "cpu"]) == 2
    assert "latent.npy: is a folder; expected a file name" in capsys.readouterr().err
    assert not (run / ".lock").exists()
    assert len((run / "log.jsonl").read_text().splitlines()) == 1  # nothing trained


def test_an_os_error_during_a_run_is_one_line(tiny_dataset, tmp_path, hetsiren_cli):
    # the run folder's writer of latent.npy (rundir.write_latent) hits a full disk
    full = ("import errno, os\nimport hetsiren.rundir as r\n"
            "def full(path, *a):\n"
            "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))\n"
            "r.write_npy = full\n")
    proc = hetsiren_cli("train", tiny_dataset / "particles.star", "-o", tmp_path / "run",
                        "--zdim", "2", "--epochs", "1", "--device", "cpu", prelude=full)
    line = _one_line_error(proc, rc=1)
    assert line.endswith("latent.npy: No space left on device (the disk is full)")
    assert (tmp_path / "run" / "model.pt").is_file()  # the epoch is kept: --resume re-encodes


def test_written_files_and_folders_follow_the_umask(tmp_path, hetsiren_cli):
    # Before: atomically written files were 0600 and simulated folders 0700.
    group = "import os\nos.umask(0o002)\n"
    proc = hetsiren_cli("simulate", "-o", tmp_path / "sim", "--n", "8", "--box", "16",
                        prelude=group)
    assert proc.returncode == 0, proc.stderr
    sim = tmp_path / "sim"
    assert stat.S_IMODE(sim.stat().st_mode) == 0o775
    for name in ("particles.star", "particles.mrcs", "truth_maps/state_00.mrc"):
        assert stat.S_IMODE((sim / name).stat().st_mode) == 0o664, name
