"""Our STAR block reader gives the tables ``starfile`` gives, on every file other tools wrote.

``starfile`` (the previous reader) is the reference: the same block names in the same order,
the same columns, dtypes and values, exactly; key-value blocks as the same dicts. Then the
cases the shared files lack: quotes, comments, key-value blocks, empty loops, CRLF lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from hetsiren.errors import UserInputError
from hetsiren.io import read_particles
from hetsiren.io.star import read_star_blocks


def _assert_same_blocks(path: Path) -> dict:
    expected = starfile.read(path, always_dict=True)
    got = read_star_blocks(path)
    assert list(got) == list(expected), path
    for name, block in expected.items():
        if isinstance(block, pd.DataFrame):
            pd.testing.assert_frame_equal(got[name], block, check_exact=True,
                                          obj=f"{path.name}: data_{name}")
        else:
            assert got[name] == block, (path, name)
    return got


def test_same_tables_as_starfile_on_shared_files(formats_dir):
    stars = sorted(p for folder in ("formats", "more", "conformance")
                   for p in (formats_dir.parent / folder).glob("*.star"))
    assert len(stars) >= 10
    for path in stars:
        got = _assert_same_blocks(path)
        assert any(isinstance(b, pd.DataFrame) and len(b) for b in got.values()), path


@pytest.fixture
def parallel_parse(monkeypatch):
    """Every loop parsed in pieces on 3 threads, however small (large files only, otherwise)."""
    import hetsiren.io.star as star

    monkeypatch.setattr(star, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(star.os, "cpu_count", lambda: 3)


def test_parallel_parse_gives_starfiles_tables_on_shared_files(formats_dir, parallel_parse):
    stars = sorted(p for folder in ("formats", "more", "conformance")
                   for p in (formats_dir.parent / folder).glob("*.star"))
    for path in stars:
        _assert_same_blocks(path)


def test_parallel_parse_pieces_that_disagree_fall_back_to_one_parse(tmp_path, parallel_parse):
    head = "data_particles\n\nloop_\n_rlnImageName #1\n_rlnA #2\n_rlnB #3\n"
    rows = [f"{i + 1:06d}@s.mrcs {i} x{i}\n" for i in range(30)]
    # integers in the first pieces, decimals and text in the last: one parse's dtypes
    mixed = tmp_path / "mixed.star"
    mixed.write_text(head + "".join(rows[:25]) + "".join(
        f"{i + 1:06d}@s.mrcs {i}.5 {i}\n" for i in range(25, 30)))
    _assert_same_blocks(mixed)
    for gap in ("000029@s.mrcs 28\n", "000029@s.mrcs\n"):  # short rows in the last piece
        short = tmp_path / "short.star"
        short.write_text(head + "".join(rows[:28]) + gap + rows[29])
        _assert_same_blocks(short)
    long = tmp_path / "long.star"  # a long row: the error names its line, as one parse does
    long.write_text(head + "".join(rows[:28]) + "000029@s.mrcs 28 x 1\n" + rows[29])
    with pytest.raises(UserInputError, match="data_particles: line 35 has 4 values"):
        read_star_blocks(long)


def test_same_tables_as_starfile_on_the_unusual(tmp_path):
    text = (
        "# version 30001\n\n"
        "data_general\n\n"
        "_rlnReferenceDimensionality 3\n"
        "_rlnComment \"two words\"\n"
        "_rlnPixel 1.25\n\n"
        "# version 30001\n\n"
        "data_optics\n\n"
        "loop_\n_rlnOpticsGroup #1\n_rlnOpticsGroupName #2\n_rlnImagePixelSize #3\n"
        "   1  'group one'  1.5\n"
        "   2  opticsGroup2 1.5\n\n"
        "data_empty\n\nloop_\n_rlnA #1\n_rlnB #2\n\n"
        "data_particles\n\nloop_\n_rlnImageName #1\n_rlnAngleRot #2\n_rlnNote #3\n"
        "000001@run_data_stack.mrcs  10.5  \"a note\"\n"
        "# a comment line inside the table\n"
        "\n"
        "000002@run_data_stack.mrcs  -1e-3  nan\n"
    )
    path = tmp_path / "unusual.star"
    path.write_text(text)
    got = _assert_same_blocks(path)
    assert got["general"] == {"rlnReferenceDimensionality": 3, "rlnComment": "two words",
                              "rlnPixel": 1.25}
    assert got["optics"]["rlnOpticsGroupName"].tolist() == ["group one", "opticsGroup2"]
    assert got["empty"].shape == (0, 2)
    assert got["particles"]["rlnAngleRot"].tolist() == [10.5, -1e-3]
    assert got["particles"]["rlnImageName"].tolist() == ["000001@run_data_stack.mrcs",
                                                         "000002@run_data_stack.mrcs"]


def test_crlf_lines_read_like_lf(tmp_path):
    lf = "data_particles\n\nloop_\n_rlnImageName #1\n_rlnAngleRot #2\n1@a.mrcs 1.5\n2@a.mrcs 2\n"
    (tmp_path / "lf.star").write_text(lf)
    (tmp_path / "crlf.star").write_bytes(lf.replace("\n", "\r\n").encode())
    a = read_star_blocks(tmp_path / "lf.star")["particles"]
    b = read_star_blocks(tmp_path / "crlf.star")["particles"]
    pd.testing.assert_frame_equal(a, b)


def test_large_table_round_trips_every_float_exactly(tmp_path):
    """Floats written by our writer (shortest repr) come back bit for bit."""
    from hetsiren.io.star import write_star_blocks

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@s{i % 7}.mrcs" for i in range(20_000)],
                       "rlnAngleRot": rng.uniform(-180, 180, 20_000),
                       "rlnDefocusU": rng.uniform(5e3, 3e4, 20_000),
                       "rlnClassNumber": rng.integers(1, 5, 20_000)})
    path = write_star_blocks(tmp_path / "big.star", {"particles": df}, version="30001")
    got = read_star_blocks(path)["particles"]
    np.testing.assert_array_equal(got["rlnAngleRot"].to_numpy(), df["rlnAngleRot"].to_numpy())
    np.testing.assert_array_equal(got["rlnDefocusU"].to_numpy(), df["rlnDefocusU"].to_numpy())
    assert got["rlnClassNumber"].dtype.kind == "i"
    assert got["rlnImageName"].tolist() == df["rlnImageName"].tolist()


def test_image_names_without_at_and_with_at_in_folder(tmp_path):
    """No '@' means image 1 of that file; only the first '@' separates the number."""
    from hetsiren.io.stacks import _split_image_names

    numbers, stacks = _split_image_names(pd.Series(["3@a.mrcs", "b.mrcs", "12@x@y.mrcs"]))
    assert numbers.to_pylist() == ["3", "1", "12"]
    assert stacks.to_pylist() == ["a.mrcs", "b.mrcs", "x@y.mrcs"]


def test_image_numbers_written_as_floats_are_accepted(tmp_path, formats_dir):
    """'2.0@stack' (written by some scripts) is image 2, as before the fast path."""
    source = read_particles(formats_dir / "toy_projections.star", pixel_size_A=1.0)
    stack = source.images.stack_paths[0]
    path = tmp_path / "floats.star"
    path.write_text("data_particles\n\nloop_\n_rlnImageName #1\n"
                    f"2.0@{stack}\n000003@{stack}\n")
    particles = read_particles(path, pixel_size_A=1.0)
    np.testing.assert_array_equal(particles.images.index_in_stack, [1, 2])
    np.testing.assert_array_equal(particles.images.read(np.array([0, 1])),
                                  source.images.read(np.array([1, 2])))


def test_not_a_star_file_is_a_user_error(tmp_path):
    (tmp_path / "empty.star").write_bytes(b"")
    with pytest.raises(UserInputError, match="no data_ block"):
        read_star_blocks(tmp_path / "empty.star")
    (tmp_path / "header.star").write_text("data_particles\n\nloop_\n\n1 2 3\n")
    with pytest.raises(UserInputError, match="without column names"):
        read_star_blocks(tmp_path / "header.star")
