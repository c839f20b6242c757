"""Pooling read from and written to sentence-transformers folders; pooled vectors against a naive loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdnas.errors import ModelError
from kdnas.models.pooling import Pooling, load_dense_weights, pool, read_pooling, write_st_config


def _naive(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    rows = []
    for h, m in zip(hidden, mask, strict=True):
        real = [h[i] for i in range(len(m)) if m[i] == 1]
        if mode == "cls":
            rows.append(h[0])
        elif mode == "max":
            rows.append(torch.stack(real).max(0).values)
        else:
            rows.append(sum(real) / len(real))
    return torch.stack(rows)


@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
def test_pool_matches_a_naive_loop(mode: str) -> None:
    torch.manual_seed(0)
    h = torch.randn(3, 7, 5)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    h[1, 4:] = 100.0  # padding must not leak into mean or max
    got = pool(h, mask, Pooling(mode=mode))
    assert torch.allclose(got, _naive(h, mask, mode), atol=1e-6)
    normed = pool(h, mask, Pooling(mode=mode, normalize=True))
    assert torch.allclose(normed.norm(dim=-1), torch.ones(3), atol=1e-6)
    assert torch.allclose(normed, torch.nn.functional.normalize(got, dim=-1), atol=1e-6)


def test_read_pooling_of_a_minilm_style_folder(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))  # fmt: skip
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "query: "}}))
    p = read_pooling(tmp_path)
    assert p is not None
    assert (p.mode, p.normalize, p.dense, p.max_seq_length) == ("cls", True, None, 256)
    assert p.prompts == {"query": "query: "}
    assert read_pooling(tmp_path / "nothing") is None


def test_unreadable_and_unsupported_configs_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"modules\.json"):
        read_pooling(tmp_path)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(
        json.dumps([{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_sqrt_len_tokens": True})
    )
    with pytest.raises(ModelError, match=r"config\.json.*distill\.pooling"):
        read_pooling(tmp_path)
    with pytest.raises(ModelError, match="not one of"):
        Pooling(mode="attention")


def test_write_then_read_round_trip_with_dense(tmp_path: Path) -> None:
    w, b = torch.randn(8, 4), torch.randn(8)
    src = Pooling(mode="mean", normalize=True, prompts={"query": "query: ", "passage": "passage: "})
    write_st_config(tmp_path, src, 4, dense=(w, b), max_seq_length=128)
    back = read_pooling(tmp_path)
    assert back is not None
    assert (back.mode, back.normalize, back.dense, back.max_seq_length) == ("mean", True, "2_Dense", 128)
    assert back.prompts == src.prompts
    got = load_dense_weights(tmp_path)
    assert got is not None and torch.equal(got[0], w) and torch.equal(got[1], b)
    types = [m["type"].rsplit(".", 1)[-1] for m in json.loads((tmp_path / "modules.json").read_text())]
    assert types == ["Transformer", "Pooling", "Dense", "Normalize"]
    with pytest.raises(ModelError, match="width"):
        write_st_config(tmp_path, src, 5, dense=(w, b))


def test_folder_without_dense_has_no_dense(tmp_path: Path) -> None:
    write_st_config(tmp_path, Pooling(), 4)
    assert load_dense_weights(tmp_path) is None
    assert not (tmp_path / "2_Dense").exists()
