"""The clients users serve an export with, on the smoke run's export: transformers, sentence-transformers,
onnxruntime (the card's own snippets), the Python API, optuna-dashboard; and each one's agreement with kdnas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_every_client_gets_kdnas_numbers(smoke_run: Path) -> None:
    """`kdnas.export.clients.check_clients`: sentence-transformers and fp32 ONNX (token states and the graph's
    sentence embedding) agree with PyTorch to float noise; int8 within its documented tolerance."""
    from kdnas.export.clients import check_clients

    name = json.loads((smoke_run / "summary.json").read_text())["students"][0]["name"]
    checks = {(c.client, c.output): c for c in check_clients(smoke_run / "export" / name)}
    assert set(checks) == {
        ("sentence-transformers", "sentence embedding"),
        ("onnxruntime model.onnx", "token states"),
        ("onnxruntime model.onnx", "sentence embedding"),
        ("onnxruntime model-int8.onnx", "token states"),
        ("onnxruntime model-int8.onnx", "sentence embedding"),
    }
    for (client, _), c in checks.items():
        if "int8" in client:
            assert c.min_cosine > 0.95, c
        else:
            assert c.min_cosine > 0.99999 and c.max_abs_diff < 1e-3, c


def test_exported_student_loads_with_transformers(smoke_run: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    name = json.loads((smoke_run / "summary.json").read_text())["students"][0]["name"]
    d = smoke_run / "export" / name
    model = AutoModel.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    out = model(**tok(["a short test sentence"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == model.config.hidden_size


def test_the_cards_usage_snippets_run_and_its_model_index_has_the_suite(smoke_run: Path) -> None:
    """Every Python block of the exported card's "How to use" runs as written (the path pointed at the export),
    and the front matter's model-index carries the student's suite scores from retention.json."""
    import re

    import numpy as np
    import yaml

    name = json.loads((smoke_run / "summary.json").read_text())["students"][0]["name"]
    d = smoke_run / "export" / name
    text = (d / "README.md").read_text()
    usage = text[text.index("## How to use") :]
    blocks = re.findall(r"```python\n(.*?)```", usage, flags=re.S)
    assert (
        len(blocks) == 4
    )  # transformers, sentence-transformers, onnxruntime: token states, sentence embedding
    outputs = []
    for code in blocks:
        scope: dict = {}
        exec(code.replace(f"path/to/{name}", str(d)), scope)  # the card's own snippet
        outputs.append(next(scope[k] for k in ("hidden", "embeddings", "embedding") if k in scope))
    hidden_pt, emb, hidden_ort, emb_ort = outputs
    assert np.abs(hidden_pt.detach().numpy() - hidden_ort).max() < 1e-3
    assert emb.shape[-1] == emb_ort.shape[-1] == 384  # the teacher's embedding width, in both runtimes
    assert np.abs(np.asarray(emb) - emb_ort).max() < 1e-4  # the ONNX graph pools and projects as ST does
    front = yaml.safe_load(text.split("---\n")[1])
    rows = {r["model"]: r for r in json.loads((smoke_run / "retention.json").read_text())["rows"]}
    results = {r["dataset"]["name"]: r["metrics"][0]["value"] for r in front["model-index"][0]["results"]}
    assert results == {t: round(v, 4) for t, v in rows[name]["scores"].items()}
    assert "wiki-vital-en" in front["datasets"]


def test_exported_student_is_a_sentence_transformer_in_the_teachers_space(
    smoke_run: Path, minilm_dir: Path
) -> None:
    st = pytest.importorskip("sentence_transformers")
    import torch

    from kdnas.models.pooling import Pooling, load_dense_weights, pool, read_pooling

    name = json.loads((smoke_run / "summary.json").read_text())["students"][0]["name"]
    d = smoke_run / "export" / name
    texts = ["The river flows through the old town.", "A goal in the last minute won the cup final."]
    student = st.SentenceTransformer(str(d), device="cpu")
    got = torch.as_tensor(student.encode(texts))
    pooling = read_pooling(d)
    assert pooling is not None and pooling.mode == "mean" and pooling.normalize  # as all-MiniLM-L6-v2 has it
    model, tok = student[0].auto_model, student.tokenizer
    batch = tok(texts, padding=True, return_tensors="pt")
    with (
        torch.no_grad()
    ):  # kdnas's own: pooled, then the Dense into the teacher's width when narrower, normalised
        own = pool(model(**batch).last_hidden_state, batch["attention_mask"], Pooling(mode=pooling.mode))
    dense = load_dense_weights(d)
    assert (dense is None) == (model.config.hidden_size == 384)
    if dense is not None:
        own = own @ dense[0].T + dense[1]
    own = torch.nn.functional.normalize(own, dim=-1)
    assert float(torch.nn.functional.cosine_similarity(got, own).min()) >= 0.9999
    teacher = torch.as_tensor(st.SentenceTransformer(str(minilm_dir), device="cpu").encode(texts))
    assert got.shape == teacher.shape  # same width: the student embeds into the teacher's index


def test_python_api_resumes_the_finished_run_and_reads_it(smoke_run: Path) -> None:
    import kdnas

    result = kdnas.run("smoke", run_dir=smoke_run)  # every stage done: skipped, then read back
    assert result.finished and set(result.stage_seconds) >= {"search", "distill", "evaluate", "export"}
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert set(result.students) == {s["name"] for s in summary["students"]}
    for s in result.students.values():
        assert (s.model_dir / "config.json").is_file() and s.export_dir is not None
        assert s.speedup is not None and s.speedup > 1 and s.scores
    assert result.retention is not None and result.retention["rows"][0]["model"] == "teacher"
    assert result.pareto


def test_dashboard_serves_the_runs_study_with_kdnas_attributes(smoke_run: Path) -> None:
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("optuna_dashboard")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "kdnas", "report", str(smoke_run), "--dashboard", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                studies = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=2).read())[
                    "study_summaries"
                ]
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[0]
                time.sleep(0.2)
        else:
            pytest.fail("optuna-dashboard did not answer")
        (study,) = [s for s in studies if s["study_name"].startswith("search-")]
        detail = json.loads(
            urllib.request.urlopen(f"{base}/api/studies/{study['study_id']}", timeout=5).read()
        )
        search = json.loads((smoke_run / "search.json").read_text())
        assert len(detail["trials"]) == len(search["trials"])
        done = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert done
        attrs = {a["key"] for a in done[0]["user_attrs"]}
        assert {"arch_id", "latency_ms", "kd_loss_short", "params_m"} <= attrs
        assert detail.get("objective_names") == ["kd_loss", "latency_ms"]
    finally:
        proc.kill()
        proc.wait(10)


def test_dashboard_without_the_extra_says_how_to_install_it(smoke_run: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['optuna_dashboard'] = None; from kdnas.cli import main; "
            f"sys.exit(main(['report', {str(smoke_run)!r}, '--dashboard']))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "kdnas[dashboard]" in out.stdout + out.stderr


def test_optimum_loads_the_onnx_export_where_it_is_installed(smoke_run: Path) -> None:
    """Optimum's `ORTModelForFeatureExtraction` on the export folder, where `optimum[onnxruntime]` is installed.
    Not on this project's stack: optimum-onnx 0.1.0 needs transformers < 4.58 (docs/export.md), so here it skips."""
    optimum_ort = pytest.importorskip("optimum.onnxruntime")
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    name = json.loads((smoke_run / "summary.json").read_text())["students"][0]["name"]
    d = smoke_run / "export" / name
    tok = AutoTokenizer.from_pretrained(d)
    batch = tok(["The river flows through the old town.", "Hello!"], padding=True, return_tensors="pt")
    ort_model = optimum_ort.ORTModelForFeatureExtraction.from_pretrained(d, file_name="model.onnx")
    got = ort_model(**batch).last_hidden_state
    with torch.no_grad():
        want = AutoModel.from_pretrained(d).eval()(**batch).last_hidden_state
    m = batch["attention_mask"].bool()
    assert np.abs(np.asarray(got)[m.numpy()] - want[m].numpy()).max() < 1e-3
