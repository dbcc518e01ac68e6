"""What every peer shares: the data and prediction files, IOB2 tags, timing. Standard library only,
so that the peers run in other environments (Flair's own virtualenv) without this package.

Files written by `benchmarks.run` for each split (train, dev, test), one JSON object per line:
    data/<split>.jsonl   {"doc": i, "words": [...], "spaces": [...], "ents": [[start, end, label]]}
Files written by a peer's `infer` step:
    pred-<split>.jsonl   {"doc": i, "ents": [[start, end, label], ...]}
    infer.json           {"speed": {"1": {...}, "64": {...}}, "threads": N, ...}
Token offsets are those of `words`; `end` is exclusive (as in spaCy's Span.end).
"""
import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

Entity = Tuple[int, int, str]
SPLITS = ("train", "dev", "test")


def read_jsonl(path: Path) -> List[dict]:
    with Path(path).open(encoding="utf8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: Path, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    os.replace(tmp, path)


def read_split(data_dir: Path, split: str) -> List[dict]:
    return read_jsonl(Path(data_dir) / f"{split}.jsonl")


def write_predictions(path: Path, ents_per_doc: Sequence[Sequence[Entity]]) -> None:
    write_jsonl(path, ({"doc": i, "ents": [list(e) for e in ents]}
                       for i, ents in enumerate(ents_per_doc)))


def ents_to_iob2(n_words: int, ents: Iterable[Sequence]) -> List[str]:
    """IOB2 tags for non-overlapping entities [start, end, label] over n_words tokens: what
    spacy_bert_crf.tag_schemes.spans_to_tags(n_words, ents, "BIO") gives (tests/test_tag_schemes.py
    checks it), written out here because Flair's virtualenv cannot import the package."""
    tags = ["O"] * n_words
    for start, end, label in ents:
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
    return tags


def labels_of(docs: Iterable[dict]) -> List[str]:
    return sorted({e[2] for d in docs for e in d["ents"]})


def set_threads(threads: int) -> int:
    import torch

    torch.set_num_threads(threads)
    return torch.get_num_threads()


def time_passes(
    docs: Sequence, predict: Callable[[Sequence, int], List], batch_sizes: Sequence[int],
    n_words: Callable[[Sequence], int], *, limit_b1: int = 0, warm_docs: int = 64,
) -> Tuple[Dict[str, dict], Dict[int, List]]:
    """Time predict(docs, batch_size) for each batch size after a warm-up pass over the first
    warm_docs docs at the same batch size. limit_b1 > 0 times batch size 1 on the first
    limit_b1 docs only. RETURNS: ({str(batch_size): timing}, {batch_size: outputs})."""
    speed, outputs = {}, {}
    for bs in batch_sizes:
        subset = docs[:limit_b1] if bs == 1 and limit_b1 > 0 else docs
        predict(subset[:warm_docs], bs)
        start = time.perf_counter()
        out = predict(subset, bs)
        seconds = time.perf_counter() - start
        words = n_words(subset)
        speed[str(bs)] = {"seconds": seconds, "docs": len(subset), "words": words,
                          "words_per_second": words / seconds if seconds > 0 else None}
        outputs[bs] = out
        print(f"batch {bs}: {len(subset)} docs, {words} words in {seconds:.2f}s "
              f"= {speed[str(bs)]['words_per_second']:,.0f} words/s", flush=True)
    return speed, outputs


def scaling_docs_words(docs: Sequence[dict], size: int) -> List[str]:
    """size words taken from the docs in order, cycling: one long 'document'."""
    words: List[str] = []
    while len(words) < size:
        for d in docs:
            words.extend(d["words"])
            if len(words) >= size:
                break
    return words[:size]


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="step", required=True)
    steps = {}
    for step in ("train", "infer", "scale"):
        steps[step] = p = sub.add_parser(step)
        p.add_argument("--data", type=Path, required=True)
        p.add_argument("--encoder" if step == "train" else "--model", type=Path, required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--threads", type=int, default=2)
    steps["train"].add_argument("--epochs", type=int, default=2)
    steps["train"].add_argument("--seed", type=int, default=0)
    steps["infer"].add_argument("--batch-sizes", default="1,64")
    steps["infer"].add_argument("--limit-b1", type=int, default=0,
                                help="time batch 1 on the first N docs")
    steps["scale"].add_argument("--sizes", default="1000,10000,100000")
    return parser


def run_steps(description: str, steps: Dict[str, Callable], unsupported: str) -> None:
    """Parse the command line (base_parser) and run the step's function, or exit with
    `unsupported` for a step this system does not have."""
    args = base_parser(description).parse_args()
    if args.step not in steps:
        raise SystemExit(unsupported)
    steps[args.step](args)


def time_and_write_predictions(args, predict: Callable[[Sequence, int], List], **info) -> None:
    """The inference step of a tagging system: time predict on the test split (time_passes),
    write pred-test.jsonl and pred-dev.jsonl (batch 64) and infer.json (speeds + info)."""
    test = read_split(args.data, "test")
    speed, outputs = time_passes(test, predict, int_list(args.batch_sizes),
                                 lambda rows: sum(len(r["words"]) for r in rows),
                                 limit_b1=args.limit_b1)
    largest = max(outputs)
    preds = outputs[largest] if len(outputs[largest]) == len(test) else predict(test, 64)
    write_predictions(args.out / "pred-test.jsonl", preds)
    write_predictions(args.out / "pred-dev.jsonl", predict(read_split(args.data, "dev"), 64))
    write_json(args.out / "infer.json", {"speed": speed, **info})


def int_list(text: str) -> List[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]
