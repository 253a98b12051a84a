"""``export_subset`` / ``hetsiren export``: particles chosen on the landscape back to RELION and
cryoSPARC, with every input column and the optics block kept.

The runs are hand-made (synthetic latent, no model) on real files written by RELION and
cryoSPARC whose image stacks are absent: export needs no images.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import starfile
from analysis_helpers import ZDIM, balanced_states, blobs, make_run

from hetsiren.analysis.analyze import AnalysisConfig, analyze_run
from hetsiren.analysis.select import export_subset, latent_column_names, load_pca
from hetsiren.cli import main as cli
from hetsiren.errors import UserInputError

STAR_FILES = ["relion5.star", "relion31.6opticsgroups.star"]
CS_FILE = "cryosparc_P12_J24_001_particles.cs"


def _n_rows(path) -> int:
    if path.suffix == ".cs":
        return len(np.load(path))
    blocks = starfile.read(path, always_dict=True)
    return len(blocks["particles"])


def _run_on(tmp_path_factory, formats_dir, name: str):
    """Analysed run whose latent separates three groups of the file's particles."""
    src = formats_dir / name
    states = balanced_states(_n_rows(src), seed=2)
    run = make_run(tmp_path_factory.mktemp(name.replace(".", "_")) / "run", src,
                   blobs(states, seed=4))
    analyze_run(run, AnalysisConfig(k=3, decode=False, report=False))
    labels = np.load(run / "analysis" / "labels.npy")
    return run, src, labels


@pytest.fixture(scope="module", params=STAR_FILES)
def star_run(request, tmp_path_factory, formats_dir):
    return _run_on(tmp_path_factory, formats_dir, request.param)


@pytest.fixture(scope="module")
def cs_run(tmp_path_factory, formats_dir):
    return _run_on(tmp_path_factory, formats_dir, CS_FILE)


def _assert_same_rows(out_df: pd.DataFrame, in_df: pd.DataFrame, rows: np.ndarray):
    expected = in_df.iloc[rows].reset_index(drop=True)
    got = out_df[list(in_df.columns)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=False,
                                  rtol=1e-12)


def test_star_export_keeps_columns_optics_and_exactly_the_selected_rows(star_run, tmp_path):
    run, src, labels = star_run
    out = tmp_path / "subset.star"
    result = export_subset(run, out, clusters=[0, 2])
    rows = np.flatnonzero(np.isin(labels, [0, 2]))
    np.testing.assert_array_equal(result.rows, rows)
    assert 0 < len(rows) < len(labels)
    inp = starfile.read(src, always_dict=True)
    got = starfile.read(out, always_dict=True)
    assert list(got) == list(inp)  # same blocks, same order
    pd.testing.assert_frame_equal(got["optics"], inp["optics"])
    assert list(got["particles"].columns) == list(inp["particles"].columns)
    _assert_same_rows(got["particles"], inp["particles"], rows)


def test_star_add_latent_adds_columns(star_run, tmp_path):
    run, src, labels = star_run
    out = tmp_path / "subset_z.star"
    result = export_subset(run, out, clusters=[1], add_latent=True)
    inp = starfile.read(src, always_dict=True)["particles"]
    got = starfile.read(out, always_dict=True)["particles"]
    names = latent_column_names(ZDIM, "star")
    assert list(got.columns) == list(inp.columns) + names
    z = np.load(run / "latent.npy")
    np.testing.assert_allclose(got[names].to_numpy(), z[result.rows], rtol=1e-6)
    _assert_same_rows(got, inp, result.rows)


def test_cs_export_keeps_every_field(cs_run, tmp_path):
    run, src, labels = cs_run
    out = tmp_path / "subset.cs"
    result = export_subset(run, out, clusters=[0, 2])
    rows = np.flatnonzero(np.isin(labels, [0, 2]))
    np.testing.assert_array_equal(result.rows, rows)
    inp, got = np.load(src), np.load(out)
    assert got.dtype.names == inp.dtype.names
    assert got.dtype == inp.dtype
    assert len(got) == len(rows)
    for name in inp.dtype.names:
        np.testing.assert_array_equal(got[name], inp[name][rows], err_msg=name)


def test_cs_add_latent(cs_run, tmp_path):
    run, src, _ = cs_run
    out = tmp_path / "subset_z.cs"
    result = export_subset(run, out, clusters=[1], add_latent=True)
    inp, got = np.load(src), np.load(out)
    names = latent_column_names(ZDIM, "cs")
    assert got.dtype.names == inp.dtype.names + tuple(names)
    z = np.load(run / "latent.npy")
    np.testing.assert_allclose(np.stack([got[n] for n in names], 1), z[result.rows])
    np.testing.assert_array_equal(got["uid"], inp["uid"][result.rows])


def test_cs_input_to_star_output(cs_run, tmp_path):
    run, src, _ = cs_run
    out = tmp_path / "subset.star"
    result = export_subset(run, out, indices=_write(tmp_path / "i.txt", "0 5 7\n"))
    got = starfile.read(out, always_dict=True)
    particles = got["particles"] if "particles" in got else next(iter(got.values()))
    assert len(particles) == 3
    np.testing.assert_array_equal(result.rows, [0, 5, 7])


def _write(path, text):
    path.write_text(text)
    return path


def test_selection_by_indices_file(star_run, tmp_path):
    run, src, labels = star_run
    n = len(labels)
    txt = _write(tmp_path / "picked.txt", f"# picked by hand\n{n - 1}, 3\n0 3\n")
    result = export_subset(run, tmp_path / "a.star", indices=txt)
    np.testing.assert_array_equal(result.rows, [0, 3, n - 1])
    npy = tmp_path / "picked.npy"
    np.save(npy, np.array([4, 1]))
    result = export_subset(run, tmp_path / "b.star", indices=npy)
    np.testing.assert_array_equal(result.rows, [1, 4])
    inp = starfile.read(src, always_dict=True)["particles"]
    _assert_same_rows(starfile.read(tmp_path / "b.star", always_dict=True)["particles"], inp,
                      np.array([1, 4]))


def test_selection_by_region(star_run, tmp_path):
    run, src, labels = star_run
    z = np.load(run / "latent.npy").astype(np.float64)
    coords = load_pca(run, z).transform(z)
    # a PC box around the upper half of PC1
    cut = float(np.median(coords[:, 0]))
    box = _write(tmp_path / "box.json", json.dumps(
        {"space": "pca", "pcs": [1], "min": [cut], "max": [None]}))
    result = export_subset(run, tmp_path / "box.star", region=box)
    np.testing.assert_array_equal(result.rows, np.flatnonzero(coords[:, 0] >= cut))
    # a polygon (PC1, PC2) around one cluster's particles
    members = coords[labels == 1][:, :2]
    lo, hi = members.min(0) - 0.1, members.max(0) + 0.1
    poly = [[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]]
    region = _write(tmp_path / "poly.json", json.dumps(
        {"space": "pca", "pcs": [1, 2], "polygon": poly}))
    result = export_subset(run, tmp_path / "poly.star", region=region)
    inside = np.all((coords[:, :2] >= lo) & (coords[:, :2] <= hi), axis=1)
    np.testing.assert_array_equal(result.rows, np.flatnonzero(inside))
    assert set(np.flatnonzero(labels == 1)) <= set(result.rows.tolist())
    # a latent box on one dimension, intersected with a cluster
    latent = _write(tmp_path / "latent.json", json.dumps(
        {"space": "latent", "min": [None] * ZDIM, "max": [4.0] + [None] * (ZDIM - 1)}))
    result = export_subset(run, tmp_path / "lat.star", region=latent, clusters=[0])
    np.testing.assert_array_equal(
        result.rows, np.flatnonzero((z[:, 0] <= 4.0) & (labels == 0)))


def test_cli_export(star_run, tmp_path, capsys, caplog):
    run, src, labels = star_run
    out = tmp_path / "cli.star"
    with caplog.at_level(logging.INFO):
        assert cli(["export", str(run), "--clusters", "0,2", "-o", str(out),
                    "--add-latent"]) == 0
    summary = f"wrote {int(np.isin(labels, [0, 2]).sum())} of {len(labels)}"
    captured = capsys.readouterr()
    # the summary is said once, not by the library's log and the command both
    assert (captured.out + captured.err + caplog.text).count(summary) == 1
    assert "rlnHetsirenZ01" in starfile.read(out, always_dict=True)["particles"].columns


def test_export_reclusters_when_labels_are_missing(tmp_path, formats_dir):
    src = formats_dir / "relion5.star"
    states = balanced_states(_n_rows(src))
    run = make_run(tmp_path / "run", src, blobs(states))
    with pytest.raises(UserInputError, match="--k"):
        export_subset(run, tmp_path / "x.star", clusters=[0])
    result = export_subset(run, tmp_path / "x.star", clusters=[0], k=3)
    assert len(np.unique(states[result.rows])) == 1


@pytest.mark.parametrize("args, match", [
    (["--clusters", "3"], "numbered 0..2"),
    (["--clusters", "0", "-o", "{tmp}/out.mrcs"], "must end in .star"),
    (["--indices", "{tmp}/bad.txt"], "out of range"),
    (["--region", "{tmp}/empty.json"], "selection is empty"),
    (["--region", "{tmp}/broken.json"], "cannot read the region"),
    (["--region", "{tmp}/umap.json"], "umap.npy"),
    ([], "choose particles"),
    (["--clusters", ","], "at least one cluster"),
])
def test_bad_input_is_a_user_error_and_exit_code_2(star_run, tmp_path, capsys, args, match):
    run, _, labels = star_run
    _write(tmp_path / "bad.txt", f"1 {len(labels)}\n")
    _write(tmp_path / "empty.json", json.dumps(
        {"space": "latent", "min": [100.0] + [None] * (ZDIM - 1)}))
    _write(tmp_path / "broken.json", "{not json")
    _write(tmp_path / "umap.json", json.dumps({"space": "umap", "polygon": [[0, 0], [1, 0],
                                                                            [1, 1]]}))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.star")]
    assert cli(["export", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert "hetsiren export: error:" in err and match in err
    assert not (tmp_path / "out.star").exists() and not (tmp_path / "out.mrcs").exists()
    assert not list(tmp_path.glob(".out*"))  # no half-written temp file


def test_particle_file_of_another_size_is_rejected(star_run, tmp_path, formats_dir):
    run, _, _ = star_run
    with pytest.raises(UserInputError, match="particles but"):
        export_subset(run, tmp_path / "x.star", clusters=[0],
                      particles=formats_dir / "relion31.star")


def test_export_never_overwrites_the_input_file(tmp_path, formats_dir):
    src = tmp_path / "input.star"
    src.write_bytes((formats_dir / "relion5.star").read_bytes())
    run = make_run(tmp_path / "run", src, blobs(balanced_states(_n_rows(src))))
    before = src.read_bytes()
    with pytest.raises(UserInputError, match="one of the files this command reads"):
        export_subset(run, src, indices=_write(tmp_path / "i.txt", "0 1"))
    assert src.read_bytes() == before


def test_region_file_checks(star_run, tmp_path):
    from hetsiren.analysis.select import read_region

    def region(spec):
        return read_region(_write(tmp_path / "r.json", json.dumps(spec)), ZDIM)

    for spec, match in [
        ({"space": "pca", "pcs": [True, 2], "polygon": [[0, 0], [1, 0], [1, 1]]}, "pcs"),
        ({"space": "pca", "pcs": [1, 2, 3], "polygon": [[0, 0], [1, 0], [1, 1]]},
         "exactly two"),
        ({"space": "latent", "polygon": [[0, 0], [1, 0], [1, 1]]}, "2D space"),
        ({"space": "pca", "polygon": [[0, 0], [1, 0]]}, "at least 3"),
        ({"space": "latent", "min": [0, 0]}, "list of 4"),
        ({"space": "pca", "min": [1, 1], "max": [0, 2]}, "exceeds"),
        ({"space": "pca"}, "polygon"),
        ({"space": "tsne", "min": [0, 0]}, "space"),
        ([1, 2], "space"),
    ]:
        with pytest.raises(UserInputError, match=match):
            region(spec)
    r = region({"space": "pca", "pcs": [2, 1], "min": [None, -1], "max": [3, None]})
    assert r.axes == (2, 1)
    np.testing.assert_array_equal(r.lower, [-np.inf, -1])
    np.testing.assert_array_equal(r.upper, [3, np.inf])


def test_export_never_overwrites_a_passthrough_file(tmp_path, formats_dir):
    # Before: -o naming the cryoSPARC passthrough file truncated it and made the main .cs
    # unreadable (the guard covered export's main input only).
    from numpy.lib import recfunctions

    full = np.load(formats_dir / "cryosparc_P12_J24_001_particles.cs")
    names = full.dtype.names
    main_fields = ["uid"] + [n for n in names if n.startswith("alignments3D/")]
    pass_fields = ["uid"] + [n for n in names if n.startswith(("blob/", "ctf/"))]
    main_cs, passthrough = tmp_path / "J9_particles.cs", tmp_path / "J9_passthrough_particles.cs"
    for path, fields in ((main_cs, main_fields), (passthrough, pass_fields)):
        with open(path, "wb") as fh:
            np.save(fh, recfunctions.repack_fields(full[fields]))
    run = make_run(tmp_path / "run", main_cs, blobs(balanced_states(len(full))))
    before = passthrough.read_bytes()
    for target in (passthrough, main_cs, run / "latent.npy"):
        with pytest.raises(UserInputError, match="one of the files this command reads"):
            export_subset(run, target, indices=_write(tmp_path / "i.txt", "0 1"))
    assert passthrough.read_bytes() == before
    result = export_subset(run, tmp_path / "subset.cs", indices=_write(tmp_path / "i.txt", "0 1"))
    assert len(result.rows) == 2
