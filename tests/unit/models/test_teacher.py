"""load_teacher on tiny local teachers of every family, the MLM head, and every refusal with its message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdnas.errors import AssetError, ModelError
from kdnas.models.teacher import load_teacher, load_teacher_config
from kdnas.testing import save_tiny_teacher, tiny_batch, tiny_config, tiny_tokenizer

FAMILIES = ("bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra")


@pytest.mark.parametrize("family", FAMILIES)
def test_load_local_dir_every_family(tmp_path: Path, family: str) -> None:
    d = save_tiny_teacher(tmp_path / family, family)
    t = load_teacher(d)
    assert t.family == family and t.config.model_type == family
    assert t.name == family and t.path == d.resolve()
    assert not t.model.training
    assert t.mlm_head is None
    assert 100 < len(t.tokenizer) <= t.config.vocab_size
    x = tiny_batch(2, 8)
    with torch.no_grad():
        out = t.model(**x, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (2, 4, 8, 8)


@pytest.mark.parametrize("family", ["bert", "distilbert", "electra", "mpnet"])
def test_mlm_head_from_an_mlm_checkpoint(tmp_path: Path, family: str) -> None:
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(0)
    mlm = AutoModelForMaskedLM.from_config(tiny_config(family)).eval()
    mlm.save_pretrained(tmp_path)
    tiny_tokenizer(tmp_path)
    t = load_teacher(tmp_path, with_mlm_head=True)
    assert type(t.model).__name__.endswith("Model")  # the base encoder, not the MLM model
    assert t.mlm_head is not None
    x = tiny_batch(2, 8)
    with torch.no_grad():
        logits = t.mlm_head(t.model(**x).last_hidden_state)
        expected = mlm(**x).logits
    torch.testing.assert_close(logits, expected)


def test_mlm_head_is_none_without_one(tmp_path: Path) -> None:
    d = save_tiny_teacher(tmp_path, "bert")
    assert load_teacher(d, with_mlm_head=True).mlm_head is None


def test_base_model_from_a_task_checkpoint(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    m = AutoModelForSequenceClassification.from_config(tiny_config("roberta", num_labels=3))
    m.save_pretrained(tmp_path)
    tiny_tokenizer(tmp_path)
    t = load_teacher(tmp_path)
    assert type(t.model).__name__ == "RobertaModel"
    torch.testing.assert_close(
        t.model.embeddings.word_embeddings.weight, m.roberta.embeddings.word_embeddings.weight
    )


def _config_dir(tmp_path: Path, model_type: str, **kw: object) -> Path:
    from transformers import AutoConfig

    AutoConfig.for_model(model_type, **kw).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("model_type", "kw", "needle"),
    [
        ("gpt2", {}, "decoder-only"),
        ("llama", {}, "decoder-only"),
        ("bert", {"is_decoder": True}, "decoder-only"),
        ("vit", {}, "not a text model"),
        ("wav2vec2", {}, "not a text model"),
        ("t5", {}, "encoder-decoder"),
        ("deberta-v2", {}, "does not support"),
    ],
)
def test_refuses_non_encoders(tmp_path: Path, model_type: str, kw: dict, needle: str) -> None:
    d = _config_dir(tmp_path, model_type, **kw)
    with pytest.raises(ModelError, match=needle) as e:
        load_teacher(d)
    assert "bert" in str(e.value)  # says which families work
    with pytest.raises(ModelError, match=needle):
        load_teacher_config(d)


def test_causal_architecture_refused(tmp_path: Path) -> None:
    d = _config_dir(tmp_path, "bert", architectures=["BertLMHeadModel"])
    with pytest.raises(ModelError, match="decoder-only"):
        load_teacher(d)


def test_dir_without_config(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(AssetError, match=r"config\.json"):
        load_teacher(tmp_path)


def test_pickle_weights_only_are_refused_unless_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoModel

    d = save_tiny_teacher(tmp_path / "t", "bert")
    model = AutoModel.from_pretrained(d)
    (d / "model.safetensors").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")  # a pickle checkpoint, as older hub repos have
    assert (d / "pytorch_model.bin").is_file() and not list(d.glob("*.safetensors"))
    with pytest.raises(
        AssetError, match=r"pickle weights only \(pytorch_model\.bin\).*teacher\.allow_pickle"
    ):
        load_teacher(d)
    with caplog.at_level("WARNING", logger="kdnas.models.teacher"):
        t = load_teacher(d, allow_pickle=True)
    assert "allow_pickle is set" in caplog.text
    ref = load_teacher(save_tiny_teacher(tmp_path / "ref", "bert"))
    batch = tiny_batch(2, 8)
    with torch.no_grad():
        assert torch.allclose(t.model(**batch).last_hidden_state, ref.model(**batch).last_hidden_state)


def test_dir_without_weights(tmp_path: Path) -> None:
    _config_dir(tmp_path, "bert")
    tiny_tokenizer(tmp_path)
    with pytest.raises(AssetError, match="no weights"):
        load_teacher(tmp_path)


def test_dir_without_tokenizer(tmp_path: Path) -> None:
    from kdnas.testing import tiny_teacher

    tiny_teacher("bert").save_pretrained(tmp_path)
    with pytest.raises(AssetError, match="tokenizer"):
        load_teacher(tmp_path)


def test_tokenizer_larger_than_vocab(tmp_path: Path) -> None:
    from kdnas.testing import tiny_teacher

    tiny_teacher("bert", vocab_size=50).save_pretrained(tmp_path)
    tiny_tokenizer(tmp_path)
    with pytest.raises(ModelError, match="tokenizer"):
        load_teacher(tmp_path)


def test_hub_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AssetError, match="cannot be reached") as e:
        load_teacher("some-org/some-encoder-that-is-not-cached")
    assert "minilm-l6" in str(e.value)  # lists the zoo teachers


def test_missing_path_and_file(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="no such model dir"):
        load_teacher(str(tmp_path / "nope"))
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(AssetError, match="file"):
        load_teacher(f)


def test_zoo_asset_that_is_not_a_teacher() -> None:
    with pytest.raises(AssetError, match="not a teacher"):
        load_teacher("bbc-news")
