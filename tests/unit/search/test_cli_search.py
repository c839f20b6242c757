"""`kdnas search --fake` end to end (synthetic evaluator, SQLite in tmp_path), and the real path's placeholder."""

from __future__ import annotations

import json

from kdnas.cli import main


def test_search_fake_end_to_end(tmp_path, capsys):
    rc = main(
        [
            "search",
            "smoke",
            "--fake",
            "--run-dir",
            str(tmp_path),
            "--search.n_trials",
            "4",
            "--search.strategy",
            "random",
            "--search.promote_fraction",
            "0.5",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "Pareto front" in out and "budget 3x" in out and "loss" in out
    saved = json.loads((tmp_path / "search.json").read_text())
    assert saved["counts"]["complete"] == 4 and saved["n_promoted"] == 2
    assert saved["study_name"] == "smoke-random-fake"
    assert (tmp_path / "search.db").is_file()
    # a second run resumes the same study: nothing left to do, same trials
    assert (
        main(
            [
                "search",
                "smoke",
                "--fake",
                "--run-dir",
                str(tmp_path),
                "--search.n_trials",
                "4",
                "--search.strategy",
                "random",
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "search.json").read_text())["counts"]["complete"] == 4


def test_search_errors_are_clear(tmp_path, capsys):
    missing = tmp_path / "no-such-teacher"
    assert main(["search", "smoke", "--run-dir", str(tmp_path), "--teacher.name", str(missing)]) == 2
    assert "no-such-teacher" in capsys.readouterr().err
    assert main(["search", "smoke", "--fake", "--run-dir", str(tmp_path), "--search.space", "nope.yaml"]) == 2
    assert "search space 'nope.yaml'" in capsys.readouterr().err
