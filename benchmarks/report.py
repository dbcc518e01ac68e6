"""The peer benchmark's report: BENCHMARKS.md, made from the results files alone.

`write_report` renders every peer results file of a folder (schema.PeerResults, newest first).
Each file is a section of small parts (`render_file`), each made from the data: the machine and
versions, then per dataset the data, the main table (one (header, cell) spec per figure:
`columns`), the in-process speed table, the per-type F1, the step time, the scaling and the
commands. Every figure in the report, seeds included, comes from the results.
"""
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .markdown import row, table
from .paths import rel
from .schema import (PeerResults, check, is_peer_results, load_results, speed_seed,
                     versions_text)
from .systems import NAMES

Pair = Tuple[Optional[float], Optional[float]]  # mean and sample std (None below 2 values)
DASH = "–"

METHOD = """How to read this: every system is trained for the same number of epochs on the same
sentences (one sentence per document, no document context) with the same encoder, then predicts the
dev and test sets; one scorer (`benchmarks/peers/score.py`: an entity is right when its start, end
and label match a gold entity; micro P/R/F1 in %) scores every system's predictions, and seqeval
(strict mode, IOB2) recomputes the micro scores as a cross-check (`seqeval` column). words/s:
test-set words (MSRA: characters) through the system's own inference API (spaCy `nlp.pipe` on
pre-tokenized Docs, HF `pipeline`, Flair `predict`, raw = tokenizer + encoder forward), CPU, warm
(a warm-up pass on the first 64 sentences first), at batch size 1 and 64; × raw = that speed
divided by the raw encoder's speed measured on the same machine. RSS: peak resident memory of the
train and of the inference subprocess (`ru_maxrss`). Train time: wall clock of the whole training
subprocess (loading, initialization and, for the spaCy systems, the dev evaluations `spacy train`
runs every `eval_frequency` steps). Each system keeps its own training recipe (learning rate,
schedule, batch size): see `benchmarks/peers/*.py`; spaCy systems use the dataset's shipped config
(`configs/en_conll03.cfg`, `configs/zh_msra.cfg`) with the warmup_linear schedule stretched to the
epoch budget; `crf` and `softmax` run our `spacy-bert-crf.TransformerModel.v1` (length-bucketed
inference), `spacy_ner` spacy-transformers' own `TransformerModel.v3`, as a user without this
package would. Models: the final model of each run (spaCy `model-last`), no selection on dev."""

DOCUMENTS_TEXT = (
    "**Document context** (`--context documents`): each -DOCSTART- document of the CoNLL files is "
    "one Doc, read with `read_conll(docs=True)` as `convert --docs` writes it, for training and "
    "prediction alike; the sentences and gold entities are those of the sentence setting, so the "
    "scores compare with its rows (same encoder and epochs; fewer, longer batches). The raw "
    "encoder truncates each document at its maximum length, so its words/s and the × raw ratios "
    "here overstate it.")
SPEED_TEXT = (
    "Inference speed with every system in ONE process (`benchmarks/peers/speed.py`: "
    "{which_models}, {rounds} rounds, in each round one pass per system and batch size in "
    "rotating order; batch 1 on the first {limit_b1} test sentences; medians over the rounds; × "
    "raw = median of the per-round ratios to the raw encoder). These are the speed numbers to "
    "compare: the table above times each system in its own process at another moment, and this "
    "machine's speed drifts by 10-15% between processes. Flair (own virtualenv) is not in it. The"
    " raw encoder pads each batch to its longest sentence (corpus order) or runs the sentences "
    "sorted by length (the least padding); `crf` and `softmax` sort the windows of each batch "
    "into sub-batches of similar length (TransformerModel.v1), which is how a whole pipeline can "
    "outrun the raw encoder in corpus order."
)
STEP_TIME_TEXT = (
    "Training step time, CRF head against its softmax ablation (`benchmarks/peers/step_time.py`: "
    "one process, the same {steps} batches of {words_per_batch:.0f} words on average after "
    "{warmup} warm-up steps, alternating order, {threads} threads; forward, backward through the "
    "transformer and optimizer update): crf {crf[median_ms]:.0f} ms, softmax "
    "{softmax[median_ms]:.0f} ms per step (medians); **ratio {ratio:.3f}** (median of the "
    "per-step ratios {paired_ratio_median:.3f}; target ≤ 1.10). Command: `{run[command]}`; "
    "1-minute load average at start {loadavg_at_start[0]:.1f}.")


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def stat(values: Iterable[Optional[float]]) -> Pair:
    found = [v for v in values if v is not None]
    if not found:
        return None, None
    return statistics.mean(found), (statistics.stdev(found) if len(found) >= 2 else None)


def summarize(entry: dict) -> dict:
    """Mean (and sample std over >= 2 seeds) of the numbers of the seeds that finished."""
    seeds = [r for r in entry.get("seeds", {}).values() if r.get("status") == "ok"]
    out: Dict[str, Any] = {"n_seeds": len(seeds)}
    if not seeds:
        return out
    scored = [r["scores"] for r in seeds if "scores" in r]
    trained = [r["train"] for r in seeds if "train" in r]
    for split in ("test", "dev"):
        for key in ("f", "p", "r"):
            out[f"{split}_{key}"] = stat([s[split][key] for s in scored])
        labels = sorted({lab for s in scored for lab in s[split]["per_type"]})
        out[f"{split}_per_type"] = {lab: stat([s[split]["per_type"].get(lab, {}).get("f")
                                               for s in scored]) for lab in labels}
    out["crosscheck_ok"] = [s["test"]["crosscheck_ok"] for s in scored]
    out["wps"] = {bs: stat([r["infer"]["speed"].get(bs, {}).get("words_per_second") for r in seeds])
                  for bs in seeds[0]["infer"]["speed"]}
    out["rss_train"] = max((t["max_rss_mib"] for t in trained), default=None)
    out["rss_infer"] = max(r["infer"]["max_rss_mib"] for r in seeds)
    out["train_seconds"] = stat([t["seconds"] for t in trained])
    out["budget"] = trained[0].get("budget") if trained else None
    return out


def mean_of(pair: Optional[Pair]) -> Optional[float]:
    return (pair or (None,))[0]


def fmt_pm(pair: Optional[Pair], scale: float = 100.0, digits: int = 2) -> str:
    mean, std = pair if pair else (None, None)
    if mean is None:
        return DASH
    text = f"{scale * mean:.{digits}f}"
    return text + (f" ± {scale * std:.{digits}f}" if std is not None else "")


def fmt_num(value: Optional[float], digits: int = 0, suffix: str = "") -> str:
    return DASH if value is None else f"{value:,.{digits}f}{suffix}"


def fmt_ratio(mine: Optional[float], base: Optional[float]) -> str:
    return f"{mine / base:.2f}" if mine and base else DASH


def budget_text(budget: Optional[dict]) -> str:
    if not budget:
        return DASH
    parts = [f"{budget['epochs']} ep"]
    if budget.get("steps"):
        parts.append(f"{budget['steps']} steps")
    if budget.get("augment"):
        parts.append(f"+ {budget['augment']}")
    if budget.get("context"):
        parts.append(budget["context"])
    return ", ".join(parts)


def entry_error(entry: dict) -> str:
    """The first failed seed's step and error, first and last lines."""
    for r in entry.get("seeds", {}).values():
        if r.get("status") != "ok":
            first = (r.get("error") or "").strip().splitlines()
            tail = [x for x in first if x.strip()][-1:] if first else []
            return f"{r.get('failed_step')}: {(first[0] if first else '')[:150]}" + (
                f" … {tail[0][:200]}" if tail and tail[0] != first[0] else "")
    return ""


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


Cell = Callable[[str, dict], str]  # (system name, summary) -> text


def _score(key: str) -> Cell:
    return lambda name, s: DASH if name == "raw" else fmt_pm(s[key])


def _speed(bs: str) -> Cell:
    return lambda name, s: fmt_num(mean_of(s["wps"].get(bs)))


def _ratio(bs: str, raw: Dict[str, Pair]) -> Cell:
    return lambda name, s: fmt_ratio(mean_of(s["wps"].get(bs)), mean_of(raw.get(bs)))


def columns(batch_sizes: Sequence[str], raw: Dict[str, Pair]) -> List[Tuple[str, Cell]]:
    """The main table's columns: (header, cell) per figure, per batch size for the speeds."""
    cols: List[Tuple[str, Cell]] = [("system", lambda name, s: name)]
    cols += [(head, _score(key)) for head, key in
             (("test F1", "test_f"), ("P", "test_p"), ("R", "test_r"), ("dev F1", "dev_f"))]
    cols += [(f"words/s b{bs}", _speed(bs)) for bs in batch_sizes]
    cols += [(f"× raw b{bs}", _ratio(bs, raw)) for bs in batch_sizes]
    return cols + [
        ("RSS train", lambda name, s: fmt_num(s["rss_train"], 0, " MiB")),
        ("RSS infer", lambda name, s: fmt_num(s["rss_infer"], 0, " MiB")),
        ("train time", lambda name, s: fmt_num(_minutes(s["train_seconds"]), 1, " min")),
        ("budget", lambda name, s: budget_text(s["budget"])),
        ("seeds", lambda name, s: str(s["n_seeds"])),
        ("seqeval", lambda name, s: DASH if name == "raw" else _crosscheck(s["crosscheck_ok"])),
    ]


def _crosscheck(checks: List[Optional[bool]]) -> str:
    """The seqeval cross-check of a system's seeds: DIFFERS if any seed's scores differ, "not
    run" for seeds scored where seqeval was not installed (None), else ok."""
    if any(check is False for check in checks):
        return "DIFFERS"
    if any(check is None for check in checks):
        return "not run" if all(check is None for check in checks) else "ok, not all seeds"
    return "ok"


def _minutes(pair: Optional[Pair]) -> Optional[float]:
    seconds = mean_of(pair)
    return None if seconds is None else seconds / 60


def render_systems(systems: dict, summaries: Dict[str, dict]) -> List[str]:
    raw = summaries.get("raw", {}).get("wps", {})
    batch_sizes = sorted({bs for s in summaries.values() for bs in s.get("wps", {})}, key=int)
    cols = columns(batch_sizes, raw)
    lines = table([head for head, _ in cols], [], "l" * len(cols))
    for name in [n for n in NAMES if n in systems]:
        s = summaries[name]
        if s["n_seeds"]:
            lines.append(row([cell(name, s) for _, cell in cols]))
        else:
            failed = row([name, f"failed: {entry_error(systems[name])}"])
            lines.append(failed + " |" * (len(cols) - 2))
    return lines + [""]


def render_per_type(summaries: Dict[str, dict]) -> List[str]:
    labels = sorted({lab for s in summaries.values() for lab in s.get("test_per_type", {})})
    if not labels:
        return []
    rows = [[name] + [fmt_pm(summaries[name]["test_per_type"].get(lab)) for lab in labels]
            for name in NAMES if summaries.get(name, {}).get("test_per_type")]
    return (["Test F1 per type:", ""] + table(["system"] + labels, rows, "l" + "r" * len(labels))
            + [""])


def render_speed(sp: dict) -> List[str]:
    if sp.get("status") != "ok":
        return [f"Speed in one process: **failed**: {sp.get('error', '')[-300:]}", ""]
    from .peers.speed import SORTED

    bss = [str(b) for b in sp["batch_sizes"]]
    seed = speed_seed(sp)
    models = "models" if seed is None else f"seed-{seed} models"
    head = ["system"] + [f"words/s b{b}" for b in bss] + [f"× raw b{b}" for b in bss]
    rows = []
    for name in [n for n in NAMES if n in sp["systems"]] + [SORTED]:
        e = sp["systems"].get(name)
        if e:
            label = "raw, sentences sorted by length" if name == SORTED else name
            rows.append([label] + [fmt_num(e["median"].get(b)) for b in bss]
                        + [f"{e['ratio_to_raw'][b]:.2f}" if b in e["ratio_to_raw"] else DASH
                           for b in bss])
    return ([SPEED_TEXT.format(which_models=models, **sp), ""]
            + table(head, rows, "l" + "r" * (len(head) - 1))
            + ["", f"Command: `{sp['run']['command']}`; 1-minute load average at start "
                   f"{sp['loadavg_at_start'][0]:.1f}.", ""])


def render_step_time(st: dict) -> List[str]:
    if st.get("status") != "ok":
        return [f"Training step time (crf vs softmax): **failed**: {st.get('error', '')[-300:]}",
                ""]
    return [STEP_TIME_TEXT.format(**st), ""]


def render_scaling(systems: dict) -> List[str]:
    lines = []
    for name in NAMES:
        for r in systems.get(name, {}).get("seeds", {}).values():
            sizes = r.get("scale", {}).get("sizes")
            if sizes:
                keys = sorted(sizes, key=int)
                growth = sizes[keys[-1]]["us_per_token"] / sizes[keys[0]]["us_per_token"]
                lines.append(f"- {name}: " + ", ".join(
                    f"{int(k):,} tokens {sizes[k]['seconds']:.2f} s = "
                    f"{sizes[k]['us_per_token']:.0f} µs/token" for k in keys)
                    + f" (µs/token ratio largest/smallest {growth:.2f})")
            elif r.get("scale"):
                lines.append(f"- {name}: failed")
    if not lines:
        return []
    return ["Scaling: one document of N tokens through the whole pipeline, µs per token "
            "(constant = linear time):", ""] + lines + [""]


def render_commands(systems: dict) -> List[str]:
    lines = ["Commands (paths relative to the repository root):", ""]
    for name in [n for n in NAMES if n in systems]:
        entry = systems[name]
        for seed, r in sorted(entry.get("seeds", {}).items()):
            for step in ("train", "infer", "scale"):
                if r.get(step, {}).get("command"):
                    lines.append(f"- {name} seed {seed} {step}: `{r[step]['command']}`")
            if r.get("status") != "ok":
                lines.append(f"- {name} seed {seed}: **failed at {r.get('failed_step')}**: "
                             f"{entry_error(entry)}")
        load = [r["loadavg_at_start"][0] for r in entry.get("seeds", {}).values()
                if "loadavg_at_start" in r]
        if load:
            lines.append(f"- {name}: 1-minute load average when it started: "
                         + ", ".join(f"{x:.1f}" for x in load))
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def render_data(dataset: str, d: dict) -> List[str]:
    """The dataset's heading and what its splits hold (SUBSET when limited)."""
    stats = d["data"]["splits"]
    whole = {split: s.get("split_sentences", s["full_file"]["sentences"])
             for split, s in stats.items()}
    limited = any(s["sentences"] != whole[split] for split, s in stats.items())
    parts = []
    for split, s in stats.items():
        grouping = f" in {s['documents']:,} documents" if "documents" in s else ""
        text = (f"{split} {s['sentences']:,} sentences{grouping} / {s['tokens']:,} tokens / "
                f"{s['entities']:,} entities")
        if s["sentences"] != whole[split]:
            text += f" (first {s['sentences']:,} of {whole[split]:,})"
        source = s["full_file"].get("file", split + ".txt")
        parts.append(text + f" (file {source}: {s['full_file']['sentences']:,} sentences)")
    carve = d["data"].get("dev_from_train")
    if carve:
        parts[-1] += (f"; dev is {carve['size']:,} sentences carved from {carve['source']} "
                      f"(spacy_bert_crf.corpora.split_docs, seed {carve['seed']}, as the project "
                      "splits it), train the rest")
    subset = " (SUBSET: not comparable with published numbers)" if limited else ""
    lines = [f"### {dataset}{subset}", "",
             "Data: " + "; ".join(parts) + f". Encoder: `{d.get('encoder', '?')}`.", ""]
    if d["data"].get("context") == "documents":
        lines[0] += " · document context"
        lines += [DOCUMENTS_TEXT, ""]
    return lines


def render_machine(results: PeerResults, path: Path) -> List[str]:
    m = results["machine"]
    device = "CPU only" if m.get("device", "cpu") == "cpu" else f"GPU {m.get('gpu', m['device'])}"
    lines = [f"## {results['date']} · {m['cpu']}, {m['cores']} cores", "",
             f"Results file: `{rel(path)}`. Updated {results.get('updated', '?')}.", "",
             f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; "
             f"{device}, {m['torch_threads']} torch threads.", "",
             f"**Versions:** {versions_text(results['versions'])}."]
    flair = results.get("flair_versions")
    if flair:
        lines += ["", f"**Flair's virtualenv:** {versions_text(flair)}."]
    return lines + [""]


def render_file(results: PeerResults, path: Path) -> List[str]:
    check(results, PeerResults, rel(path))
    lines = render_machine(results, path)
    for dataset, d in results["datasets"].items():
        systems = d["systems"]
        summaries = {name: summarize(e) for name, e in systems.items()}
        lines += render_data(dataset, d) + render_systems(systems, summaries)
        lines += render_speed(d["speed"]) if d.get("speed") else []
        lines += render_per_type(summaries)
        lines += render_step_time(d["step_time"]) if d.get("step_time") else []
        lines += render_scaling(systems) + render_commands(systems)
    notes = results.get("notes") or []
    return lines + (["**Notes:**", ""] + [f"- {n}" for n in notes] + [""] if notes else [])


def render_report(files: Iterable[Tuple[Path, PeerResults]]) -> str:
    lines = ["# Peer benchmarks", "", "Generated by `python -m benchmarks.run` (do not edit by "
             "hand). " + METHOD.replace("\n", " "), ""]
    for path, data in files:
        lines += render_file(data, path)
    return "\n".join(lines).rstrip() + "\n"


def peer_results_files(out_dir: Path) -> List[Tuple[Path, PeerResults]]:
    """The peer results files of a folder, newest name first (other JSON files are skipped)."""
    files: List[Tuple[Path, PeerResults]] = []
    for path in sorted(out_dir.glob("*.json"), reverse=True):
        try:
            data = load_results(path)
        except (OSError, ValueError):
            continue
        if is_peer_results(data):
            files.append((path, data))
    return files


def write_report(out_dir: Path, markdown: Path) -> None:
    markdown.write_text(render_report(peer_results_files(out_dir)), encoding="utf8")
    print(f"wrote {rel(markdown)}", flush=True)
