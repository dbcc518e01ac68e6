"""Training step time of crf_ner's CRF head against its softmax ablation, in one process.

    python -m benchmarks.peers.step_time --data DATA --encoder DIR --config CONFIG --out DIR
        [--steps 40] [--warmup 4] [--threads 2] [--seed 0]

Both pipelines are built from the same config (the softmax one with SoftmaxTagger.v2), with the
same seed, initialized on the same sentences and updated on the same batches (the config's own
batcher over a seeded shuffle of the train split), in alternating order (crf then softmax, then
softmax then crf, ...) so that the machine's noise falls on both alike. One step is
`nlp.update(batch, sgd=optimizer, drop=dropout)`: forward, loss, backward through the
transformer and the optimizer update, as in `spacy train`. Writes step_time.json with each
head's median and mean milliseconds per step and the ratio crf / softmax of the medians (the
target is at most 1.10).
"""
import argparse
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .common import set_threads, write_json
from .spacy_pipe import SOFTMAX_OVERRIDE

HEADS = ("crf", "softmax")


def build(config: Path, overrides: dict, seed: int):
    import spacy
    from spacy.util import load_config
    from thinc.api import fix_random_seed

    # interpolated: nlp.initialize() builds the optimizer from nlp.config, whose schedules may
    # name ${training.max_steps}
    cfg = load_config(config, overrides=overrides, interpolate=True)
    fix_random_seed(seed)
    return spacy.util.load_model_from_config(cfg, auto_fill=True, validate=True)


def paired_step_seconds(
    config: Path, overrides: dict, variants: Dict[str, dict], train_path: Path, steps: int,
    warmup: int, seed: int, prepare: Optional[Callable[[str, Any], None]] = None,
    sync: Optional[Callable[[], None]] = None,
) -> Tuple[Dict[str, List[float]], List[int], Dict[str, Any]]:
    """Seconds per training step of each variant of one config (its own extra overrides), in
    this process: built with the same seed, initialized on the same sentences, updated on the
    same batches (the config's batcher over a seeded shuffle of train_path, again from the start
    when it runs out) in alternating order; the first `warmup` steps are not counted. Also
    benchmarks/train_step.py's. `prepare(name, nlp)`, if given, is called on each variant's
    pipeline once it is built (settings that are not in the config). `sync`, if given, is
    called before and after each timed step (torch.cuda.synchronize on a GPU, whose work is
    queued).

    RETURNS: seconds per counted step of each variant, words per counted batch, and the
        variants' pipelines.
    """
    import itertools

    from spacy.training import Corpus
    from spacy.util import registry

    pipes: Dict[str, Any] = {}
    batches: List[List[int]] = []
    for name, extra in variants.items():
        nlp = build(config, {**overrides, **extra}, seed)
        if prepare is not None:
            prepare(name, nlp)
        cfg = nlp.config  # auto-filled: the batcher's defaults too
        examples = list(Corpus(train_path)(nlp))
        if not examples:
            raise SystemExit(f"{train_path}: no training docs")
        if not batches:  # the same batches (as indices into the train split) for all
            order = list(range(len(examples)))
            random.Random(seed).shuffle(order)
            position = {id(examples[i]): i for i in order}
            batcher = registry.resolve({"b": cfg["training"]["batcher"]})["b"]
            stream = itertools.chain.from_iterable(
                batcher([examples[i] for i in order]) for _ in itertools.count())
            batches = [[position[id(eg)] for eg in batch]
                       for batch in itertools.islice(stream, warmup + steps)]
        optimizer = nlp.initialize(lambda: examples[:2000])
        pipes[name] = (nlp, examples, optimizer, cfg["training"]["dropout"])
    times: Dict[str, List[float]] = {name: [] for name in variants}
    names = tuple(variants)
    for step, batch in enumerate(batches):
        for name in (names if step % 2 == 0 else names[::-1]):
            nlp, examples, optimizer, dropout = pipes[name]
            egs = [examples[i] for i in batch]
            if sync is not None:
                sync()
            start = time.perf_counter()
            nlp.update(egs, sgd=optimizer, drop=dropout, losses={})
            if sync is not None:
                sync()
            seconds = time.perf_counter() - start
            if step >= warmup:
                times[name].append(seconds)
    examples = next(iter(pipes.values()))[1]
    words = [sum(len(examples[i].reference) for i in batch) for batch in batches[warmup:]]
    return times, words, {name: pipe[0] for name, pipe in pipes.items()}


def measure(args) -> dict:
    threads = set_threads(args.threads)
    train_path = args.data / "train.spacy"
    overrides = {"paths.transformer": str(args.encoder), "paths.train": str(train_path),
                 "paths.dev": str(args.data / "dev.spacy"), "system.seed": args.seed}
    variants = {"crf": {}, "softmax": {SOFTMAX_OVERRIDE[0]: SOFTMAX_OVERRIDE[1]}}
    times, words, _ = paired_step_seconds(args.config, overrides, variants, train_path,
                                          args.steps, args.warmup, args.seed)
    result = {"threads": threads, "steps": args.steps, "warmup": args.warmup, "seed": args.seed,
              "words_per_batch": statistics.mean(words), "config": str(args.config)}
    for head in HEADS:
        ms = [1000 * s for s in times[head]]
        result[head] = {"median_ms": statistics.median(ms), "mean_ms": statistics.mean(ms),
                        "ms": ms}
    result["ratio"] = result["crf"]["median_ms"] / result["softmax"]["median_ms"]
    result["paired_ratio_median"] = statistics.median(
        c / s for c, s in zip(times["crf"], times["softmax"]))
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder with train.spacy and dev.spacy")
    p.add_argument("--encoder", type=Path, required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be at least 1 and --warmup at least 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    result = measure(args)
    write_json(args.out / "step_time.json", result)
    print(f"crf {result['crf']['median_ms']:.0f} ms, "
          f"softmax {result['softmax']['median_ms']:.0f} ms per step (median of {args.steps}); "
          f"ratio {result['ratio']:.3f}", flush=True)


if __name__ == "__main__":
    main()
