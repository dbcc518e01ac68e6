"""The Chinese pipeline on a CPU: speed, size on disk and peak memory, with and without the
pruned e5-small-zh vocabulary (issue 13, item 4).

    python -m benchmarks.zh_speed [--encoder encoders/e5-small-zh] [--msra PATH/test.txt]
        [--out benchmarks/results] [--threads 2]

Builds the zh pipeline of configs/zh_msra.cfg (ChineseCharTokenizer, transformer, crf_ner) on
the e5-small-zh encoder and on a pruned build of it (`encoders build e5-small-zh --prune`,
written to benchmarks/.work), initialized but untrained: speed, size and memory do not depend on
the weights' values. Both pipelines get the same crf_ner weights. Each pipeline is saved with
`nlp.to_disk` (what `spacy package` ships) and measured in a fresh process: load time, resident
memory after loading, characters (and tokens) per second at batch 1 (`nlp(text)` one text after
another) and at batch 64 (`nlp.pipe(texts, batch_size=64)`), with 1 and with 2 torch threads,
and the peak resident memory (VmHWM) while loading and while processing.

Checks that pruning changes nothing: every piece of the full vocabulary, as text on its own,
after a space, between CJK characters and after a Latin letter, is tokenized into the same
pieces by both tokenizers, and both pipelines give the same hidden states, entities and
entity scores on mixed Chinese text (Latin words, digits, full-width and ASCII punctuation).

Texts: the first sentences of an MSRA-style file (--msra; its text is read, never written), or
else the hand-written MIXED_TEXTS. Writes zh_speed.json and zh_speed.md.
"""
import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import RESULTS, ROOT, WORK, portable, rel
from .peers.common import write_json

CONFIG = ROOT / "configs" / "zh_msra.cfg"
BATCH_SIZES = (1, 64)
N_TEXTS = {1: 64, 64: 256}  # texts timed at each batch size
THREADS = (1, 2)  # torch intra-op threads; each pipeline is measured with each
WARMUP = 8
LABELS = ("PER", "LOC", "ORG")
# Hand-written: Chinese with Latin words, digits, full-width and ASCII punctuation and spaces.
MIXED_TEXTS = [
    "2008年北京奥运会在中国举行，Angela Merkel出席。",
    "我用iPhone 15拍了3张照片，花了99.9元（约14 USD）！",
    "据《人民日报》报道：联合国秘书长Guterres昨天抵达南京; e-mail: un@example.org",
    "Ｅ５模型、ｅ５和E5：“北京大学”的ABC-123…",
    "新华社上海三月五日电，上海市政府与香港特别行政区签署了合作协议。",
    "记者从中国科学院获悉，我国在南极建立的长城站已运行30多年。",
    "小明说：“明天去天安门广场！”然后和Tom一起回家了。",
    "浙江省杭州市西湖区的龙井茶闻名全国，2023年产量约为1.2万吨。",
]
# Entities of the first texts, to initialize crf_ner with the three MSRA labels.
INIT_ENTITIES = [
    [("北京", "LOC"), ("中国", "LOC"), ("Angela Merkel", "PER")],
    [],
    [("人民日报", "ORG"), ("联合国", "ORG"), ("Guterres", "PER"), ("南京", "LOC")],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", type=Path, default=ROOT / "encoders" / "e5-small-zh",
                        help="The e5-small-zh folder (encoders build e5-small-zh DIR)")
    parser.add_argument("--pruned", type=Path, default=WORK / "encoders" / "e5-small-zh-pruned",
                        help="The pruned build (built here when missing)")
    parser.add_argument("--msra", type=Path, default=None,
                        help="Time on this MSRA-style file's first sentences")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=0,
                        help="Measure with this many torch threads only (0: each of THREADS)")
    parser.add_argument("--note", default="The machine was shared with other work while this ran.",
                        help="a sentence about the machine's state, copied into the results")
    parser.add_argument("--measure", nargs=3, type=Path, metavar=("PIPELINE", "TEXTS", "OUTPUTS"),
                        help=argparse.SUPPRESS)  # one pipeline, in the fresh process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, threads=args.threads)))
        return

    from spacy_bert_crf.encoders import build_encoder

    pruned_encoder = build_encoder("e5-small-zh", args.pruned, prune=True)
    encoders = {"full": args.encoder.resolve(), "pruned": pruned_encoder}
    texts, source = load_texts(args.msra)
    work = WORK / "zh_speed"
    work.mkdir(parents=True, exist_ok=True)
    pipelines = build_pipelines(encoders, work)
    (work / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf8")
    token_check = check_tokenizers(encoders["full"], encoders["pruned"], texts)
    runs: Dict[str, Dict[str, Any]] = {}
    for threads in ([args.threads] if args.threads else THREADS):
        for variant, path in pipelines.items():
            runs.setdefault(variant, {})[str(threads)] = measure_in_subprocess(
                path, work / "texts.json", work / f"{variant}.outputs.json", threads
            )
    outputs = {v: json.loads((work / f"{v}.outputs.json").read_text(encoding="utf8"))
               for v in pipelines}
    record = {
        "date": today(),
        "machine": machine_info(max(THREADS) if not args.threads else args.threads),
        "versions": package_versions(),
        "command": "python -m benchmarks.zh_speed" + (" --msra MSRA_TEST" if args.msra else ""),
        "config": rel(CONFIG),
        "encoders": {v: portable(str(p)) for v, p in encoders.items()},
        "texts": source,
        "load_average": os.getloadavg()[0],
        "note": args.note,
        "sizes": {v: sizes(p, encoders[v]) for v, p in pipelines.items()},
        "runs": runs,
        "pruning_check": {**token_check, **compare_outputs(outputs["full"], outputs["pruned"])},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "zh_speed.json", record)
    (args.out / "zh_speed.md").write_text(render(record), encoding="utf8")
    print(render(record))


def load_texts(msra: Any) -> tuple:
    """The texts to time: the first sentences of an MSRA file, or MIXED_TEXTS repeated."""
    n = max(N_TEXTS.values()) + WARMUP
    if msra is None:
        texts = [MIXED_TEXTS[i % len(MIXED_TEXTS)] for i in range(n)]
        return texts, f"MIXED_TEXTS (benchmarks/zh_speed.py) repeated to {n} texts"
    from spacy_bert_crf.corpora import read_msra

    docs, _ = read_msra(msra)
    texts = [doc.text for doc in docs[:n]]
    return texts, f"the first {len(texts)} sentences of MSRA test"


def build_pipelines(encoders: Dict[str, Path], work: Path) -> Dict[str, Path]:
    """One untrained pipeline per encoder, saved with nlp.to_disk; same crf_ner weights."""
    from spacy.training import Example
    from spacy.util import fix_random_seed, load_config, load_model_from_config

    paths = {}
    crf_bytes = None
    for variant, encoder in encoders.items():
        fix_random_seed(0)
        overrides = {"paths.transformer": str(encoder)}
        config = load_config(CONFIG, overrides=overrides, interpolate=True)
        nlp = load_model_from_config(config, auto_fill=True, validate=True)
        examples = []
        for text, ents in zip(MIXED_TEXTS, INIT_ENTITIES):
            doc = nlp.make_doc(text)
            spans = [doc.char_span(text.index(e), text.index(e) + len(e), label=label)
                     for e, label in ents]
            gold = doc.copy()
            gold.ents = spans
            examples.append(Example(doc, gold))
        nlp.initialize(lambda: examples)
        if crf_bytes is None:
            crf_bytes = nlp.get_pipe("crf_ner").to_bytes()
        else:
            nlp.get_pipe("crf_ner").from_bytes(crf_bytes)
        paths[variant] = work / variant
        nlp.to_disk(paths[variant])
        del nlp
        gc.collect()
    return paths


def check_tokenizers(full: Path, pruned: Path, texts: Sequence[str]) -> Dict[str, Any]:
    """Every piece of the full vocabulary in four contexts, and the texts: same pieces?"""
    from tokenizers import Tokenizer

    before = Tokenizer.from_file(str(full / "tokenizer.json"))
    after = Tokenizer.from_file(str(pruned / "tokenizer.json"))
    pieces = [p.replace("\u2581", " ") for p in before.get_vocab()]
    probes = [f"{p}" for p in pieces] + [f" {p}" for p in pieces]
    probes += [f"中{p}文" for p in pieces] + [f"a{p}" for p in pieces] + list(texts)
    differ = 0
    for start in range(0, len(probes), 4096):
        chunk = probes[start : start + 4096]
        a = before.encode_batch(chunk, add_special_tokens=False)
        b = after.encode_batch(chunk, add_special_tokens=False)
        differ += sum(x.tokens != y.tokens or x.offsets != y.offsets for x, y in zip(a, b))
    return {
        "vocab_full": before.get_vocab_size(),
        "vocab_pruned": after.get_vocab_size(),
        "tokenizer_probes": len(probes),
        "tokenizer_probes_differing": differ,
    }


def sizes(pipeline: Path, encoder: Path) -> Dict[str, Any]:
    """Bytes on disk: the pipeline, its largest parts, and the encoder folder."""
    files = {p.relative_to(pipeline).as_posix(): p.stat().st_size
             for p in pipeline.rglob("*") if p.is_file()}
    config = json.loads((encoder / "config.json").read_text(encoding="utf8"))
    return {
        "pipeline_bytes": sum(files.values()),
        "largest_files": dict(sorted(files.items(), key=lambda kv: -kv[1])[:3]),
        "word_embedding_bytes": config["vocab_size"] * config["hidden_size"] * 4,
        "vocab_size": config["vocab_size"],
        "encoder_folder_bytes": sum(p.stat().st_size for p in encoder.iterdir() if p.is_file()),
    }


def measure_in_subprocess(pipeline: Path, texts: Path, outputs: Path, threads: int) -> Dict:
    cmd = [sys.executable, "-m", "benchmarks.zh_speed", "--measure", str(pipeline), str(texts),
           str(outputs), "--threads", str(threads)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_outputs(full: Dict[str, Any], pruned: Dict[str, Any]) -> Dict[str, Any]:
    import numpy

    diff = max(float(numpy.abs(numpy.array(a) - numpy.array(b)).max())
               for a, b in zip(full["hidden"], pruned["hidden"]))
    score_diff = max((abs(a - b) for x, y in zip(full["scores"], pruned["scores"])
                      for a, b in zip(x, y)), default=0.0)
    return {
        "texts_compared": len(full["hidden"]),
        "tokens_equal": full["wordpieces"] == pruned["wordpieces"],
        "hidden_states_max_abs_diff": diff,
        "entities_equal": full["ents"] == pruned["ents"],
        "entity_scores_max_abs_diff": score_diff,
    }


def render(record: Dict[str, Any]) -> str:
    from .schema import machine_text, versions_text

    lines = [
        "# The zh pipeline on a CPU: speed, size, memory; pruned e5-small-zh (issue 13, item 4)",
        "",
        f"Date {record['date']}; {machine_text(record['machine'])}; "
        f"{versions_text(record['versions'])}.",
        f"Command: `{record['command']}`. Pipeline: {record['config']} (ChineseCharTokenizer, "
        "transformer, crf_ner), initialized, untrained (speed does not depend on the weights' "
        "values), saved with `nlp.to_disk` and measured in a fresh process. Texts: "
        f"{record['texts']}. 1-minute load average at the start {record['load_average']:.2f}. "
        f"{record['note']}",
        "",
    ]
    head = ["encoder", "torch threads", "vocab", "pipeline on disk (MB)",
            "word embeddings (MB)", "load (s)", "RSS after load (MB)",
            "peak RSS loading / processing (MB)"]
    head += [f"batch {b} chars/s (tokens/s)" for b in BATCH_SIZES]
    rows = []
    for variant, by_threads in record["runs"].items():
        size = record["sizes"][variant]
        for threads, run in by_threads.items():
            processing = run["peak_rss_processing_bytes"]
            rows.append([
                f"e5-small-zh{' --prune' if variant == 'pruned' else ''}",
                threads,
                f"{size['vocab_size']:,}",
                f"{size['pipeline_bytes'] / 1e6:.1f}",
                f"{size['word_embedding_bytes'] / 1e6:.1f}",
                f"{run['load_seconds']:.1f}",
                f"{run['rss_after_load_bytes'] / 1e6:.0f}",
                f"{run['peak_rss_loading_bytes'] / 1e6:.0f} / "
                + ("-" if processing is None else f"{processing / 1e6:.0f}"),
            ] + [f"{run['batches'][str(b)]['chars_per_second']:.0f} "
                 f"({run['batches'][str(b)]['tokens_per_second']:.0f})" for b in BATCH_SIZES])
    lines += table(head, rows, "l" + "r" * (len(head) - 1))
    full = record["sizes"]["full"]
    largest = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in
                        full["largest_files"].items())
    check = record["pruning_check"]
    lines += [
        "",
        f"Where the size goes (full): {largest}. The transformer's word embeddings alone "
        f"({full['vocab_size']:,} pieces x 384 x 4 bytes) are "
        f"{full['word_embedding_bytes'] / 1e6:.0f} MB of {full['pipeline_bytes'] / 1e6:.0f} MB. "
        "Installed, the pipeline's wheel unpacks all of it into site-packages/<package>/.",
        "",
        f"Pruning check: {check['tokenizer_probes']:,} tokenizer probes (every piece of the full "
        "vocabulary alone, after a space, between CJK characters and after a Latin letter, and "
        f"the timed texts): {check['tokenizer_probes_differing']} differ. On "
        f"{check['texts_compared']} texts: same wordpieces {check['tokens_equal']}, hidden "
        f"states max abs diff {check['hidden_states_max_abs_diff']:g}, same entities "
        f"{check['entities_equal']}, entity scores max abs diff "
        f"{check['entity_scores_max_abs_diff']:g}.",
        "",
    ]
    return "\n".join(lines)


def peak_rss_bytes() -> int:
    """The process's peak resident memory (VmHWM), or ru_maxrss off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5). RETURNS (bool): whether it was."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(pipeline: Path, texts_path: Path, outputs_path: Path, threads: int) -> Dict:
    """Load a pipeline and time it (in a fresh process); write its outputs on MIXED_TEXTS."""
    import spacy
    import torch

    torch.set_num_threads(threads)
    texts = json.loads(texts_path.read_text(encoding="utf8"))
    start = time.perf_counter()
    nlp = spacy.load(pipeline)
    load_seconds = time.perf_counter() - start
    rss_after_load, peak_load = rss_bytes(), peak_rss_bytes()
    reset = reset_peak_rss()
    batches = time_batches(nlp, texts)
    docs = list(nlp.pipe(MIXED_TEXTS, batch_size=len(MIXED_TEXTS)))
    spans_key = nlp.get_pipe("crf_ner").spans_key
    outputs = {
        "wordpieces": [doc._.trf_data.wordpieces.strings for doc in docs],
        "hidden": [doc._.trf_data.model_output.last_hidden_state.tolist() for doc in docs],
        "ents": [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs],
        "scores": [[float(x) for x in doc.spans[spans_key].attrs.get("scores", [])]
                   if spans_key in doc.spans else [] for doc in docs],
    }
    outputs_path.write_text(json.dumps(outputs), encoding="utf8")
    return {
        "load_seconds": load_seconds,
        "rss_after_load_bytes": rss_after_load,
        "peak_rss_loading_bytes": peak_load,
        "peak_rss_processing_bytes": peak_rss_bytes() if reset else None,
        "batches": batches,
    }


def time_batches(nlp: Any, texts: List[str]) -> Dict[str, Dict[str, float]]:
    """chars/s and tokens/s at each batch size (after a warm-up)."""
    out = {}
    list(nlp.pipe(texts[:WARMUP], batch_size=WARMUP))
    for batch_size in BATCH_SIZES:
        chunk = texts[WARMUP : WARMUP + N_TEXTS[batch_size]]
        start = time.perf_counter()
        if batch_size == 1:
            docs = [nlp(text) for text in chunk]
        else:
            docs = list(nlp.pipe(chunk, batch_size=batch_size))
        seconds = time.perf_counter() - start
        chars = sum(len(text) for text in chunk)
        tokens = sum(len(doc) for doc in docs)
        out[str(batch_size)] = {
            "texts": len(chunk),
            "chars": chars,
            "tokens": tokens,
            "seconds": seconds,
            "chars_per_second": chars / seconds,
            "tokens_per_second": tokens / seconds,
        }
    return out


if __name__ == "__main__":
    main()
