"""Shared fixtures for search tests: a MiniLM-L6-shaped teacher config (no weights) and the synthetic evaluator."""

from __future__ import annotations

import optuna
import pytest

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def minilm():
    from transformers import BertConfig

    return BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)


@pytest.fixture()
def fake(minilm):
    from kdnas.search.testing import FakeEvaluator

    return FakeEvaluator.for_teacher(minilm)
