"""The pipeline runner: stages are skipped once done, a failure keeps finished stages, configs are checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdnas import config, pipeline
from kdnas.errors import ConfigError, KdnasError


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls: dict[str, int] = {}

    def make(name: str, fail_once: bool = False) -> pipeline.Stage:
        def run(ctx: pipeline.RunContext) -> dict[str, Any]:
            calls[name] = calls.get(name, 0) + 1
            if fail_once and calls[name] == 1:
                raise KdnasError(f"{name} crashed")
            (ctx.run_dir / f"{name}.out").write_text("x")
            return {"name": name, "seen": sorted(ctx.values)}

        return pipeline.Stage(name, run, name)

    monkeypatch.setattr(pipeline, "STAGES", [make("a"), make("b", fail_once=True), make("c")])
    return calls


def test_failed_stage_keeps_finished_ones_and_resume_continues(
    tmp_path: Path, fake_stages: dict[str, int]
) -> None:
    cfg = config.load("smoke")
    with pytest.raises(KdnasError, match="b crashed"):
        pipeline.run(cfg, run_dir=tmp_path / "r")
    assert (tmp_path / "r" / "stages" / "a.json").exists()
    assert not (tmp_path / "r" / "stages" / "b.json").exists()
    ctx = pipeline.run(cfg, run_dir=tmp_path / "r", resume=True)
    assert fake_stages == {"a": 1, "b": 2, "c": 1}
    assert ctx.values["c"]["seen"] == ["a", "b"]  # earlier summaries are reloaded from the markers


def test_resume_refuses_another_config_and_shows_the_diff(
    tmp_path: Path, fake_stages: dict[str, int]
) -> None:
    pipeline.run(config.load("smoke"), run_dir=tmp_path / "r", until="a")
    other = config.load("smoke", {"distill.lr": 0.01})
    with pytest.raises(ConfigError, match=r"distill\.lr: 0\.001 -> 0\.01"):
        pipeline.run(other, run_dir=tmp_path / "r")


def test_resume_with_a_new_evaluation_protocol_reruns_from_evaluate(tmp_path: Path) -> None:
    """Search and distillation are kept; evaluation, export and report run again; old scores are kept aside."""
    seen: list[str] = []

    def make(name: str) -> pipeline.Stage:
        def run(ctx: pipeline.RunContext) -> dict[str, Any]:
            seen.append(name)
            if name == "evaluate":
                (ctx.run_dir / "evaluate").mkdir(exist_ok=True)
                (ctx.run_dir / "evaluate" / "teacher.json").write_text(str(ctx.cfg.evaluate.lrs))
                (ctx.run_dir / "retention.md").write_text(str(ctx.cfg.evaluate.lrs))
            return {}

        return pipeline.Stage(name, run, name)

    names = ["search", "distill", "evaluate", "export", "report"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "STAGES", [make(n) for n in names])
        old = config.load("smoke")
        pipeline.run(old, run_dir=tmp_path / "r")
        new = config.load("smoke", {"evaluate.lrs": [1e-3]})
        with pytest.raises(ConfigError, match="only reach the evaluate stage: resume"):
            pipeline.run(new, run_dir=tmp_path / "r")  # without resume: refused, with the hint
        seen.clear()
        pipeline.run(new, run_dir=tmp_path / "r", resume=True)
    assert seen == ["evaluate", "export", "report"]
    r = tmp_path / "r"
    assert (r / "evaluate" / "teacher.json").read_text() == "[0.001]"
    assert (r / "previous" / old.hash() / "evaluate" / "teacher.json").read_text() == str(old.evaluate.lrs)
    assert (r / "previous" / old.hash() / "retention.md").read_text() == str(old.evaluate.lrs)
    assert (r / "retention.md").read_text() == "[0.001]"
    assert config.load(str(r / "config.yaml")).hash() == new.hash()
    assert config.load(str(r / f"config.{old.hash()}.yaml")).hash() == old.hash()


def test_resume_with_new_search_settings_searches_and_distils_again(tmp_path: Path) -> None:
    """The old study and students move aside (a resumed study or an existing student dir would be reused);
    the baselines and the scores of every model that is not a searched student stay (the search cannot change
    them)."""
    seen: list[str] = []
    outputs = {
        "search": ["search.db"],
        "distill": [
            "students/student-7x/result.json",
            "baselines/tinybert-4L-312H/result.json",
            "summary.json",
        ],
        "evaluate": ["evaluate/teacher.json", "evaluate/tinybert-4L-312H.json", "evaluate/student-7x.json"],
    }

    def make(name: str) -> pipeline.Stage:
        def run(ctx: pipeline.RunContext) -> dict[str, Any]:
            seen.append(name)
            for out in outputs.get(name, []):
                (ctx.run_dir / out).parent.mkdir(parents=True, exist_ok=True)
                if out == "summary.json":
                    (ctx.run_dir / out).write_text('{"students": [{"name": "student-7x"}]}')
                elif not (ctx.run_dir / out).exists() or "student" in out or out == "search.db":
                    (ctx.run_dir / out).write_text(str(ctx.cfg.search.n_trials))
            return {}

        return pipeline.Stage(name, run, name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "STAGES", [make(n) for n in ["data", "search", "distill", "evaluate"]])
        old = config.load("smoke")
        pipeline.run(old, run_dir=tmp_path / "r")
        seen.clear()
        pipeline.run(config.load("smoke", {"search.n_trials": 9}), run_dir=tmp_path / "r", resume=True)
    assert seen == ["search", "distill", "evaluate"]
    r, prev = tmp_path / "r", tmp_path / "r" / "previous" / old.hash()
    assert (r / "search.db").read_text() == "9" and (prev / "search.db").read_text() == str(
        old.search.n_trials
    )
    assert (prev / "students" / "student-7x" / "result.json").read_text() == str(old.search.n_trials)
    assert (r / "students" / "student-7x" / "result.json").read_text() == "9"
    assert (r / "evaluate" / "student-7x.json").read_text() == "9"
    assert (prev / "evaluate" / "student-7x.json").exists()
    for kept in (
        "baselines/tinybert-4L-312H/result.json",
        "evaluate/teacher.json",
        "evaluate/tinybert-4L-312H.json",
    ):
        assert (r / kept).read_text() == str(old.search.n_trials), kept  # kept, not made again
        assert not (prev / kept).exists()
    # a change to the distillation reaches the baselines too: everything goes aside
    seen.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "STAGES", [make(n) for n in ["data", "search", "distill", "evaluate"]])
        newer = config.load("smoke", {"search.n_trials": 9, "distill.lr": 0.01})
        pipeline.run(newer, run_dir=r, resume=True)
    assert seen == ["search", "distill", "evaluate"]
    prev2 = r / "previous" / config.load("smoke", {"search.n_trials": 9}).hash()
    assert (prev2 / "baselines" / "tinybert-4L-312H" / "result.json").exists()
    assert (prev2 / "evaluate" / "teacher.json").exists()


def test_resume_of_an_empty_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to resume"):
        pipeline.run(config.load("smoke"), run_dir=tmp_path / "nothing", resume=True)


def test_atomic_json(tmp_path: Path) -> None:
    p = tmp_path / "x" / "a.json"
    pipeline.write_json_atomic(p, {"a": 1})
    assert p.read_text().strip().startswith("{")
    assert [q.name for q in p.parent.iterdir()] == ["a.json"]


# ------------------------------------------------------------------------------------- vocabulary as a dimension


def _run_to_export(cfg: config.RunConfig, run_dir: Path) -> None:
    """A tiny run through export: no fine-tuning or report, export without timing."""
    import kdnas.export.run_dir as run_dir_mod

    export_run = run_dir_mod.export_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "STAGES", [s for s in pipeline.STAGES if s.name not in ("evaluate", "report")])
        mp.setattr(run_dir_mod, "export_run", lambda *a, **k: export_run(*a, **{**k, "measure": False}))
        pipeline.run(cfg, run_dir=run_dir, progress=False)


@pytest.fixture(scope="module")
def vocab_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run (tiny BERT teacher, fake latency) whose space has a `vocab` dimension, up to export."""
    import yaml

    from kdnas.testing import save_tiny_teacher, write_tiny_corpus

    tmp = tmp_path_factory.mktemp("vocab-run")
    teacher = save_tiny_teacher(tmp / "teacher")
    corpus = write_tiny_corpus(tmp / "corpus.txt", n_docs=160)
    space = tmp / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "base": "default",
                "dimensions": {
                    "num_layers": [1],
                    "hidden_size": [16, 32],
                    "ffn_ratio": [2],
                    "vocab": {"choices": ["full", 100]},
                },
            }
        )
    )
    cfg = config.from_dict(
        {
            "name": "vocab",
            "teacher": {"name": str(teacher)},
            "corpus": {"sources": [str(corpus)], "seq_len": 32},
            "target": {"backend": "fake", "seq_lens": [32], "speedups": [1.2], "calibrate_archs": 0},
            "distill": {
                "proxy_tokens": 600,
                "full_tokens": 800,
                "batch_size": 8,
                "relation_heads": 2,
                "vocab_twins": True,
                "proj_init": "random",  # the trimmed H32 arch must win the near-tie (see the xlm-roberta test)
            },
            "search": {
                "proxy_readout": "trained",  # the same: a fitted read-out scores the full vocabulary's arch lower
                "space": str(space),
                "strategy": "random",
                "n_trials": 4,
                "episode_size": 4,
                "promote_fraction": 0.0,
                "objectives": ["kd_loss", "latency_ms", "params_m"],
                "kd_loss_tolerance": 0.02,
            },
            "evaluate": {"baselines": False},
            "export": {"onnx": False, "int8": False},
        }
    )
    _run_to_export(cfg, tmp / "run")
    return tmp / "run"


def test_vocab_choices_are_resolved_once_and_searched(vocab_run: Path) -> None:
    import json

    from kdnas.space.vocab import VocabTable

    table = VocabTable.load(vocab_run / "vocab.json")
    assert table.teacher_vocab_size == 161 and table.sizes == {"full": None, "100": 100}
    assert table.kept["100"][:5] == [0, 1, 2, 3, 4]  # special tokens always kept, at their ids
    assert (vocab_run / "vocab" / "100" / "tokenizer.json").is_file()
    data = json.loads((vocab_run / "stages" / "data.json").read_text())["summary"]
    assert data["vocab"]["100"]["vocab_size"] == 100 and 0 <= data["vocab"]["100"]["unk_rate_heldout"] < 0.2
    search = json.loads((vocab_run / "search.json").read_text())
    assert search["objectives"] == ["kd_loss", "latency_ms", "params_m"]
    sizes = {t["arch"].get("vocab_size") for t in search["trials"] if t["state"] == "complete"}
    assert sizes == {None, 100}  # the 4 archs of the space: 2 widths x full / trimmed vocabulary
    by_id = {t["arch_id"]: t for t in search["trials"] if t["state"] == "complete"}
    for t in by_id.values():  # the trimmed twin of every arch has fewer params and the same shape
        if t["arch"].get("vocab_size"):
            full = by_id[t["arch_id"].removesuffix("-V100")]
            assert t["params_m"] < full["params_m"]
            assert t["params_m"] == pytest.approx(full["params_m"] - 61 * t["arch"]["hidden_size"] / 1e6)
    front_ids = {p["arch_id"] for p in search["pareto"]}
    assert any(i.endswith("-V100") for i in front_ids)  # fewer params puts trimmed archs on the 3-D front


def test_trimmed_student_exports_with_its_tokenizer(vocab_run: Path) -> None:
    import json

    import torch
    from transformers import AutoModel, AutoTokenizer

    from kdnas.space.arch import Arch
    from kdnas.space.vocab import VocabTable
    from kdnas.testing import TINY_TEXTS, tiny_tokenizer

    summary = json.loads((vocab_run / "summary.json").read_text())
    student = summary["students"][0]
    arch = Arch.parse(student["arch_id"])
    # the best loss is the H32 arch's, full or trimmed (within 2% of each other): the smaller one is recommended
    assert arch.hidden_size == 32 and arch.vocab_size == 100 == student["vocab_size"]
    result = json.loads((vocab_run / student["model_dir"]).parent.joinpath("result.json").read_text())
    assert result["vocab"]["choice"] == "100" and 0 <= result["vocab"]["unk_rate_train"] < 0.05

    table = VocabTable.load(vocab_run / "vocab.json")
    kept = set(table.kept["100"])
    teacher_tok = tiny_tokenizer()
    text = next(t for t in TINY_TEXTS if set(teacher_tok(t)["input_ids"]) <= kept)  # every token kept
    export = vocab_run / "export" / student["name"]
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModel.from_pretrained(export, attn_implementation="eager").eval()
    assert len(tok) == 100 and model.config.vocab_size == 100
    mapped = table.input_map(arch)[torch.tensor([teacher_tok(text)["input_ids"]])]  # what distillation fed it
    enc = tok([text], return_tensors="pt")
    assert torch.equal(enc["input_ids"], mapped)  # raw text -> the reduced ids, no kdnas needed
    trimmed = AutoModel.from_pretrained(vocab_run / student["model_dir"], attn_implementation="eager").eval()
    with torch.no_grad():
        a = model(**enc).last_hidden_state
        b = trimmed(input_ids=mapped, attention_mask=torch.ones_like(mapped)).last_hidden_state
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    from kdnas.evaluate.encoder import load_encoder  # evaluation fine-tunes it with its own tokenizer

    enc_eval = load_encoder(vocab_run / student["model_dir"])
    assert (
        len(enc_eval.tokenizer) == 100
        and enc_eval.tokenizer([text])["input_ids"] == enc["input_ids"].tolist()
    )
    card = (export / "README.md").read_text()
    assert "## Vocabulary" in card and "**100** of the teacher's 161 tokens" in card
    assert "word-embedding parameters" in card


def test_vocab_twin_is_the_same_transformer_with_the_other_vocabulary(vocab_run: Path) -> None:
    import json

    from transformers import AutoConfig

    from kdnas.space.arch import Arch

    students = json.loads((vocab_run / "summary.json").read_text())["students"]
    assert len(students) == 2
    rec, twin = students
    assert twin["name"] == f"{rec['name']}-vocab-full" and twin["twin_of"] == rec["name"]
    a, b = Arch.parse(rec["arch_id"]), Arch.parse(twin["arch_id"])
    assert a.replace(vocab_size=None) == b and b.vocab_size is None
    cfg = AutoConfig.from_pretrained(vocab_run / twin["model_dir"])
    assert cfg.vocab_size == 161  # the teacher's table
    assert (vocab_run / "export" / twin["name"] / "config.json").is_file()


def test_xlm_roberta_teacher_runs_end_to_end_with_a_trimmed_vocabulary(tmp_path: Path) -> None:
    """An XLMRobertaModel teacher (what hub users of KD-NAS's XLM-R Base bring): search over shape and
    vocabulary, distil, export; the student is an XLM-R config and keeps the teacher's tokenizer family."""
    import json

    import yaml
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from kdnas.testing import save_tiny_teacher, write_tiny_corpus

    teacher = save_tiny_teacher(tmp_path / "teacher", family="xlm-roberta")
    corpus = write_tiny_corpus(tmp_path / "corpus.txt", n_docs=120)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"base": "default", "dimensions": {
        "num_layers": [1], "hidden_size": [32], "ffn_ratio": [2], "vocab": {"choices": ["full", "corpus"]}}}))  # fmt: skip
    cfg = config.from_dict(
        {
            "name": "xlmr",
            "teacher": {"name": str(teacher)},
            "corpus": {"sources": [str(corpus)], "seq_len": 32},
            "target": {"backend": "fake", "seq_lens": [32], "speedups": [1.2], "calibrate_archs": 0},
            # random projections: with fitted ones the full-vocabulary student of the tiny teacher's own shape
            # scores 0.003 and its trimmed twin 0.010 (its unk tokens), no tie within the tolerance; this test
            # is about a trimmed student's plumbing, so it keeps the start under which the two tie
            "distill": {"proxy_tokens": 400, "full_tokens": 500, "batch_size": 8, "relation_heads": 2,
                        "proj_init": "random"},
            "search": {"space": str(space), "strategy": "random", "n_trials": 2, "episode_size": 2,
                       "promote_fraction": 0.0, "objectives": ["kd_loss", "latency_ms", "params_m"],
                       "kd_loss_tolerance": 0.05,
                       "proxy_readout": "trained"},  # read through them too: the fitted read-out breaks the tie
            "evaluate": {"baselines": False},
            "export": {"onnx": False, "int8": False},
        }
    )  # fmt: skip
    _run_to_export(cfg, tmp_path / "run")
    student = json.loads((tmp_path / "run" / "summary.json").read_text())["students"][0]
    export = tmp_path / "run" / "export" / student["name"]
    scfg = AutoConfig.from_pretrained(export)
    assert scfg.model_type == "xlm-roberta" and scfg.vocab_size == student["vocab_size"] < 200
    assert scfg.pad_token_id == AutoConfig.from_pretrained(teacher).pad_token_id  # positions derive from it
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModel.from_pretrained(export)
    out = model(**tok(["the cat sat on the mat"], return_tensors="pt")).last_hidden_state
    assert out.shape[-1] == 32 and len(tok) == scfg.vocab_size


def test_final_distillation_under_torchrun_matches_one_process(tmp_path: Path) -> None:
    """`distill.nproc: 2`: the distill stage runs each full distillation under torchrun (2 processes, gloo); the
    student is the one process's up to float noise, saved like any other, and a run resumes with another nproc."""
    import json

    import yaml

    from kdnas.testing import save_tiny_teacher, write_tiny_corpus

    teacher = save_tiny_teacher(tmp_path / "teacher")
    corpus = write_tiny_corpus(tmp_path / "corpus.txt", n_docs=120)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"base": "default", "dimensions": {
        "num_layers": [1], "hidden_size": [32], "ffn_ratio": [2]}}))  # fmt: skip

    def cfg(nproc: int) -> config.RunConfig:
        return config.from_dict({
            "name": "ddp", "teacher": {"name": str(teacher)},
            "corpus": {"sources": [str(corpus)], "seq_len": 32},
            "target": {"backend": "fake", "seq_lens": [32], "speedups": [1.2], "calibrate_archs": 0},
            "distill": {"proxy_tokens": 400, "full_tokens": 1200, "batch_size": 4, "grad_accum": 2,
                        "relation_heads": 2, "nproc": nproc},
            "search": {"space": str(space), "strategy": "random", "n_trials": 1, "episode_size": 1,
                       "promote_fraction": 0.0},
            "evaluate": {"baselines": False}, "export": {"onnx": False, "int8": False},
        })  # fmt: skip

    assert cfg(1).hash() == cfg(2).hash()  # a resource setting: results do not depend on it
    with pytest.raises(
        ConfigError, match=r"distill\.nproc: 2 processes .* grad_accum \(3\) must be a multiple"
    ):
        config.from_dict({"distill": {"nproc": 2, "grad_accum": 3}})
    results = {}
    for n in (1, 2):
        _run_to_export(cfg(n), tmp_path / f"run{n}")
        student = json.loads((tmp_path / f"run{n}" / "summary.json").read_text())["students"][0]
        results[n] = json.loads(
            (tmp_path / f"run{n}" / student["model_dir"]).parent.joinpath("result.json").read_text()
        )
        assert (tmp_path / f"run{n}" / "export" / student["name"] / "config.json").is_file()
    assert results[2]["processes"] == 2 and results[2]["name"] == results[1]["name"]
    assert results[2]["steps"] == results[1]["steps"] and results[2]["tokens"] == results[1]["tokens"]
    # float noise: another summation order across processes and threads, bf16 autocast on CPUs that have it
    assert results[2]["heldout_kd_loss"] == pytest.approx(results[1]["heldout_kd_loss"], rel=1e-3)


# ------------------------------------------------------------------------------------- a baseline the search found


def test_a_baseline_the_search_recommends_is_distilled_scored_and_timed_once(tmp_path: Path) -> None:
    """A space holding only the every-other-layer shape: the search recommends it, and the family's
    every-other-layer-kd baseline is the same model (same arch, same inherited start, same seed). It is distilled
    once, fine-tuned once, timed once, and its row is the student's under the baseline's name."""
    import json

    from kdnas.testing import tiny_run_config, write_tiny_task

    cfg = config.from_dict(
        tiny_run_config(
            tmp_path, name="same-as", tasks=[str(write_tiny_task(tmp_path / "task.csv"))],
            teacher_layers=4,  # every other layer: L2-H32-A4-F64
            dimensions={"num_layers": [2], "hidden_size": [32], "ffn_ratio": [2]},
            evaluate={"baselines": True, "baseline_family": True, "fidelity_passages": 20},
        )
    )  # fmt: skip
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "STAGES", [s for s in pipeline.STAGES if s.name not in ("export", "report")])
        pipeline.run(cfg, run_dir=run, progress=False)
    summary = json.loads((run / "summary.json").read_text())
    (student,) = summary["students"]
    assert student["arch_id"] == "L2-H32-A4-F64-gelu"
    base = {b["name"]: b for b in summary["baselines"]}
    eol = base["every-other-layer-kd"]
    assert eol["same_as"] == student["name"] and eol["model_dir"] == student["model_dir"]
    assert not (run / "baselines" / "every-other-layer-kd").exists()  # not distilled again
    assert (
        "same_as" not in base["tinybert-4L-312H"]
        and (run / "baselines" / "tinybert-4L-312H" / "model").is_dir()
    )
    a, b = (
        json.loads((run / "evaluate" / f"{n}.json").read_text())
        for n in (student["name"], "every-other-layer-kd")
    )
    assert b["name"] == "every-other-layer-kd" and {**b, "name": a["name"]} == a
    rows = {r["model"]: r for r in json.loads((run / "retention.json").read_text())["rows"]}
    assert rows["every-other-layer-kd"]["speedup"] == rows[student["name"]]["speedup"] is not None
    assert list(rows).index("every-other-layer-kd") < list(rows).index(student["name"])  # baselines first
    assert "every-other-layer-kd is the same model as" in (run / "retention.md").read_text()


@pytest.mark.parametrize("keep", [False, True])
def test_the_teacher_cache_and_checkpoints_go_once_the_distill_stage_is_done(
    tmp_path: Path, keep: bool
) -> None:
    """Nothing after the distill stage reads them, and the distill stage nothing of the search's cache
    (`distill.keep_teacher_cache` keeps them for a rerun)."""
    from kdnas import run_dir as rd

    seen: dict[str, bool] = {}

    def make(name: str) -> pipeline.Stage:
        def run(ctx: pipeline.RunContext) -> dict[str, Any]:
            cache = ctx.run_dir / rd.TEACHER_CACHE / "k"
            seen[name] = cache.exists()
            if name in ("search", "distill"):
                cache.mkdir(parents=True, exist_ok=True)
                (cache / f"hidden.{name}.npy").write_bytes(b"\1" * 4096)
            if name == "distill":
                d = ctx.run_dir / rd.STUDENTS / "s"
                (d / "model").mkdir(parents=True)
                (d / "model" / "config.json").write_text("{}")
                (d / "checkpoint-000002.pt").write_bytes(b"\1" * 4096)
                (d / "checkpoint.json").write_text("{}")
            return {}

        return pipeline.Stage(name, run, name, frees_scratch=name in ("search", "distill"))

    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "STAGES", [make(n) for n in ("search", "distill", "evaluate")])
        mp.setattr(pipeline.RunContext, "say", lambda self, msg: lines.append(msg))
        pipeline.run(config.load("smoke", {"distill.keep_teacher_cache": keep}), run_dir=tmp_path / "r")
    r = tmp_path / "r"
    assert seen == {"search": False, "distill": keep, "evaluate": keep}
    if keep:
        kept = {p.name for p in (r / rd.TEACHER_CACHE / "k").iterdir()}
        assert kept == {"hidden.search.npy", "hidden.distill.npy"}
    assert (r / rd.STUDENTS / "s" / "model" / "config.json").is_file()
    assert (r / rd.STUDENTS / "s" / "checkpoint-000002.pt").exists() == keep
    assert sum("freed" in line and "keep_teacher_cache" in line for line in lines) == (0 if keep else 2)
