"""The static-embedding peer (Model2Vec's recipe) on a tiny random teacher: each row is the teacher's pooled
output for that token alone, weighted by a Zipf/SIF weight; a saved dir round-trips, encodes as the mean of its
rows, is an encoder the suite can fine-tune, is timed by the torch backend and refused by the ONNX one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdnas.errors import LatencyError, ModelError
from kdnas.evaluate.encoder import load_encoder
from kdnas.evaluate.fidelity import encode, load_embedder
from kdnas.latency.result import Shape
from kdnas.latency.spec import ModelSpec
from kdnas.latency.stats import TimingSettings
from kdnas.models.pooling import Pooling, pool
from kdnas.models.static import (
    StaticSettings,
    build_static_table,
    is_static_dir,
    load_static,
    make_static_peer,
    save_static,
    zipf_sif_weights,
)
from kdnas.testing import tiny_teacher, tiny_tokenizer

MEAN = Pooling(mode="mean")


def _pool(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return pool(h, m, MEAN)


def test_each_row_is_the_token_alone_between_the_specials() -> None:
    model, tok = tiny_teacher("bert", seed=0).eval(), tiny_tokenizer()
    table = build_static_table(model, tok, _pool, StaticSettings(sif_coefficient=None, batch_size=17))
    vocab = model.get_input_embeddings().weight.shape[0]
    assert table.shape == (vocab, model.config.hidden_size)
    for i in (0, 7, vocab - 1):  # naive reference: one forward pass per token
        x = torch.tensor([[tok.cls_token_id, i, tok.sep_token_id]])
        with torch.no_grad():
            ref = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state.mean(1)[0]
        torch.testing.assert_close(table[i], ref, atol=1e-5, rtol=1e-5)


def test_sif_weights_follow_zipf_and_leave_specials_unranked() -> None:
    w = zipf_sif_weights(1000, 1e-4)
    # frequent tokens (low ranks) weigh less
    assert bool((w[1:] >= w[:-1]).all()) and 0 < float(w[0]) < float(w[-1]) <= 1.0
    model, tok = tiny_teacher("bert", seed=0).eval(), tiny_tokenizer()
    plain = build_static_table(model, tok, _pool, StaticSettings(sif_coefficient=None))
    weighted = build_static_table(model, tok, _pool, StaticSettings(sif_coefficient=1e-2))
    ratio = weighted.norm(dim=1) / plain.norm(dim=1)
    first_word = max(tok.all_special_ids) + 1  # the tiny vocabulary: 5 specials, then the words
    assert float(ratio[first_word]) < float(ratio[first_word + 50])  # a higher rank weighs more
    # the specials have no rank: they get the weight of a token past the last one (the largest)
    assert float(ratio[tok.cls_token_id]) >= float(ratio[first_word:].max()) - 1e-6


def test_pca_reduces_the_width() -> None:
    model, tok = tiny_teacher("bert", seed=0).eval(), tiny_tokenizer()
    table = build_static_table(model, tok, _pool, StaticSettings(pca_dims=8))
    assert table.shape[1] == 8


def test_a_saved_peer_round_trips_and_encodes_as_the_mean_of_its_rows(tmp_path: Path) -> None:
    model, tok = tiny_teacher("bert", seed=0).eval(), tiny_tokenizer()
    table = build_static_table(model, tok, _pool)
    out = save_static(tmp_path / "peer", table, tok, teacher="tiny")
    assert is_static_dir(out) and not is_static_dir(tmp_path) and not (tmp_path / "peer.tmp").exists()
    enc, tok2, normalize = load_static(out)
    assert normalize
    b = tok2(["the river flows", "a new album of music"], padding=True, return_tensors="pt")
    got, _ = encode(enc, b["input_ids"], b["attention_mask"], Pooling(mode="mean", normalize=True))
    for r in range(2):  # reference: the mean of the rows of the real (non-special) tokens, normalised
        ids = [i for i in b["input_ids"][r].tolist() if i not in tok.all_special_ids]
        ref = torch.nn.functional.normalize(table[ids].mean(0), dim=0)
        torch.testing.assert_close(got[r], ref, atol=1e-5, rtol=1e-4)
    # load_embedder reads it with its normalisation, load_encoder makes a fine-tunable encoder of it
    m, _, pooling, dense = load_embedder(out)
    assert pooling.normalize and dense is None and m.get_input_embeddings().weight.shape == table.shape
    e = load_encoder(out, name="peer")
    assert e.name == "peer" and e.params == table.numel()
    h = e.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    assert h.shape == (*b["input_ids"].shape, table.shape[1])
    h.sum().backward()  # the table is trainable (the suite fine-tunes it like a student)
    assert e.model.get_input_embeddings().weight.grad is not None


def test_make_static_peer_from_a_teacher(tmp_path: Path) -> None:
    class T:  # what make_static_peer reads of a loaded Teacher
        model, tokenizer, name = tiny_teacher("bert", seed=0).eval(), tiny_tokenizer(), "tiny"

    out = make_static_peer(T(), tmp_path / "p", pooling=Pooling(mode="mean", normalize=False))
    enc, _, normalize = load_static(out)
    assert not normalize and enc.config.hidden_size == T.model.config.hidden_size


def test_bad_static_dirs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a static model dir"):
        load_static(tmp_path)
    model, tok = tiny_teacher("bert", seed=0).eval(), tiny_tokenizer()
    out = save_static(tmp_path / "peer", build_static_table(model, tok, _pool), tok, teacher="tiny")
    (out / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"model\.safetensors"):
        load_static(out)


def test_the_torch_backend_times_a_static_peer_and_onnx_refuses_it(tmp_path: Path) -> None:
    from kdnas.latency.torch_backend import TorchBackend

    model, tok = tiny_teacher("bert", seed=0).eval(), tiny_tokenizer()
    out = save_static(tmp_path / "peer", build_static_table(model, tok, _pool), tok, teacher="tiny")
    spec = ModelSpec.for_dir(out)
    assert spec.kind == "static" and spec.label == "peer" and spec.key.startswith("static-")
    assert ModelSpec.from_dict(spec.to_dict()) == spec  # travels to a worker as JSON
    fast = TimingSettings(warmup_s=0.01, min_repeats=3, rel_ci=0.5, max_time_s=0.2)
    r = TorchBackend(threads=1, settings=fast).measure(spec, Shape(1, 16))
    assert r.median_ms > 0 and r.model == "peer" and r.repeats >= 3
    pytest.importorskip("onnxruntime")
    from kdnas.latency.onnx_backend import OnnxRuntimeBackend

    with pytest.raises(LatencyError, match="torch backend"):
        OnnxRuntimeBackend(threads=1, settings=fast).measure(spec, Shape(1, 16))
