"""The first stages: fetch the assets, inspect the teacher, tokenise and split the corpus."""

from __future__ import annotations

import os
import shutil
from typing import Any

from kdnas import run_dir as rd
from kdnas._io import write_json_atomic
from kdnas.config import TeacherConfig
from kdnas.data.config import CorpusConfig
from kdnas.evaluate.config import EvaluateConfig
from kdnas.latency.config import TargetConfig
from kdnas.stages.context import RunContext
from kdnas.stages.results import DataResult, FetchResult, TeacherResult


def fetch(
    ctx: RunContext, *, teacher: TeacherConfig, corpus: CorpusConfig, evaluate: EvaluateConfig
) -> FetchResult:
    """Fetch every zoo asset the config names (teacher, corpus sources, tasks) into the cache."""
    from kdnas import zoo
    from kdnas.data.topics import split_task_ref

    tasks = [p for t in evaluate.tasks for p in (split_task_ref(t) or (t,))]  # both sides of SRC>TGT
    names = [teacher.name, *corpus.sources, *tasks]
    return FetchResult({n: str(zoo.fetch(n)) for n in dict.fromkeys(names) if n in zoo.ASSETS})


def inspect(ctx: RunContext, *, teacher: TeacherConfig, target: TargetConfig) -> TeacherResult:
    """Record the teacher's shape and cost (teacher.json)."""
    from kdnas.models.student import arch_of
    from kdnas.space.cost import forward_flops, param_count

    t = ctx.teacher()
    arch = arch_of(t.config)
    pc = param_count(arch, t.config)
    seq = target.seq_lens[0]
    flops = forward_flops(arch, seq_len=seq, batch_size=target.batch_size, teacher_config=t.config)
    out = TeacherResult(
        teacher=teacher.name, name="teacher", family=t.config.model_type, arch=arch.to_dict(),
        arch_id=arch.arch_id, params=pc.total, params_non_embedding=pc.non_embedding, gflops=flops / 1e9,
        seq_len=seq,
    )  # fmt: skip
    write_json_atomic(ctx.path(rd.TEACHER), out.to_dict())
    return out


def data(ctx: RunContext) -> DataResult:
    """Tokenize the corpus into disjoint proxy / train / held-out splits (cached by content in the kdnas cache)."""
    splits = ctx.corpus()
    sizes = {
        name: {"rows": len(block), "tokens": int(block.num_tokens)}
        for name, block in (("proxy", splits.proxy), ("train", splits.train), ("heldout", splits.heldout))
    }
    out = DataResult(**sizes, vocab=_resolve_vocab(ctx, splits))
    write_json_atomic(ctx.path(rd.DATA), {**out.to_dict(), "stats": getattr(splits, "stats", None)})
    return out


def _resolve_vocab(ctx: RunContext, splits: Any) -> dict[str, Any] | None:
    """A space with `vocab` choices: keep ids per choice from the token counts of the proxy and train splits
    (vocab.json) and the trimmed tokenizer of each (vocab/<choice>/), so every later stage and a resumed run use
    the same ids."""
    from kdnas.models.vocab import trim_tokenizer
    from kdnas.space.vocab import build_vocab_table, trims, unk_rate

    choices = ctx.raw_space().vocab_choices
    if not trims(choices):
        return None
    teacher = ctx.teacher()
    table = build_vocab_table(  # from all the text students are distilled on; held-out text stays unseen
        teacher.tokenizer, [splits.proxy, splits.train], choices,
        teacher_vocab_size=int(teacher.config.vocab_size), source="proxy+train",
    )  # fmt: skip
    out: dict[str, Any] = {"corpus_tokens": table.corpus_tokens, "corpus_distinct": table.corpus_distinct}
    for key, ids in table.kept.items():
        d = ctx.run_dir / "vocab" / key
        tmp = d.with_name(f"{key}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        trim_tokenizer(teacher.tokenizer, ids).save_pretrained(str(tmp))
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
        rates = {
            f"unk_rate_{n}": unk_rate(b, ids, table.teacher_vocab_size)
            for n, b in (("proxy", splits.proxy), ("heldout", splits.heldout))
        }
        out[key] = {"vocab_size": len(ids), **rates}
        ctx.say(
            f"  vocab {key}: {len(ids):,} of {table.teacher_vocab_size:,} tokens; unk on proxy "
            f"{rates['unk_rate_proxy']:.3%}, held-out {rates['unk_rate_heldout']:.3%}"
        )
    table.save(ctx.run_dir / rd.VOCAB)  # last: its presence means the tokenizers are there
    ctx.forget("vocab", "space")
    return out
