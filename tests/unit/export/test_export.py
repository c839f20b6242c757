"""export_model on tiny random BERT and RoBERTa: HF round trip without kdnas, ONNX numerics, int8, refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kdnas.errors import MissingExtraError
from kdnas.export import ExportError, ModelCardInfo, TaskScore, export_model
from kdnas.export.onnx import CHECK_SENTENCES, onnx_hidden
from kdnas.testing import tiny_teacher, tiny_tokenizer


@pytest.fixture(scope="module", params=["bert", "roberta"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    family = request.param
    model = tiny_teacher(family, seed=1)
    tok = tiny_tokenizer()
    if family == "roberta":  # a RoBERTa tokenizer produces no token_type_ids
        tok.model_input_names = ["input_ids", "attention_mask"]
    card = ModelCardInfo(
        teacher="minilm-l6",
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        scores=[
            TaskScore("bbc-news", "accuracy", 0.93, 0.96),
            TaskScore("wiki-same-en", "macro_f1", 71.23456, 74.0),
        ],
        datasets=["wiki-vital-en", "bbc-news", "wiki-same-en"],
        teacher_latency_ms={"torch": 30.0},
        config_hash="abc123def4567890",
        seed=7,
        distill_settings={"lr": 0.0005, "steps": 100},
    )
    out = tmp_path_factory.mktemp(family) / "student"
    result = export_model(model, tok, out, card=card, measure=False)
    return family, model, tok, out, result


def _ref(model, feed: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state.numpy()


def _feed(family: str, batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 150, size=(batch, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    if seq >= 4:  # pad the end of the last row, as a padded serving batch would
        mask[-1, seq // 2 :] = 0
    feed = {"input_ids": ids, "attention_mask": mask}
    if family == "bert":
        feed["token_type_ids"] = np.zeros_like(ids)
    return feed


def test_files_and_result(exported) -> None:
    family, _, _, out, result = exported
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "model.onnx", "model-int8.onnx", "README.md",
            "export.json"} <= names  # fmt: skip
    assert not list(out.parent.glob(".student.tmp-*")), "temporary dir left behind"
    saved = json.loads((out / "export.json").read_text())
    assert saved["checks"]["model.onnx"]["passed"] is True
    assert result.params_total == sum(p.numel() for p in exported[1].parameters())
    assert 0 < result.params_non_embedding < result.params_total
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == family
    assert not {"auto_map", "kdnas"} & set(cfg), "config must load with plain transformers"
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {oct(0o666 & ~umask)}


def test_loads_with_transformers_alone(exported) -> None:
    """A fresh interpreter that cannot import kdnas loads the folder and reproduces the outputs."""
    _, model, tok, out, _ = exported
    enc = tok(list(CHECK_SENTENCES[:3]), padding=True, return_tensors="pt")
    with torch.inference_mode():
        want = model(**enc).last_hidden_state
    script = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "kdnas" or name.startswith("kdnas."):
                    raise ImportError("kdnas is blocked in this test")
        sys.meta_path.insert(0, Block())
        try:
            import kdnas  # noqa
            raise SystemExit("kdnas importable: the test would prove nothing")
        except ImportError:
            pass
        import torch
        from transformers import AutoModel, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        model = AutoModel.from_pretrained({str(out)!r}).eval()
        enc = tok({list(CHECK_SENTENCES[:3])!r}, padding=True, return_tensors="pt")
        with torch.inference_mode():
            h = model(**enc).last_hidden_state
        assert not any(m == "kdnas" or m.startswith("kdnas.") for m in sys.modules)
        torch.save(h, {str(out.parent / "h.pt")!r})
        print(type(model).__name__)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=out.parent,
                          timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == type(model).__name__
    got = torch.load(out.parent / "h.pt")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("batch", "seq"), [(1, 1), (1, 40), (5, 9)])
def test_onnx_fp32_matches_torch_at_any_shape(exported, batch: int, seq: int) -> None:
    family, model, _, out, _ = exported
    feed = _feed(family, batch, seq, seed=batch * 100 + seq)
    got = onnx_hidden(out / "model.onnx", feed)
    real = feed["attention_mask"].astype(bool)
    assert np.abs(got[real] - _ref(model, feed)[real]).max() < 1e-4


def test_onnx_inputs(exported) -> None:
    import onnxruntime as ort

    family, _, _, out, _ = exported
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    expected = ["input_ids", "attention_mask"] + (["token_type_ids"] if family == "bert" else [])
    assert names == expected
    assert [o.name for o in sess.get_outputs()] == ["last_hidden_state"]
    assert all(isinstance(d, str) for i in sess.get_inputs() for d in i.shape), (
        "batch/seq axes must be dynamic"
    )


def test_int8_runs_and_is_close(exported) -> None:
    family, model, _, out, result = exported
    feed = _feed(family, 3, 12, seed=3)
    got = onnx_hidden(out / "model-int8.onnx", feed)
    ref = _ref(model, feed)
    assert got.shape == ref.shape
    a, b = got.reshape(-1, got.shape[-1]), ref.reshape(-1, ref.shape[-1])
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.mean() > 0.95
    chk = result.checks["model-int8.onnx"]
    assert chk.threshold.startswith("mean_cosine") and 0.9 < chk.mean_cosine <= 1.0 + 1e-9
    assert (out / "model-int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size * 1.2


def test_model_card(exported) -> None:
    family, _, _, out, result = exported
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "apache-2.0"
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert {"kdnas", "distillation", "onnx", family} <= set(front["tags"])
    assert front["datasets"] == ["wiki-vital-en", "bbc-news", "wiki-same-en"]
    (index,) = front["model-index"]
    assert index["name"] == "student"
    results = {r["dataset"]["name"]: r for r in index["results"]}
    assert results["bbc-news"]["metrics"] == [
        {"type": "accuracy", "value": 0.93, "name": "accuracy", "verified": False}
    ]
    assert results["wiki-same-en"]["metrics"][0] == {
        "type": "f1",
        "value": 71.2346,
        "name": "macro F1",
        "verified": False,
    }
    assert all(
        r["task"]["type"] == "text-classification" and r["dataset"]["split"] == "test"
        for r in index["results"]
    )
    assert "# student" in text and "distilled from **minilm-l6**" in text
    assert "`L2-H32-A4-F64-gelu`" in text
    assert f"{result.params_total / 1e6:.2f} M" in text
    assert "| bbc-news | accuracy | 0.9300 | 0.9600 | 96.9% |" in text
    assert "AutoModel.from_pretrained" in text and "ort.InferenceSession" in text
    assert "`abc123def4567890`" in text and "| seed | 7 |" in text
    assert "| torch |" in text and "| transformers |" in text  # library versions
    assert "lr: 0.0005" in text  # distillation settings
    assert "| model.onnx |" in text


def test_refuses_existing_dir_then_overwrites(tmp_path: Path) -> None:
    model, tok = tiny_teacher("bert"), tiny_tokenizer()
    out = tmp_path / "exp"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ExportError, match=r"already exists.*--overwrite"):
        export_model(model, tok, out, onnx=False, int8=False, measure=False)
    assert (out / "keep.txt").read_text() == "user data"
    result = export_model(model, tok, out, onnx=False, int8=False, overwrite=True, measure=False)
    assert result.out_dir == out
    assert (out / "config.json").is_file() and not (out / "keep.txt").exists()
    assert "onnx" not in result.files and not (out / "model.onnx").exists()
    card = (out / "README.md").read_text()
    assert "exported with [kdnas]" in card and "## Latency" not in card and "model.onnx" not in card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"], "no temp or backup dirs left behind"


def test_failed_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdnas.export import onnx as onnx_mod

    def boom(*a, **k):
        raise ExportError("simulated ONNX failure")

    monkeypatch.setattr(onnx_mod, "export_fp32", boom)
    with pytest.raises(ExportError, match="simulated"):
        export_model(tiny_teacher("bert"), tiny_tokenizer(), tmp_path / "exp", measure=False)
    assert list(tmp_path.iterdir()) == []


def test_int8_needs_onnx(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="int8"):
        export_model(tiny_teacher("bert"), tiny_tokenizer(), tmp_path / "e", onnx=False, int8=True)


def test_missing_onnx_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` raise ImportError
    with pytest.raises(MissingExtraError, match=r"kdnas\[onnx\]"):
        export_model(tiny_teacher("bert"), tiny_tokenizer(), tmp_path / "e", measure=False)
    assert not (tmp_path / "e").exists()


def test_trimmed_vocabulary_card_and_tokenizer_check(tmp_path: Path) -> None:
    from kdnas.models.vocab import trim_vocabulary
    from kdnas.testing import TINY_TEXTS

    model, tok = tiny_teacher("bert"), tiny_tokenizer()
    res = trim_vocabulary(model, tok, TINY_TEXTS[:4])
    with pytest.raises(ExportError, match="must ship its trimmed tokenizer"):
        export_model(res.model, tok, tmp_path / "bad", onnx=False, int8=False, measure=False)
    card = ModelCardInfo(
        vocab={"choice": "corpus", "teacher_vocab_size": len(tok), "unk_rate_heldout": 0.0125}
    )
    result = export_model(
        res.model, res.tokenizer, tmp_path / "ok", onnx=False, int8=False, measure=False, card=card
    )
    assert result.vocab_size == res.vocab_size and result.params_word_embedding == res.vocab_size * 32
    text = (tmp_path / "ok" / "README.md").read_text()
    assert f"**{res.vocab_size:,}** of the teacher's {len(tok):,} tokens" in text
    assert "every token its distillation corpus uses" in text and "1.25% of the teacher's tokens" in text
    assert f"| word-embedding parameters | {res.vocab_size * 32 / 1e6:.2f} M |" in text
    assert f"| transformer parameters | {result.params_non_embedding / 1e6:.2f} M |" in text
    plain = export_model(model, tok, tmp_path / "plain", onnx=False, int8=False, measure=False)
    assert (
        f"keeps its teacher's vocabulary ({plain.vocab_size:,} tokens)"
        in (tmp_path / "plain" / "README.md").read_text()
    )
