from __future__ import annotations

import csv
import json

import pytest

from kdnas.cli import main


@pytest.fixture
def toy_csv(tmp_path, task):
    path = tmp_path / "toy.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for s in ("train", "dev", "test"):
            sp = task.split(s)
            w.writerows([t, task.label_names[y], s] for t, y in zip(sp.texts, sp.labels))
    return path


def test_evaluate_with_teacher_prints_table_and_writes_json(tiny_dir, toy_csv, tmp_path, capsys):
    out = tmp_path / "res" / "results.json"
    rc = main(["evaluate", str(tiny_dir), "--tasks", str(toy_csv), "--teacher", str(tiny_dir), "--seeds", "0",
               "--lrs", "2e-3", "--epochs", "3", "--batch-size", "8", "--max-len", "16", "--threads", "1",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "toy" in text and "accuracy" in text and "retention" in text and "average retention" in text
    data = json.loads(out.read_text())
    assert data["model"]["results"]["toy"]["test_mean"] >= 0.9
    assert data["retention"]["rows"][1]["avg_retention"] is not None
    assert data["config"]["seeds"] == [0] and data["config"]["lrs"] == [2e-3]
    assert out.with_suffix(".md").read_text().startswith("| model | toy (accuracy; majority 50.0)")


def test_evaluate_student_lrs_apply_to_the_model_not_the_teacher(tiny_dir, toy_csv, tmp_path, capsys):
    out = tmp_path / "results.json"
    rc = main(["evaluate", str(tiny_dir), "--tasks", str(toy_csv), "--teacher", str(tiny_dir), "--seeds", "0",
               "--lrs", "2e-3", "--student-lrs", "1e-3,3e-3", "--epochs", "2", "--batch-size", "8",
               "--max-len", "16", "--threads", "1", "--out", str(out)])  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    assert sorted(r["lr"] for r in data["model"]["results"]["toy"]["runs"]) == [1e-3, 3e-3]
    assert [r["lr"] for r in data["teacher"]["results"]["toy"]["runs"]] == [2e-3]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("evaluate:\n  student_lrs: [1.0e-3, 3.0e-3]\n")
    rc = main(["evaluate", str(tiny_dir), "--tasks", str(toy_csv), "--config", str(cfg), "--seeds", "0",
               "--lrs", "2e-3", "--epochs", "1", "--batch-size", "8", "--max-len", "16", "--threads", "1",
               "--out", str(out)])  # fmt: skip
    assert rc == 0  # --lrs alone is the grid of every model, whatever the config's student_lrs
    assert [r["lr"] for r in json.loads(out.read_text())["model"]["results"]["toy"]["runs"]] == [2e-3]


def test_evaluate_bad_inputs(tiny_dir, toy_csv, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty"), "--tasks", str(toy_csv)]) == 2
    assert "config.json" in capsys.readouterr().err
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    assert main(["evaluate", str(gpt), "--tasks", str(toy_csv)]) == 2
    assert "gpt2" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_dir), "--tasks", str(tmp_path / "missing.csv")]) == 2
    assert "no such task file" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_dir), "--tasks", str(toy_csv), "--lrs", "2"]) == 2
    assert "evaluate.lrs" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_dir), "--tasks", str(toy_csv), "--task-distill"]) == 2
    assert "needs --teacher" in capsys.readouterr().err


@pytest.fixture
def xx_csv(tmp_path):
    from .test_zero_shot import _target

    target = _target(48)
    path = tmp_path / "toy_xx.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for i, (t, y) in enumerate(zip(target.test.texts, target.test.labels)):
            w.writerow([t, target.label_names[y], ("train", "dev", "test", "test")[i % 4]])
    return path


def test_evaluate_zero_shot_columns(tiny_dir, toy_csv, xx_csv, tmp_path, capsys):
    out = tmp_path / "zs.json"
    zs = "toy>toy_xx"  # results are named by the tasks' names, the file stems
    rc = main(["evaluate", str(tiny_dir), "--tasks", f"{toy_csv},{toy_csv}>{xx_csv}", "--teacher", str(tiny_dir), "--seeds",
               "0", "--lrs", "2e-3", "--epochs", "3", "--batch-size", "8", "--max-len", "16", "--threads", "1",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    text = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "(zero-shot)" in text and "zero-shot retention" in text and "retention by language" in text
    assert "8 toy_xx test examples excluded" in text  # the target's 'calm' examples have no source class
    data = json.loads(out.read_text())
    res = data["model"]["results"][zs]
    assert res["zero_shot"]["excluded"] == {"calm": 8} and res["n_test"] == 16
    assert data["retention"]["zero_shot"] == [zs] and data["retention"]["rows"][1]["zero_shot_retention"]
    assert "## Per language" in out.with_suffix(".md").read_text()


def test_evaluate_zero_shot_bad_inputs(tiny_dir, toy_csv, xx_csv, tmp_path, capsys):
    assert main(["evaluate", str(tiny_dir), "--tasks", f"{toy_csv}>{toy_csv}"]) == 2
    assert "same task" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_dir), "--tasks", f"{toy_csv}>{tmp_path / 'de.csv'}"]) == 2
    assert "target task" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_dir), "--tasks", f"{toy_csv}>{xx_csv}", "--teacher", str(tiny_dir),
                 "--task-distill"]) == 2  # fmt: skip
    assert "not available for zero-shot" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("text,label,split\n" + "".join(f"t {s} {i},{'xy'[i]},{s}\n" for s in ("train", "dev",
                     "test") for i in range(2)))  # fmt: skip
    assert main(["evaluate", str(tiny_dir), "--tasks", f"{toy_csv}>{other}"]) == 2
    assert "covers 0 target class" in capsys.readouterr().err
