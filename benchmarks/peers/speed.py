"""Inference speed of several systems in one process, interleaved: ratios that machine noise
cannot skew.

    python -m benchmarks.peers.speed --data DATA --system raw=ENCODER --system crf=MODEL ...
        --out DIR [--rounds 3] [--batch-sizes 1,64] [--limit-b1 300] [--threads 2]

Systems: raw (the encoder folder: tokenizer + forward pass), crf / softmax / spacy_ner (a spaCy
pipeline, nlp.pipe over the gold words) and hf (the token-classification pipeline); Flair lives
in its own virtualenv and is timed by its own infer step only. Every model is loaded once and
warmed up; then, in each round, every system makes one timed pass over the test sentences per
batch size (batch 1 on the first --limit-b1 sentences), the order of the systems rotating from
round to round, and the raw encoder one more pass at the largest batch size over the sentences
sorted by length (the least padding). Writes speed.json: per system and batch size the words/s
of every round, their median, and the median over rounds of the ratio to the raw encoder's pass
in the same round.
"""
import argparse
import statistics
import time
from pathlib import Path

from .common import int_list, read_split, set_threads, write_json

LOADERS = {"raw": "raw_encoder", "crf": "spacy_pipe", "softmax": "spacy_pipe",
           "spacy_ner": "spacy_pipe", "hf": "hf_tagger"}
SORTED = "raw_sorted_by_length"


def load(system: str, model: Path):
    import importlib

    return importlib.import_module(f"benchmarks.peers.{LOADERS[system]}").predictor(model)


def measure(args) -> dict:
    threads = set_threads(args.threads)
    test = read_split(args.data, "test")
    by_length = sorted(test, key=lambda r: len(r["words"]))
    batch_sizes = int_list(args.batch_sizes)
    largest = max(batch_sizes)
    predictors = {name: load(name, model) for name, model in args.system}
    if "raw" not in predictors:
        raise SystemExit("--system raw=ENCODER is required: it is the reference of the ratios")
    passes = []  # (label, predictor, rows, batch size)
    for name, predict in predictors.items():
        for bs in batch_sizes:
            rows = test[: args.limit_b1] if bs == 1 and args.limit_b1 > 0 else test
            passes.append((name, predict, rows, bs))
    passes.append((SORTED, predictors["raw"], by_length, largest))
    for _, predict, rows, bs in passes:  # warm-up
        predict(rows[:64], bs)
    wps = {(label, bs): [] for label, _, _, bs in passes}
    for r in range(args.rounds):
        shift = r % len(passes)
        for label, predict, rows, bs in passes[shift:] + passes[:shift]:
            words = sum(len(row["words"]) for row in rows)
            start = time.perf_counter()
            predict(rows, bs)
            wps[label, bs].append(words / (time.perf_counter() - start))
        print(f"round {r + 1}: " + ", ".join(f"{label} b{bs} {v[-1]:,.0f}"
                                             for (label, bs), v in wps.items()), flush=True)
    systems = {}
    for (label, bs), values in wps.items():
        raw = wps["raw", bs] if label != SORTED else wps["raw", largest]
        entry = systems.setdefault(label, {"words_per_second": {}, "median": {},
                                           "ratio_to_raw": {}})
        entry["words_per_second"][str(bs)] = values
        entry["median"][str(bs)] = statistics.median(values)
        entry["ratio_to_raw"][str(bs)] = statistics.median(v / w for v, w in zip(values, raw))
    return {"threads": threads, "rounds": args.rounds, "limit_b1": args.limit_b1,
            "batch_sizes": batch_sizes, "test_sentences": len(test),
            "models": {name: str(model) for name, model in args.system}, "systems": systems}


def system_arg(text: str):
    name, sep, model = text.partition("=")
    if not sep or name not in LOADERS:
        raise argparse.ArgumentTypeError(
            f"expected NAME=PATH with NAME one of {', '.join(LOADERS)}, got {text!r}")
    return name, Path(model)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--system", type=system_arg, action="append", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--limit-b1", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    write_json(args.out / "speed.json", measure(args))


if __name__ == "__main__":
    main()
