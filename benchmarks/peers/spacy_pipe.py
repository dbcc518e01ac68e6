"""spaCy pipelines (`crf`, `softmax`, `spacy_ner`): configs for `spacy train`, inference, scaling.

Training is `python -m spacy train CONFIG ...` itself (built by benchmarks.run); this module
derives the configs and runs the trained pipelines:

    python -m benchmarks.peers.spacy_pipe infer --data DATA --model MODEL --out DIR [--threads 2]
    python -m benchmarks.peers.spacy_pipe scale --data DATA --model MODEL --out DIR [--sizes ...]

The pipelines get the gold tokens (Doc(words, spaces)), never spaCy's tokenizer, so that every
system sees the same words.
"""
import time
from pathlib import Path
from typing import List, Sequence

from ..paths import ROOT
from .common import (int_list, read_split, run_steps, scaling_docs_words, set_threads,
                     time_and_write_predictions, write_json)

# The `ner` component of en_core_web_trf (spaCy's transformer recipe), on the same transformer.
SPACY_NER_COMPONENT = {
    "factory": "ner",
    "incorrect_spans_key": None,
    "moves": None,
    "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    "update_with_oracle_cut_size": 100,
    "model": {
        "@architectures": "spacy.TransitionBasedParser.v2",
        "state_type": "ner",
        "extra_state_tokens": False,
        "hidden_width": 64,
        "maxout_pieces": 2,
        "use_upper": False,
        "nO": None,
        "tok2vec": {
            "@architectures": "spacy-transformers.TransformerListener.v1",
            "grad_factor": 1.0,
            "pooling": {"@layers": "reduce_mean.v1"},
            "upstream": "*",
        },
    },
}
STOCK_TRANSFORMER = "spacy-transformers.TransformerModel.v3"
# v2 takes the config's token features if it has any (en_conll03.cfg), and is v1 otherwise
SOFTMAX_OVERRIDE = ("components.crf_ner.model.@architectures", "spacy-bert-crf.SoftmaxTagger.v2")
# --augment NAME: the training corpus's augmenter of the ablation config
# configs/ablations/en_conll03_NAME.cfg (its one home), on the dataset's config
AUGMENTERS = ("entity_swap", "token_mask")


def derive_spacy_ner_config(base: Path, output: Path) -> Path:
    """Write base's config with the crf_ner component replaced by spaCy's transition-based `ner`
    and the transformer by spacy-transformers' own TransformerModel.v3 (same weights, tokenizer
    and windows; training and corpora unchanged): the pipeline a spaCy user builds without us."""
    from thinc.api import Config

    cfg = Config().from_disk(base, interpolate=False)
    cfg["nlp"]["pipeline"] = ["transformer" if p == "transformer" else "ner"
                              for p in cfg["nlp"]["pipeline"]]
    components = cfg["components"]
    old = [name for name, c in components.items() if c.get("factory") == "crf_ner"]
    for name in old:
        del components[name]
        cfg["initialize"]["components"].pop(name, None)
    components["ner"] = SPACY_NER_COMPONENT
    # the stock transformer of en_core_web_trf, not our length-bucketed TransformerModel.v1
    trf = components["transformer"]["model"]
    trf["@architectures"] = STOCK_TRANSFORMER
    for arg in ("max_batch_pieces", "min_fill"):
        trf.pop(arg, None)
    output.parent.mkdir(parents=True, exist_ok=True)
    cfg.to_disk(output)
    return output


def derive_augmented_config(base: Path, output: Path, augment: str) -> Path:
    """Write base's config with the training-corpus augmenter of the ablation config
    configs/ablations/en_conll03_<augment>.cfg (everything else unchanged)."""
    from thinc.api import Config

    if augment not in AUGMENTERS:
        raise ValueError(f"Unknown augmenter {augment!r}: expected one of {list(AUGMENTERS)}")
    ablation = ROOT / "configs" / "ablations" / f"en_conll03_{augment}.cfg"
    cfg = Config().from_disk(base, interpolate=False)
    augmenter = Config().from_disk(ablation, interpolate=False)["corpora"]["train"]["augmenter"]
    cfg["corpora"]["train"]["augmenter"] = augmenter
    output.parent.mkdir(parents=True, exist_ok=True)
    cfg.to_disk(output)
    return output


def schedule_overrides(config: Path, train_words: List[List[str]], epochs: int) -> dict:
    """warmup_linear overrides that fit the schedule to the budget: total_steps = the number of
    batches in `epochs` epochs (counted with the config's own batcher), warmup_steps in the
    config's proportion. RETURNS (dict): {override: value, "steps_per_epoch": n}."""
    from spacy.util import load_config, registry

    cfg = load_config(config, interpolate=True)
    batcher = registry.resolve({"b": cfg["training"]["batcher"]})["b"]
    steps = sum(1 for _ in batcher(train_words))
    sched = cfg["training"]["optimizer"]["learn_rate"]
    # the config's own total_steps: its step budget, when it is tied to max_steps
    out = {"steps_per_epoch": steps, "config_total_steps": sched.get("total_steps")}
    if sched.get("@schedules", "").startswith("warmup_linear"):
        total = max(1, steps * epochs)
        ratio = sched["warmup_steps"] / max(1, sched["total_steps"])
        out["training.optimizer.learn_rate.total_steps"] = total
        out["training.optimizer.learn_rate.warmup_steps"] = max(1, round(total * ratio))
    return out


def _docs(nlp, rows: Sequence[dict]):
    from spacy.tokens import Doc

    return [Doc(nlp.vocab, words=r["words"], spaces=r["spaces"]) for r in rows]


def predictor(model):
    """RETURNS (Callable[[rows, batch_size], entities per row]): nlp.pipe over the gold words."""
    import spacy

    nlp = spacy.load(model)

    def predict(rows, bs):
        return [[(e.start, e.end, e.label_) for e in doc.ents]
                for doc in nlp.pipe(_docs(nlp, rows), batch_size=bs)]

    predict.pipe_names = nlp.pipe_names
    return predict


def infer(args) -> None:
    threads = set_threads(args.threads)
    predict = predictor(args.model)
    time_and_write_predictions(args, predict, threads=threads, pipeline=predict.pipe_names)


def scale(args) -> None:
    import spacy
    from spacy.tokens import Doc

    threads = set_threads(args.threads)
    nlp = spacy.load(args.model)
    test = read_split(args.data, "test")
    sizes = int_list(args.sizes)
    nlp(Doc(nlp.vocab, words=scaling_docs_words(test, min(sizes))))  # warm-up
    rows = {}
    for size in sizes:
        doc = Doc(nlp.vocab, words=scaling_docs_words(test, size))
        start = time.perf_counter()
        doc = nlp(doc)
        seconds = time.perf_counter() - start
        rows[str(size)] = {"tokens": len(doc), "seconds": seconds,
                           "us_per_token": 1e6 * seconds / len(doc), "ents": len(doc.ents)}
        print(f"{size} tokens: {seconds:.2f}s = {rows[str(size)]['us_per_token']:.0f} us/token",
              flush=True)
        write_json(args.out / "scale.json", {"sizes": rows, "threads": threads})


def main() -> None:
    run_steps(__doc__.split("\n")[0], {"infer": infer, "scale": scale},
              "spaCy pipelines are trained with `python -m spacy train` (benchmarks.run)")


if __name__ == "__main__":
    main()
