"""The `vocab` dimension: choices resolved on a token block, stored as vocab.json, and used by the space."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdnas.errors import ConfigError, DataError, ModelError, SearchError
from kdnas.space.arch import Arch
from kdnas.space.spaces import default_space, parse_space
from kdnas.space.vocab import VocabTable, build_vocab_table, check_trimmable, id_map, unk_rate
from kdnas.testing import TINY_TEXTS, tiny_config, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def block(tok):
    from kdnas.data.tokenize import TokenBlock

    enc = tok(list(dict.fromkeys(TINY_TEXTS))[:6], padding=True, return_tensors="pt")
    return TokenBlock(enc["input_ids"], enc["attention_mask"])


def test_table_choices_sizes_and_round_trip(tok, block, tmp_path: Path) -> None:
    table = build_vocab_table(tok, block, ["full", "corpus", 60], teacher_vocab_size=len(tok))
    used = set(block.input_ids[block.attention_mask.bool()].tolist())
    corpus = table.kept["corpus"]
    assert used <= set(corpus) and set(tok.all_special_ids) <= set(corpus)  # every used id, and the specials
    assert tok.convert_tokens_to_ids("##z") not in corpus  # single characters only of the corpus' own chars
    assert tok.convert_tokens_to_ids("t") in corpus and tok.convert_tokens_to_ids("##t") in corpus
    assert len(table.kept["60"]) == 60 and set(table.kept["60"]) <= set(corpus)
    assert tok.convert_tokens_to_ids("the") in table.kept["60"]  # the most frequent word survives
    assert table.sizes == {"full": None, "corpus": len(corpus), "60": 60}
    assert table.corpus_tokens == int(block.attention_mask.sum()) and table.corpus_distinct == len(used)
    loaded = VocabTable.load(table.save(tmp_path / "vocab.json"))
    assert loaded == table

    arch = Arch(2, 32, 4, 64, vocab_size=60)
    m = table.input_map(arch)
    assert m is not None and m.shape == (len(tok),)
    assert [int(m[i]) for i in table.kept["60"]] == list(range(60))
    dropped = next(i for i in corpus if i not in table.kept["60"])
    assert int(m[dropped]) == table.kept["60"].index(tok.unk_token_id)
    assert table.input_map(arch.replace(vocab_size=None)) is None
    rate = table.unk_rate(arch, block)
    assert rate is not None and 0 < rate < 0.5
    assert unk_rate(block, corpus, len(tok)) == 0.0
    with pytest.raises(ModelError, match="no vocab choice of this run keeps 77"):
        table.ids_for(arch.replace(vocab_size=77))


def test_bad_choices_are_clear_errors(tok, block) -> None:
    n_corpus = len(build_vocab_table(tok, block, ["corpus"], teacher_vocab_size=len(tok)).kept["corpus"])
    with pytest.raises(DataError, match=f"uses only {n_corpus} tokens .* fewer than {n_corpus + 1}"):
        build_vocab_table(tok, block, [n_corpus + 1], teacher_vocab_size=len(tok))
    with pytest.raises(DataError, match="not smaller than the teacher's vocabulary"):
        build_vocab_table(tok, block, [len(tok)], teacher_vocab_size=len(tok))
    with pytest.raises(DataError, match=r"below the .* special and single-character tokens"):
        build_vocab_table(tok, block, [10], teacher_vocab_size=len(tok))
    with pytest.raises(DataError, match=r"'most': .* not full, corpus"):
        build_vocab_table(tok, block, ["most"], teacher_vocab_size=len(tok))
    with pytest.raises(DataError, match="outside \\[0, 50\\)"):
        build_vocab_table(tok, block, ["corpus"], teacher_vocab_size=50)


def test_untrimmable_tokenizer_is_refused(tok) -> None:
    import json
    from types import SimpleNamespace

    check_trimmable(tok)
    slow = SimpleNamespace(unk_token_id=1)  # a Python tokenizer: no tokenizer.json backend
    with pytest.raises(ModelError, match="slow one"):
        check_trimmable(slow)  # type: ignore[arg-type]
    spec = json.dumps({"model": {"type": "CharBPE"}})
    odd = SimpleNamespace(unk_token_id=1, backend_tokenizer=SimpleNamespace(to_str=lambda: spec))
    with pytest.raises(ModelError, match="CharBPE model, which kdnas cannot trim"):
        check_trimmable(odd)  # type: ignore[arg-type]
    no_unk = SimpleNamespace(unk_token_id=None, backend_tokenizer=tok.backend_tokenizer)
    with pytest.raises(ModelError, match="no unk token"):
        check_trimmable(no_unk)  # type: ignore[arg-type]


def test_id_map_needs_the_unk() -> None:
    m = id_map([0, 1, 5], 8, unk_id=1)
    assert m.tolist() == [0, 1, 1, 1, 1, 2, 1, 1]
    with pytest.raises(DataError, match="unk token id 3"):
        id_map([0, 1, 5], 8, unk_id=3)


def test_space_with_a_vocab_dimension() -> None:
    cfg = tiny_config("bert")
    space = parse_space(
        {"base": "default", "dimensions": {"num_layers": [1], "hidden_size": [32], "vocab": {"choices": ["full", "corpus", 80]}}},
        cfg,
    )  # fmt: skip
    assert space.vocab_choices == ("full", "corpus", 80) and space["vocab"].categorical
    with pytest.raises(SearchError, match="resolved on the run's training corpus"):
        space.enumerate()
    space = space.with_vocab({"full": None, "corpus": 120, "80": 80})
    archs = space.enumerate()
    assert sorted((a.vocab_size or 0) for a in archs if a.ffn_size == 64) == [0, 80, 120]
    a = next(a for a in archs if a.vocab_size == 120)
    assert space.params_of(a)["vocab"] == "corpus" and space.arch(space.params_of(a)) == a
    assert space.violations(a) == [] and space.encode(a).shape == (space.encoding_dim,)
    assert "dimensions.vocab" in space.violations(a.replace(vocab_size=99))[0]
    assert space.params_m(a) < space.params_m(a.replace(vocab_size=None))  # the table counts in params
    plain = default_space(cfg)
    assert "vocab" not in {d.name for d in plain.dimensions}  # the default keeps the teacher's vocabulary
    assert plain.violations(a) == [
        "dimensions.vocab: V120 is a trimmed vocabulary; this space keeps the full one"
    ]
    assert {x.vocab_size for x in default_space(cfg, vocab=["full", 80]).enumerate()} == {None, 80}


def test_space_yaml_vocab_errors() -> None:
    cfg = tiny_config("bert")
    with pytest.raises(ConfigError) as e:
        parse_space(
            {"base": "default", "dimensions": {"vocab": {"choices": ["full", "all", 4, 100_000]}}}, cfg
        )
    text = str(e.value)
    assert "'all': 'all' is not full, corpus" in text and "4 tokens is too few" in text
    assert "100000 is not smaller than the teacher's vocabulary (161 tokens)" in text
    with pytest.raises(ConfigError, match="no ranges"):
        parse_space({"base": "default", "dimensions": {"vocab": {"min": 10, "max": 100}}}, cfg)


def test_latency_of_a_trimmed_arch_is_measured_on_the_trimmed_model() -> None:
    from kdnas.latency.spec import ModelSpec

    spec = ModelSpec.for_arch(tiny_config("bert"), Arch(1, 32, 4, 64, vocab_size=80))
    model = spec.build()
    assert model.get_input_embeddings().weight.shape == (80, 32)
    assert spec.key.startswith("L1-H32-A4-F64-gelu-V80@")
    with torch.no_grad():
        model(input_ids=torch.tensor([[2, 79, 3]]))
