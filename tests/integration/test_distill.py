"""A short distillation of small students from the real minilm-l6 teacher on real text (API and CLI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(minilm_dir: Path, wiki_en_dir: Path):  # type: ignore[no-untyped-def]
    from kdnas.data.config import CorpusConfig
    from kdnas.data.corpus import build_corpus
    from kdnas.models.teacher import load_teacher

    teacher = load_teacher("minilm-l6")
    splits = build_corpus(
        CorpusConfig(sources=["wiki-vital-en"], seq_len=64, max_documents=200), teacher.tokenizer
    )
    return teacher, splits


def test_inherited_student_learns_from_minilm(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kdnas.distill import DistillConfig, TeacherCache, distill, heldout_kd_loss
    from kdnas.models.inherit import inherit_student
    from kdnas.space.arch import Arch

    torch.set_num_threads(1)
    teacher, splits = setup
    cfg = DistillConfig(batch_size=8, lr=5e-4, warmup_ratio=0.1)
    student = inherit_student(teacher.model, Arch.parse("L=3,H=192,A=6,F=768"))
    res = distill(teacher, student, splits.proxy, cfg, steps=20, teacher_cache=TeacherCache(tmp_path / "tc"),
                  progress=False)  # fmt: skip
    assert res.failed is None and res.steps == 20
    first = sum(e["loss"] for e in res.history[:3]) / 3
    assert res.final_loss < first
    # layers {1, 2, 4, 5, 6} for uniform+last with 3 of 6 layers, q/k/v of layer 6 for relations
    entry = next((tmp_path / "tc").iterdir())
    assert sorted(p.name for p in entry.glob("*.npy")) == sorted(
        [f"hidden.{i}.npy" for i in (2, 4, 5, 6)] + ["q.6.npy", "k.6.npy", "v.6.npy"]
    )
    comps: dict[str, float] = {}
    held = heldout_kd_loss(teacher, student, splits.heldout, cfg, projections=res.distiller, components=comps)
    assert math.isfinite(held) and 0 < comps["hidden"] < 2 and comps["relation"] > 0


def test_cli_distill_and_resume(minilm_dir: Path, wiki_en_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModel

    from kdnas.cli import main

    out = tmp_path / "run"
    common = ["--threads", "1", "--no-progress"]
    args = [
        "distill",
        "--teacher",
        "minilm-l6",
        "--arch",
        "L=2,H=128,A=2,F=512",
        "--corpus",
        "wiki-vital-en",
        "--max-documents",
        "120",
        "--seq-len",
        "64",
        "--batch-size",
        "8",
        "--steps",
        "6",
        "--out",
        str(out),
    ]
    assert main([*args, "--max-steps", "3", *common]) == 0
    assert main([*args, *common]) == 2  # the dir holds a run: refuse without --resume
    assert main(["distill", "--resume", str(out), *common]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 6 and math.isfinite(result["heldout_kd_loss"])
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    model = AutoModel.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 128
    # saved as `kdnas run` saves a student: a sentence-transformers folder with the Dense into the teacher's 384
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out / "model"), device="cpu")
    assert st.get_sentence_embedding_dimension() == 384 and not (out / "model.tmp").exists()


def test_cli_distill_under_torchrun(minilm_dir: Path, wiki_en_dir: Path, tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2 -m kdnas distill`: rank 0 writes the run, the result matches one process."""
    import os
    import subprocess
    import sys

    args = ["distill", "--teacher", "minilm-l6", "--arch", "L=2,H=128,A=2,F=512", "--corpus", "wiki-vital-en",
            "--max-documents", "120", "--seq-len", "64", "--batch-size", "8", "--grad-accum", "2", "--steps", "4",
            "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, launcher in (
        ("one", [sys.executable, "-m", "kdnas"]),
        (
            "two",
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node=2",
                "-m",
                "kdnas",
            ],
        ),
    ):
        out = tmp_path / name
        proc = subprocess.run([*launcher, *args, "--out", str(out)], env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("distilled L2-H128-A2-F512") == 1  # rank 0 alone reports
        runs[name] = json.loads((out / "result.json").read_text())
        assert (out / "model" / "config.json").is_file() and (out / "checkpoint.json").is_file()
    assert runs["two"]["tokens"] == runs["one"]["tokens"]
    assert (
        abs(runs["two"]["heldout_kd_loss"] - runs["one"]["heldout_kd_loss"])
        < 1e-4 * runs["one"]["heldout_kd_loss"]
    )
