"""What issue 16's features cost: n-best and candidate spans against crf_ner's own decoding.

    python -m benchmarks.nbest MODEL CORPUS [--k 5] [--docs 2000] [--long 25000,50000,100000]
        [--repeats 3] [--long-repeats 3] [--tag NAME] [--note TEXT]

MODEL is a trained pipeline with a crf_ner component, CORPUS a .spacy file (its texts are used).

- decode vs nbest: the emissions of CORPUS's first --docs docs are computed once (upstream
  components and the tagger head), then the CRF decoding the pipe runs (`decoding.decode`:
  Viterbi and the entities' confidences) and `decoding.nbest` at k are timed on the same batches
  (batch 64), interleaved, median of --repeats. Each is timed by the wall clock and by the CPU
  time of the thread that runs it (both decodings run in the calling thread, torch at 1
  thread): on a machine shared with other work the CPU time is the steadier measure of what a
  decoding costs, the wall clock what it took there. The load average at the start and the end
  is recorded with the results.
- long docs: the corpus's docs joined into docs of --long tokens; decode and nbest time (median
  of --long-repeats), and the peak of memory numpy allocates during each (tracemalloc), per
  length: linear if the time per token stays flat.
- candidates: pipeline words/s over the --docs texts with and without candidates_key
  (candidates_threshold 0.1, candidates_max_length 16), interleaved, median of --repeats.

Writes benchmarks/results/nbest[_TAG].json and .md.

The two stand-ins the committed results use (made outside the repository, data never in it):
- minilm-step0: configs/en_conll03.cfg with the offline MiniLM-L6 encoder, initialized on the
  CoNLL-2003 train corpus (spacy.training.initialize.init_nlp: labels, pretrained encoder) and
  saved untrained: the CRF head is uncertain everywhere, the worst case for the pruned k-best.
- light-conll: tests/util.py's make_light_nlp (hash embeddings + CNN tok2vec, no transformer),
  trained 3 epochs (batches of 32, Adam 0.001) on the first 6000 non-empty CoNLL-2003 train
  sentences: confident emissions, like a trained model's.
"""
import argparse
import gc
import os
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import RESULTS, portable_path
from .peers.common import write_json

BATCH = 64


def timed(fn: Callable[[], object]) -> Tuple[float, float]:
    """Seconds fn takes by the wall clock, and in CPU time of the calling thread."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak memory allocated (numpy included) while fn runs, above what was allocated before."""
    gc.collect()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def inputs_of(pipe, docs) -> List[Tuple]:
    """(emissions, allowed, tags) per batch of 64 docs, computed once."""
    out = []
    for start in range(0, len(docs), BATCH):
        found = pipe._decoding_inputs(docs[start : start + BATCH])
        if found is not None:
            emissions, allowed, inventory = found
            out.append((emissions, allowed, inventory.tags))
    return out


def decode_vs_nbest(pipe, batches, k: int, repeats: int) -> Dict[str, float]:
    from spacy_bert_crf.decoding import decode, nbest

    def run_decode():
        for emissions, allowed, tags in batches:
            decode(pipe.model, emissions, allowed, tags, pipe.scheme, with_scores=True)

    def run_nbest():
        for emissions, allowed, tags in batches:
            nbest(pipe.model, emissions, allowed, tags, pipe.scheme, k)

    run_decode(), run_nbest()  # warm up
    times: Dict[str, List[Tuple[float, float]]] = {"decode": [], "nbest": []}
    for _ in range(repeats):
        times["decode"].append(timed(run_decode))
        times["nbest"].append(timed(run_nbest))
    decode_s, nbest_s = (statistics.median(t[0] for t in times[name])
                         for name in ("decode", "nbest"))
    decode_cpu, nbest_cpu = (statistics.median(t[1] for t in times[name])
                             for name in ("decode", "nbest"))
    n_tokens = sum(len(e) for emissions, _, _ in batches for e in emissions)
    return {
        "tokens": n_tokens,
        "decode_s": decode_s,
        "nbest_s": nbest_s,
        "nbest_over_decode": nbest_s / decode_s,
        "decode_cpu_s": decode_cpu,
        "nbest_cpu_s": nbest_cpu,
        "nbest_over_decode_cpu": nbest_cpu / decode_cpu,
        "decode_peak_mib": peak_bytes(run_decode) / 2**20,
        "nbest_peak_mib": peak_bytes(run_nbest) / 2**20,
    }


def long_docs(
    nlp, pipe, texts: List[str], lengths: List[int], k: int, repeats: int
) -> List[dict]:
    from spacy.tokens import Doc

    docs = [nlp.make_doc(text) for text in texts]
    before = [proc for name, proc in nlp.pipeline[: nlp.pipe_names.index(pipe.name)]]
    rows = []
    for length in lengths:
        parts, n = [], 0
        while n < length:
            for doc in docs:
                parts.append(doc)
                n += len(doc)
                if n >= length:
                    break
        doc = Doc.from_docs(parts, ensure_whitespace=True)
        doc = Doc(nlp.vocab, words=[t.text for t in doc][:length],
                  spaces=[bool(t.whitespace_) for t in doc][:length])
        for proc in before:
            doc = proc(doc)
        batches = inputs_of(pipe, [doc])
        result = decode_vs_nbest(pipe, batches, k, repeats)
        result["ms_per_1k_tokens_nbest"] = 1e3 * result["nbest_s"] / (len(doc) / 1000)
        rows.append(result)
    return rows


def candidates_cost(nlp, pipe, texts: List[str], repeats: int) -> Dict[str, float]:
    def words_per_second(key: Optional[str]) -> float:
        pipe.candidates_key = key
        start = time.perf_counter()
        n = sum(len(doc) for doc in nlp.pipe(texts, batch_size=BATCH))
        return n / (time.perf_counter() - start)

    old = (pipe.candidates_key, pipe.candidates_threshold, pipe.candidates_max_length)
    pipe.candidates_threshold, pipe.candidates_max_length = 0.1, 16
    try:
        words_per_second(None)  # warm up
        plain, with_candidates = [], []
        for _ in range(repeats):
            plain.append(words_per_second(None))
            with_candidates.append(words_per_second("candidates"))
    finally:
        pipe.candidates_key, pipe.candidates_threshold, pipe.candidates_max_length = old
    a, b = statistics.median(plain), statistics.median(with_candidates)
    return {"words_per_second": a, "words_per_second_with_candidates": b,
            "slowdown": 1 - b / a}


def render(data: dict) -> str:
    s = data["sentences"]
    load = data["load"]
    lines = [
        "# n-best and candidate spans vs crf_ner's decoding",
        "",
        f"Date {data['date']}; {data['machine_text']}; model `{data['model']}` "
        f"({data['model_note']}); corpus `{data['corpus']}`. Command: `{data['command']}`.",
        "",
        f"Machine load (1-minute load average on {data['machine']['cores']} cores): "
        f"{load['start']:.2f} at the start, {load['end']:.2f} at the end; the benchmark ran at "
        f"niceness {load['niceness']}. Times are medians, by the wall clock and in CPU time "
        "of the decoding thread (the steadier one on a shared machine).",
        "",
        f"## Sentence batches ({s['tokens']} tokens, batches of {BATCH}, k = {data['k']})",
        "",
    ]
    lines += table(
        ["decode (s)", f"nbest k={data['k']} (s)", "nbest / decode", "decode CPU (s)",
         "nbest CPU (s)", "nbest / decode, CPU", "decode peak MiB", "nbest peak MiB"],
        [[f"{s['decode_s']:.3f}", f"{s['nbest_s']:.3f}", f"{s['nbest_over_decode']:.2f}",
          f"{s['decode_cpu_s']:.3f}", f"{s['nbest_cpu_s']:.3f}",
          f"{s['nbest_over_decode_cpu']:.2f}",
          f"{s['decode_peak_mib']:.1f}", f"{s['nbest_peak_mib']:.1f}"]],
        "rrrrrrrr",
    )
    lines += ["", "## One long doc", ""]
    lines += table(
        ["tokens", "decode (s)", "nbest (s)", "nbest / decode", "nbest / decode, CPU",
         "nbest ms per 1k tokens", "nbest peak MiB"],
        [[r["tokens"], f"{r['decode_s']:.2f}", f"{r['nbest_s']:.2f}",
          f"{r['nbest_over_decode']:.2f}", f"{r['nbest_over_decode_cpu']:.2f}",
          f"{r['ms_per_1k_tokens_nbest']:.1f}", f"{r['nbest_peak_mib']:.1f}"]
         for r in data["long"]],
        "rrrrrrr",
    )
    c = data["candidates"]
    lines += [
        "", "## Candidate spans in the pipeline", "",
        f"words/s {c['words_per_second']:.0f} without, {c['words_per_second_with_candidates']:.0f} "
        f"with candidates (threshold 0.1, max length 16): {100 * c['slowdown']:.1f}% slower.",
        "",
        "decode = Viterbi + the entities' confidences (forward-backward), what crf_ner runs per "
        "batch; nbest = k-best Viterbi on the trellis pruned by max-marginals + log Z (forward). "
        "Times exclude the transformer.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--long", default="25000,50000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-repeats", type=int, default=3)
    parser.add_argument("--tag", default="", help="suffix of the results files")
    parser.add_argument("--note", default="", help="what the model is, for the report")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = parser.parse_args(argv)
    import spacy
    import torch
    from spacy.tokens import DocBin

    from spacy_bert_crf.calibration import find_pipe

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    nlp = spacy.load(args.model)
    _, pipe = find_pipe(nlp)
    texts = [d.text for d in DocBin().from_disk(args.corpus).get_docs(nlp.vocab) if len(d)]
    texts = texts[: args.docs]
    docs = list(nlp.pipe(texts, batch_size=BATCH, disable=[pipe.name]))
    machine = machine_info(torch.get_num_threads())
    model, corpus = (portable_path(str(path.resolve())) for path in (args.model, args.corpus))
    extra = "".join(f" --{name} {value}" for name, value in (("tag", args.tag),) if value)
    results = {
        "date": today(),
        "machine": machine,
        "machine_text": f"{machine['cpu']}, {machine['torch_threads']} torch thread(s)",
        "versions": package_versions(["torch", "spacy", "numpy"]),
        "command": f"python -m benchmarks.nbest {model} {corpus} --k {args.k} "
                   f"--docs {args.docs} --long {args.long} --repeats {args.repeats} "
                   f"--long-repeats {args.long_repeats}{extra}",
        "model": model,
        "model_note": args.note,
        "corpus": corpus,
        "k": args.k,
        "sentences": decode_vs_nbest(pipe, inputs_of(pipe, docs), args.k, args.repeats),
        "long": long_docs(nlp, pipe, texts, [int(x) for x in args.long.split(",")], args.k,
                          args.long_repeats),
        "candidates": candidates_cost(nlp, pipe, texts, args.repeats),
    }
    results["load"] = {"start": load_start, "end": os.getloadavg()[0], "niceness": os.nice(0)}
    name = f"nbest_{args.tag}" if args.tag else "nbest"
    write_json(args.out / f"{name}.json", results)
    markdown = render(results)
    (args.out / f"{name}.md").write_text(markdown, encoding="utf8")
    print(markdown)


if __name__ == "__main__":
    main()
