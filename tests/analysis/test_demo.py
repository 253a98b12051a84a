"""`hetsiren demo` end to end, at a size CI can afford (the README's main command)."""

import json

from hetsiren.cli import main


def test_demo_writes_report_and_scores(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--n", "200", "--epochs", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "report.html" in printed
    assert (out / "run" / "analysis" / "report.html").is_file()
    assert (out / "data" / "particles.star").is_file()
    metrics = json.loads((out / "evaluation.json").read_text())
    assert 0.0 <= metrics["knn_accuracy"] <= 1.0 and len(metrics["maps"]) == 3


def test_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["demo", "-o", str(tmp_path), "--n", "50", "--epochs", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
