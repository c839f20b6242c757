"""The model card (README.md with HF model-card YAML front matter) written into every exported folder.

It says what the student is, how fast and how good it is against its teacher, where it came from, how to load it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import yaml

from kdnas.export.timing import SPREAD_LIMIT

if TYPE_CHECKING:
    from kdnas.export.exporter import ExportResult
    from kdnas.space.arch import Arch


@dataclass
class TaskScore:
    """A downstream score of the student and of its teacher on one task."""

    task: str
    """Task name, e.g. bbc-news."""
    metric: str
    """Metric name, e.g. accuracy or spearman."""
    student: float
    """The student's score on the task's test split."""
    teacher: float
    """The teacher's score on the same split."""
    retention: float | None = None
    """student / teacher; computed when None."""
    zero_shot: bool = False
    """Fine-tuned on another language's task and tested on this one (not in the average retention)."""

    @property
    def retention_value(self) -> float | None:
        if self.retention is not None:
            return self.retention
        return self.student / self.teacher if self.teacher else None


@dataclass
class ModelCardInfo:
    """What the exporter cannot see in the model itself: where it came from and how good it is."""

    name: str | None = None
    """Title of the card (default: the export folder's name)."""
    teacher: str | None = None
    """The teacher it was distilled from (zoo name or hub id)."""
    base_model: str | None = None
    """Hub id of the teacher for the `base_model` front-matter key (HF links the two)."""
    license: str = "apache-2.0"
    """License of the weights (a student inherits its teacher's license terms)."""
    language: list[str] = field(default_factory=list)
    """ISO language codes of the training corpus."""
    tags: list[str] = field(default_factory=list)
    """Extra tags for the front matter (kdnas, distillation and onnx are always added)."""
    arch: Arch | None = None
    """The student's shape (read from the model config when None)."""
    scores: list[TaskScore] = field(default_factory=list)
    """Downstream scores against the teacher."""
    teacher_latency_ms: dict[str, float] = field(default_factory=dict)
    """Teacher median latency per backend on the same target, for speed-ups."""
    proxy_kd_loss: float | None = None
    """The student's held-out KD loss against the teacher (normalised; 0 would be a perfect copy)."""
    budget_ms: float | None = None
    """The latency budget this student was recommended for."""
    config_hash: str | None = None
    """Hash of the run config that produced it."""
    seed: int | None = None
    """Run seed."""
    run_name: str | None = None
    """Name of the kdnas run."""
    hardware: str | None = None
    """Where latency was measured (default: this machine's fingerprint)."""
    distill_settings: dict[str, Any] = field(default_factory=dict)
    """The distillation config used (section `distill`)."""
    search_settings: dict[str, Any] = field(default_factory=dict)
    """The search config used (section `search`)."""
    notes: str = ""
    """Free text appended to the card."""
    vocab: dict[str, Any] = field(default_factory=dict)
    """A trimmed vocabulary: choice (corpus, N), teacher_vocab_size, unk_rate_heldout (from the run's files)."""
    fidelity: dict[str, Any] = field(default_factory=dict)
    """Label-free fidelity to the teacher on held-out passages: mean_cosine, cka, recall_at_10, passages."""
    peer_fidelity: dict[str, Any] = field(default_factory=dict)
    """The same figures for the run's static-embedding peer (`evaluate.static_peer`), shown beside them, with
    its `speedup` when it was timed."""
    datasets: list[str] = field(default_factory=list)
    """What it was distilled and evaluated on (corpus sources, task names) for the `datasets` front-matter key."""


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the export."""
    out = {}
    for pkg in ("kdnas", "torch", "transformers", "tokenizers", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


_METRIC_TYPES = {"macro_f1": ("f1", "macro F1"), "f1": ("f1", "F1"), "accuracy": ("accuracy", "accuracy"),
                 "spearman": ("spearmanr", "Spearman"), "pearson": ("pearsonr", "Pearson"),
                 "matthews": ("matthews_correlation", "Matthews correlation")}  # fmt: skip


def model_index(name: str, scores: list[TaskScore]) -> list[dict[str, Any]]:
    """The Hub's `model-index` front matter: one result per task the student was scored on (its test split,
    the student's own score; unverified, as kdnas measured it). Empty without scores."""
    results = []
    for s in scores:
        mtype, mname = _METRIC_TYPES.get(s.metric, (s.metric, s.metric))
        task_type = "text-classification"
        results.append(
            {
                "task": {"type": task_type, "name": "Text Classification"},
                "dataset": {"name": s.task, "type": s.task, "split": "test"},
                "metrics": [
                    {"type": mtype, "value": round(float(s.student), 4), "name": mname, "verified": False}
                ],
            }
        )
    return [{"name": name, "results": results}] if results else []


def _speedup_cell(info: ModelCardInfo, result: ExportResult, backend: str) -> str:
    """The card's speed-up for one backend: side by side when measured so, else from a separate teacher time."""
    s = result.speedups.get(backend)
    if s:
        cell = f"{s['speedup']:.2f}x ({s['lo']:.2f}-{s['hi']:.2f}x)"
        if s.get("rounds", 0) < 2:
            return f"{s['speedup']:.2f}x (1 round: spread not measured)"
        return cell if s.get("reliable", True) else f"{cell}: unreliable, spread {s['cv']:.0%} over rounds"
    t = info.teacher_latency_ms.get(backend)
    fig = result.latency.get(backend)
    return f"{t / fig.median_ms:.1f}x (teacher timed apart)" if t and fig else "n/a"


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _settings(d: dict[str, Any]) -> str:
    return "```yaml\n" + yaml.safe_dump(d, sort_keys=False).rstrip() + "\n```"


def render_card(
    info: ModelCardInfo, result: ExportResult, *, name: str, family: str, input_names: list[str]
) -> str:
    """The README.md text for an exported folder, from the card info and the measured export result."""
    arch = info.arch
    title = info.name or name
    front: dict[str, Any] = {"license": info.license, "library_name": "transformers"}
    if info.language:
        front["language"] = info.language
    if info.base_model:
        front["base_model"] = info.base_model
    tags = ["kdnas", "distillation", "knowledge-distillation", family]
    if result.files.get("onnx"):
        tags.append("onnx")
    front["tags"] = list(dict.fromkeys(tags + info.tags))
    front["pipeline_tag"] = "feature-extraction"
    if info.datasets:
        front["datasets"] = list(dict.fromkeys(info.datasets))
    index = model_index(title, info.scores)
    if index:
        front["model-index"] = index
    parts = ["---\n" + yaml.safe_dump(front, sort_keys=False) + "---", f"# {title}"]

    if info.teacher:
        intro = (
            f"A {family} encoder distilled from **{info.teacher}** with [kdnas](https://github.com/kdnas/kdnas) "
            "(architecture search + knowledge distillation)."
        )
    else:
        intro = f"A {family} encoder exported with [kdnas](https://github.com/kdnas/kdnas)."
    sentence = bool(result.files.get("sentence_transformers"))
    if sentence:
        space = (
            " A Dense layer (`2_Dense`) after the pooling maps the student's narrower embedding into the "
            "teacher's embedding space, as it was trained."
            if result.files.get("dense")
            else " It has the teacher's width, so no projection is needed: the pooled output is what the "
            "distillation matched to the teacher's embedding."
        )
        parts.append(
            intro + " It is a sentence-transformers model: token states are pooled (and normalised) as the "
            "teacher does, and the embedding was distilled towards the teacher's own." + space
        )
    else:
        parts.append(
            intro
            + " It outputs token embeddings (`last_hidden_state`); pool them (e.g. mean over real tokens) for "
            "sentence embeddings, or fine-tune it with a task head."
        )

    rows = [["family", family]]
    if arch is not None:
        rows += [
            ["arch id", f"`{arch.arch_id}`"],
            ["layers", str(arch.num_layers)],
            ["hidden size", str(arch.hidden_size)],
            ["attention heads", str(arch.num_heads)],
            ["FFN size", str(arch.ffn_size)],
            ["activation", arch.activation],
        ]
        if arch.family == "mobilebert":
            rows += [
                ["bottleneck size", str(arch.bottleneck_size)],
                ["stacked FFNs", str(arch.num_ffn_stacked)],
            ]
    rows += [
        ["parameters", f"{result.params_total / 1e6:.2f} M"],
        ["non-embedding parameters", f"{result.params_non_embedding / 1e6:.2f} M"],
    ]
    if info.budget_ms is not None:
        rows.append(["recommended for budget", f"{info.budget_ms:g} ms"])
    if info.proxy_kd_loss is not None:
        rows.append(["held-out KD loss vs teacher", f"{info.proxy_kd_loss:.4f}"])
    parts.append("## Architecture\n\n" + _table(["", ""], rows))
    parts.append(_vocabulary(info, result))

    if result.latency:
        any_fig = next(iter(result.latency.values()))
        lat_rows = []
        for backend, fig in result.latency.items():
            lat_rows.append(
                [backend, f"{fig.median_ms:.2f}", f"{fig.p90_ms:.2f}", _speedup_cell(info, result, backend)]
            )
        hw = info.hardware or result.hardware
        sbs = next(iter(result.speedups.values()), None)
        how = (
            f"the speed-up is the median of per-round ratios to the teacher timed in the same worker, "
            f"{sbs['rounds']} rounds in alternating order (range over rounds in brackets; a spread over "
            f"{SPREAD_LIMIT:.0%} is marked unreliable)"
            if sbs
            else "the teacher was not timed beside it, so the speed-up (where shown) compares numbers from "
            "different processes"
        )
        parts.append(
            f"## Latency\n\nMeasured on {hw}: {any_fig.threads} threads, batch {any_fig.batch_size}, "
            f"sequence length {any_fig.seq_len}, each backend in its own pinned worker process; {how}.\n\n"
            + _table(["backend", "median ms", "p90 ms", "speed-up vs teacher"], lat_rows)
        )
    if result.checks:
        chk_rows = [
            [
                f,
                f"{c.max_abs_diff:.2e}",
                f"{c.mean_cosine:.5f}",
                ("pass" if c.passed else "FAIL") + f" ({c.threshold})",
            ]
            for f, c in result.checks.items()
        ]
        parts.append(
            "## ONNX numerics\n\n`last_hidden_state` of each ONNX file against PyTorch on a padded batch of "
            "real sentences (real tokens only)"
            + (
                "; `sentence_embedding` (the graph's second output: pooling, Dense and normalisation as "
                "sentence-transformers computes them) per sentence"
                if "sentence_embedding" in result.onnx_outputs
                else ""
            )
            + ".\n\n"
            + _table(["file", "max abs diff", "mean cosine", "check"], chk_rows)
        )

    if info.scores:
        q_rows = []
        for s in info.scores:
            r = s.retention_value
            task = f"{s.task} (zero-shot)" if s.zero_shot else s.task
            q_rows.append(
                [task, s.metric, f"{s.student:.4f}", f"{s.teacher:.4f}", _fmt(r and 100 * r, ".1f") + "%"]
            )
        rets = [r for s in info.scores if (r := s.retention_value) is not None and not s.zero_shot]
        zs = [r for s in info.scores if (r := s.retention_value) is not None and s.zero_shot]
        avg = f"\n\nAverage retention: **{100 * sum(rets) / len(rets):.1f}%** of the teacher." if rets else ""
        if zs:
            avg += f" Zero-shot average: **{100 * sum(zs) / len(zs):.1f}%** of the teacher's zero-shot score."
        parts.append(
            "## Quality\n\n" + _table(["task", "metric", "student", "teacher", "retention"], q_rows) + avg
        )

    if info.fidelity:
        f, p = info.fidelity, info.peer_fidelity
        keys = [("embedding cosine to the teacher", "mean_cosine"), ("linear CKA, last hidden state", "cka"),
                ("recall@10 of the teacher's neighbours", "recall_at_10")]  # fmt: skip
        cells = [[label, _fmt(f.get(k), ".3f")] + ([_fmt(p.get(k), ".3f")] if p else []) for label, k in keys]
        header = ["", "this model"]
        peer = ""
        if p:
            sp = p.get("speedup")
            header.append(
                "static peer" + (f" ({sp:.0f}x the teacher)" if isinstance(sp, int | float) else "")
            )
            peer = (" Beside it, a static-embedding model made from the same teacher with Model2Vec's recipe "
                    "(no transformer: the mean of per-token vectors), what a student must beat at the fast end.")  # fmt: skip
        parts.append(
            f"## Embedding fidelity\n\nLabel-free agreement with the teacher on {f.get('passages')} held-out "
            f"passages of the distillation corpus (sentences of documents the student never saw).{peer}\n\n"
            + _table(header, cells)
        )

    parts.append(
        _usage(
            name, input_names, bool(result.files.get("onnx")), sentence=sentence,
            onnx_sentence="sentence_embedding" in result.onnx_outputs,
        )
    )  # fmt: skip

    if info.distill_settings or info.search_settings:
        train = "## Training\n\n"
        if info.search_settings:
            train += "Search settings:\n\n" + _settings(info.search_settings) + "\n\n"
        if info.distill_settings:
            train += "Distillation settings:\n\n" + _settings(info.distill_settings)
        parts.append(train.rstrip())

    prov = [["date", result.created]]
    if info.run_name:
        prov.append(["run", info.run_name])
    if info.config_hash:
        prov.append(["config hash", f"`{info.config_hash}`"])
    if info.seed is not None:
        prov.append(["seed", str(info.seed)])
    prov.append(["hardware", info.hardware or result.hardware])
    prov += [[k, v] for k, v in result.versions.items()]
    parts.append("## Provenance\n\n" + _table(["", ""], prov))
    if info.notes:
        parts.append(info.notes)
    return "\n\n".join(parts) + "\n"


def _vocabulary(info: ModelCardInfo, result: ExportResult) -> str:
    """The vocabulary section: kept tokens against the teacher's, and where the parameters sit."""
    v = info.vocab
    kept = result.vocab_size
    t_vocab = v.get("teacher_vocab_size")
    word = result.params_word_embedding
    other_emb = result.params_total - result.params_non_embedding - word
    if v.get("choice"):
        how = {"corpus": "every token its distillation corpus uses"}.get(
            str(v["choice"]), f"the {v['choice']} most frequent tokens of its distillation corpus"
        )
        text = (
            f"The vocabulary is trimmed to {how} (plus special tokens and single characters): **{kept:,}** of "
            f"the teacher's {t_vocab:,} tokens. The tokenizer in this folder maps raw text straight to the "
            "reduced ids: a word whose pieces were dropped is split into kept sub-pieces (down to single "
            "characters); only a character with no kept piece becomes the unk token."
        )
        if v.get("unk_rate_heldout") is not None:
            text += (
                f" On held-out text {100 * v['unk_rate_heldout']:.2f}% of the teacher's tokens were not kept."
            )
    else:
        text = f"The student keeps its teacher's vocabulary ({kept:,} tokens)."
    rows = [
        ["tokens", f"{kept:,}" + (f" (teacher: {t_vocab:,})" if t_vocab and v.get("choice") else "")],
        ["word-embedding parameters", f"{word / 1e6:.2f} M"],
        ["position / type embeddings and norm", f"{other_emb / 1e6:.2f} M"],
        ["transformer parameters", f"{result.params_non_embedding / 1e6:.2f} M"],
    ]
    return "## Vocabulary\n\n" + text + "\n\n" + _table(["", ""], rows)


def _usage(
    dirname: str, input_names: list[str], onnx: bool, *, sentence: bool = False, onnx_sentence: bool = False
) -> str:
    names = json.dumps(input_names)
    s = f"""## How to use

With transformers only (no kdnas needed):

```python
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/{dirname}")
model = AutoModel.from_pretrained("path/to/{dirname}").eval()
batch = tokenizer(["A sentence to embed."], return_tensors="pt")
hidden = model(**batch).last_hidden_state  # [batch, seq, hidden]
```"""
    if sentence:
        s += f"""

With sentence-transformers (pooling, Dense and normalisation as in training):

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("path/to/{dirname}")
embeddings = model.encode(["A sentence to embed."])  # [batch, teacher's embedding width]
```"""
    if onnx:
        s += f"""

With onnxruntime (`model.onnx` fp32, `model-int8.onnx` dynamic int8; batch and sequence axes are dynamic):

```python
import onnxruntime as ort
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/{dirname}")
session = ort.InferenceSession("path/to/{dirname}/model.onnx", providers=["CPUExecutionProvider"])
batch = tokenizer(["A sentence to embed."], return_tensors="np")
hidden = session.run(["last_hidden_state"], {{k: batch[k] for k in {names}}})[0]
```"""
        if onnx_sentence:
            s += f"""

The ONNX graph also outputs the sentence embedding, pooled, projected and normalised as sentence-transformers
does (the vectors that live in the teacher's embedding space):

```python
import onnxruntime as ort
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/{dirname}")
session = ort.InferenceSession("path/to/{dirname}/model.onnx", providers=["CPUExecutionProvider"])
batch = tokenizer(["A sentence to embed."], return_tensors="np")
embedding = session.run(["sentence_embedding"], {{k: batch[k] for k in {names}}})[0]  # [batch, dim]
```"""
    return s


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
