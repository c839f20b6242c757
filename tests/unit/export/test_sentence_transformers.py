"""An exported student loads with `SentenceTransformer(dir)` (the `[st]` extra) and embeds as kdnas pools it.

Tiny random BERT students, with and without the Dense projection into a wider teacher space; the reference is
kdnas's own pooled output (`kdnas.models.pooling.pool`, then the Dense, then L2 normalisation).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdnas.export import export_model
from kdnas.models.pooling import Pooling, pool, read_pooling, write_st_config
from kdnas.testing import WORDS, tiny_teacher, tiny_tokenizer

st = pytest.importorskip("sentence_transformers")

SENTENCES = [" ".join(WORDS[i : i + 3 + i % 5]) for i in range(0, 40, 4)]


def _kdnas_embeddings(model, tok, pooling: Pooling, dense: tuple[torch.Tensor, torch.Tensor] | None):
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    raw = pool(hidden, batch["attention_mask"], Pooling(mode=pooling.mode))
    if dense is not None:
        raw = raw @ dense[0].T + dense[1]
    return torch.nn.functional.normalize(raw, dim=-1) if pooling.normalize else raw


@pytest.mark.parametrize("mode,with_dense", [("mean", False), ("mean", True), ("cls", False)])
def test_sentence_transformers_loads_the_export_and_matches_kdnas(
    tmp_path: Path, mode: str, with_dense: bool
) -> None:
    model = tiny_teacher("bert", seed=3).eval()
    tok = tiny_tokenizer()
    width = model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    dense = (
        (torch.randn(2 * width, width, generator=g), torch.randn(2 * width, generator=g))
        if with_dense
        else None
    )
    pooling = Pooling(mode=mode, normalize=True, prompts={"query": "query: "})
    src = tmp_path / "distilled"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    write_st_config(src, pooling, width, dense=dense, max_seq_length=32)
    out = tmp_path / "export"
    result = export_model(model, tok, out, onnx=False, int8=False, measure=False, sentence_dir=src)
    assert result.files.get("sentence_transformers") == "modules.json"
    assert ("dense" in result.files) == with_dense

    loaded = st.SentenceTransformer(str(out), device="cpu")
    assert loaded.max_seq_length == 32
    assert loaded.prompts.get("query") == "query: "
    got = torch.as_tensor(loaded.encode(SENTENCES, convert_to_numpy=True, batch_size=4))
    want = _kdnas_embeddings(model, tok, pooling, dense)
    assert got.shape == want.shape == (len(SENTENCES), 2 * width if with_dense else width)
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    assert float(cos.min()) >= 0.9999, cos
    back = read_pooling(out)
    assert back is not None and back.mode == mode and back.normalize


def test_export_without_a_pooling_config_has_no_sentence_files(tmp_path: Path) -> None:
    model = tiny_teacher("bert", seed=3)
    src = tmp_path / "plain"
    model.save_pretrained(src)
    res = export_model(model, tiny_tokenizer(), tmp_path / "out", onnx=False, int8=False, measure=False,
                       sentence_dir=src)  # fmt: skip
    assert "sentence_transformers" not in res.files
    assert not (tmp_path / "out" / "modules.json").exists()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "bert"


@pytest.mark.parametrize("with_dense", [False, True])
def test_the_onnx_graph_outputs_the_sentence_embedding_with_its_dense(
    tmp_path: Path, with_dense: bool
) -> None:
    """A plain `onnxruntime.InferenceSession` on model.onnx gives the vectors sentence-transformers gives (the
    Dense into the teacher's space inside the graph), fp32 to 1e-5 in cosine, int8 checked and recorded."""
    import numpy as np

    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = tiny_teacher("bert", seed=3).eval()
    tok = tiny_tokenizer()
    width = model.config.hidden_size
    g = torch.Generator().manual_seed(1)
    dense = (
        (torch.randn(2 * width, width, generator=g), torch.randn(2 * width, generator=g))
        if with_dense
        else None
    )
    src = tmp_path / "distilled"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    write_st_config(src, Pooling(mode="mean", normalize=True), width, dense=dense, max_seq_length=32)
    out = tmp_path / "export"
    result = export_model(model, tok, out, onnx=True, int8=True, measure=False, sentence_dir=src)
    assert result.onnx_outputs == ["last_hidden_state", "sentence_embedding"]
    assert result.checks["model.onnx sentence_embedding"].passed
    assert "model-int8.onnx sentence_embedding" in result.checks

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["last_hidden_state", "sentence_embedding"]
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=32, return_tensors="np")
    feed = {i.name: np.asarray(enc[i.name], dtype=np.int64) for i in sess.get_inputs()}
    got = torch.as_tensor(sess.run(["sentence_embedding"], feed)[0])
    want = torch.as_tensor(st.SentenceTransformer(str(out), device="cpu").encode(SENTENCES, batch_size=4))
    assert got.shape == want.shape == (len(SENTENCES), 2 * width if with_dense else width)
    assert float(torch.nn.functional.cosine_similarity(got, want, dim=-1).min()) >= 0.99999
    card = (out / "README.md").read_text()
    assert 'session.run(["sentence_embedding"]' in card and "model.onnx sentence_embedding" in card
