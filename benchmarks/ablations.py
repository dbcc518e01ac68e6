"""The fine-tuning options of issue 15 against one reference recipe, on CoNLL-2003, one budget.

    python -m benchmarks.ablations [--options baseline,layerwise,...] [--seeds 0,1]
        [--encoder encoders/minilm-l6] [--threads 1] [--max-steps -1]
        [--teacher TEACHER_DIR] [--data-dir ../shared/data/conll2003]
        [--work benchmarks/.work/ablations] [--out benchmarks/results/ablations]
    python -m benchmarks.ablations --render-only

Each option is a shipped config (or the reference recipe on another corpus, with a setting
overridden, or distilled from a teacher); the reference, option `baseline`, is the CoNLL recipe
of 2026-12-02 (configs/ablations/en_conll03_mean_loss.cfg); the shipped recipe
(configs/en_conll03.cfg) is option `case_features`, which adds case features to option
`summed_loss`. Every option trains
with the same encoder, the same steps (the config's training.max_steps, about 2 epochs, unless
--max-steps, or the option's own budget) and the same batcher, and is scored the same way:
its model-best (chosen on dev F1, as `spacy train` ships it) on dev and test, on the gold
tokenization, one scorer (spacy_bert_crf.evaluate). Every training is
`python -m spacy_bert_crf train ... --resume` (or `distill ... --resume`), so an interrupted
run continues where it stopped; a finished one (WORK/<option>-s<seed>/done.json) is not redone.

One results file per option and seed, OUT/<option>-s<seed>.json (<option>-<encoder>-s<seed>.json
on an encoder other than minilm-l6; runs in parallel processes do not share a file);
OUT/ablations.md is rendered from all of them.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .machine import machine_info, package_versions, today
from .markdown import table
from .paths import DATA_DIR, RESULTS, ROOT, WORK, portable, rel
from .schema import AblationRun, check, load_results, machine_text, save_results, versions_text

OUT = RESULTS / "ablations"
REPORT = "ablations.md"
SPLITS = ("train", "dev", "test")
LABELS = ("LOC", "MISC", "ORG", "PER")
DEFAULT_ENCODER = "minilm-l6"


@dataclass(frozen=True)
class Option:
    name: str
    config: str  # relative to the repository
    what: str
    # "sentences"; "documents": one Doc per -DOCSTART- document; "sentencesN": N consecutive
    # sentences of a document per Doc (convert -n N)
    corpus: str = "sentences"
    distill_weight: float = 0.0  # > 0: taught by --teacher with this distill_weight
    max_steps: int = 0  # > 0: this budget instead of the config's (or --max-steps)
    # settings of the config overridden on the command line: ((dotted key, value), ...)
    overrides: Tuple[Tuple[str, str], ...] = ()


OPTIONS = (
    Option("baseline", "configs/ablations/en_conll03_mean_loss.cfg",
           "the recipe before 2026-12-03 (crf_ner's loss a mean over tokens): the reference"),
    Option("layerwise", "configs/ablations/en_conll03_layerwise.cfg",
           "layer-wise learning rates (LayerwiseAdamW.v1: decay 0.9 a layer, head 10x)"),
    Option("documents", "configs/ablations/en_conll03_mean_loss.cfg",
           "document context: trained and scored on whole -DOCSTART- documents (convert --docs)",
           corpus="documents"),
    Option("context4", "configs/en_conll03.cfg",
           "the shipped recipe (case_features) with sentence context: trained and scored on 4 "
           "consecutive sentences of a document per Doc (convert -n 4); compare with "
           "case_features", corpus="sentences4"),
    Option("entity_swap", "configs/ablations/en_conll03_entity_swap.cfg",
           "mention swap augmenter (entity_swap.v1, half the examples)"),
    Option("token_mask", "configs/ablations/en_conll03_token_mask.cfg",
           "token masking augmenter (token_mask.v1, 10% of tokens in half the examples)"),
    Option("summed_loss", "configs/ablations/en_conll03_summed_loss.cfg",
           "crf_ner's loss summed over tokens (normalize_loss = false), not a mean"),
    Option("case_features", "configs/en_conll03.cfg",
           "summed_loss with case features (CRFTagger.v2): each token's transformer vector "
           "concatenated with a 64-wide embedding of its shape (token.shape_); compare with "
           "summed_loss. The shipped recipe since 2026-12-03"),
    Option("multitask", "configs/en_conll03_multitask.cfg",
           "multi-task: spaCy's tagger on the POS column, on the shared transformer (both "
           "losses summed over tokens: crf_ner normalize_loss = false)"),
    Option("multitask_mean", "configs/ablations/en_conll03_multitask_mean.cfg",
           "multi-task as above with crf_ner's default loss, a mean over tokens, next to the "
           "tagger's sum"),
    Option("distill", "configs/ablations/en_conll03_mean_loss.cfg",
           "distilled from a teacher pipeline (--teacher; gold NLL + 1.0 x KL to its marginals)",
           distill_weight=1.0),
    Option("distill_w3", "configs/ablations/en_conll03_mean_loss.cfg",
           "distilled as above, gold NLL + 3.0 x KL", distill_weight=3.0),
    Option("case_features_distill", "configs/en_conll03.cfg",
           "the shipped recipe (case_features) distilled from a teacher pipeline of the same "
           "recipe (--teacher; gold NLL + 3.0 x KL to its marginals)", distill_weight=3.0),
    Option("case_features_long", "configs/en_conll03.cfg",
           "the shipped recipe (case_features) trained twice as long: 1,800 steps, about 4 "
           "epochs, its schedule stretched to the budget; compare with case_features",
           max_steps=1800),
    Option("context4_long", "configs/en_conll03.cfg",
           "context4 trained twice as long: 4 consecutive sentences of a document per Doc, "
           "1,800 steps, its schedule stretched to the budget; compare with context4 and "
           "case_features_long", corpus="sentences4", max_steps=1800),
    Option("context4_3x", "configs/en_conll03.cfg",
           "context4 trained three times as long: 4 consecutive sentences of a document per "
           "Doc, 2,700 steps, about 6 epochs, its schedule stretched to the budget; compare "
           "with context4_long", corpus="sentences4", max_steps=2700),
    Option("averages", "configs/en_conll03.cfg",
           "the shipped recipe (case_features) with parameter averaging "
           "(training.optimizer.use_averages = true: dev scored and the models saved with the "
           "optimizer's moving averages of every weight, the encoder's included); compare with "
           "case_features", overrides=(("training.optimizer.use_averages", "true"),)),
)
BY_NAME = {option.name: option for option in OPTIONS}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--options", default=",".join(o.name for o in OPTIONS),
                        help=f"comma-separated, of {', '.join(BY_NAME)}")
    parser.add_argument("--seeds", default="0", help="comma-separated")
    parser.add_argument("--encoder", default=f"encoders/{DEFAULT_ENCODER}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=-1,
                        help="-1: the config's (an option with its own budget keeps it)")
    parser.add_argument("--teacher", default=None, help="trained pipeline, for distill")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR / "conll2003")
    parser.add_argument("--work", type=Path, default=WORK / "ablations")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    unknown = [name for name in args.options.split(",") if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown options {unknown}: choose from {', '.join(BY_NAME)}")
    distilled = [n for n in args.options.split(",") if n in BY_NAME and BY_NAME[n].distill_weight]
    if distilled and not args.render_only and not args.teacher:
        parser.error(f"{', '.join(distilled)} need --teacher (a trained pipeline)")
    return args


def corpus_dir(work: Path, option: Option) -> Path:
    return work / "corpus" / option.corpus


def convert_options(corpus: str) -> List[str]:
    """The `convert conll` options of a corpus kind (Option.corpus)."""
    if corpus == "sentences":
        return []
    if corpus == "documents":
        return ["--docs"]
    n = corpus[len("sentences"):]
    if not corpus.startswith("sentences") or not n.isdigit() or int(n) < 1:
        raise ValueError(f"unknown corpus kind {corpus!r}: sentences, documents or sentencesN")
    return ["-n", n]


def make_corpus(data_dir: Path, out: Path, corpus: str) -> None:
    """train/dev/test.spacy of a corpus kind from the CoNLL-2003 text files, unless there."""
    for split in SPLITS:
        if (out / f"{split}.spacy").exists():
            continue
        source = data_dir / f"{split}.txt"
        if not source.exists():
            raise SystemExit(f"{rel(source)} not found: --data-dir must hold CoNLL-2003 "
                             "train.txt, dev.txt and test.txt")
        cmd = [sys.executable, "-m", "spacy_bert_crf", "convert", "conll", str(source),
               str(out), "-q"] + convert_options(corpus)
        subprocess.run(cmd, check=True)


def n_layers(encoder: str) -> int:
    """The encoder's transformer layers (config.json), for the layer-wise optimizer."""
    config = Path(encoder) / "config.json"
    if not config.exists():
        raise SystemExit(f"{config}: not found (--encoder must be a local folder)")
    return int(json.loads(config.read_text(encoding="utf8"))["num_hidden_layers"])


def train_command(option: Option, seed: int, args: argparse.Namespace, out: Path) -> List[str]:
    """The training command line of one option and seed (the trained pipeline goes to out)."""
    corpus = corpus_dir(args.work, option)
    config = str(ROOT / option.config)
    if option.distill_weight:
        head = ["distill", str(args.teacher), config, str(out), "--distill-weight",
                str(option.distill_weight)]
    else:
        head = ["train", config, "--output", str(out)]
    cmd = [sys.executable, "-m", "spacy_bert_crf"] + head + [
        "--paths.train", str(corpus / "train.spacy"), "--paths.dev", str(corpus / "dev.spacy"),
        "--paths.transformer", str(args.encoder), "--system.seed", str(seed),
        "--resume", "--checkpoint-every", "100",
    ]
    if option.name == "layerwise":
        cmd += ["--training.optimizer.n_layers", str(n_layers(args.encoder))]
    for key, value in option.overrides:
        cmd += [f"--{key}", value]
    steps = option.max_steps or args.max_steps
    if steps > 0:
        cmd += ["--training.max_steps", str(steps)]
    return cmd


def train(option: Option, seed: int, args: argparse.Namespace, out: Path) -> Dict[str, object]:
    """Train (or resume) unless done; RETURNS the done record (seconds, threads, command)."""
    done = out / "done.json"
    if done.exists():
        return json.loads(done.read_text(encoding="utf8"))
    cmd = train_command(option, seed, args, out)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(args.threads)
    resumed = (out / "checkpoints").exists()  # an earlier process trained part of it
    out.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    with (out / "train.log").open("a", encoding="utf8") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    # a resumed run counts the time of this process only: say so in the note
    record = {"train_seconds": time.time() - start, "threads": args.threads,
              "command": " ".join(cmd), "resumed": resumed}
    done.write_text(json.dumps(record), encoding="utf8")
    return record


def scores(model: Path, corpus: Path, threads: int) -> Dict[str, Dict[str, object]]:
    """P/R/F overall and per type on dev and test, gold tokenization."""
    from .train_eval import evaluate_splits

    keep = ("ents_p", "ents_r", "ents_f", "ents_per_type", "n_docs", "n_tokens")
    out = {}
    for split, report in evaluate_splits(model, corpus, threads).items():
        out[split] = {key: report[key] for key in keep}
        # calibration of the entity confidences, at the pipeline's own temperature
        out[split]["ece"] = (report.get("confidence") or {}).get("ece")
    return out


def max_steps(model: Path) -> int:
    from spacy import util

    return int(util.load_config(model / "config.cfg", interpolate=True)["training"]["max_steps"])


def run_one(option: Option, seed: int, args: argparse.Namespace) -> AblationRun:
    out = args.work / f"{option.name}-s{seed}"
    make_corpus(args.data_dir, corpus_dir(args.work, option), option.corpus)
    done = train(option, seed, args, out)
    model = out / "model-best"
    note = "resumed from a checkpoint: train time counts the last process only" \
        if done.get("resumed") else ""
    record: AblationRun = {
        "option": option.name, "seed": seed, "config": option.config, "corpus": option.corpus,
        "encoder": rel(args.encoder) if Path(args.encoder).exists() else args.encoder,
        "steps": max_steps(model), "threads": int(done["threads"]),  # type: ignore[call-overload]
        "train_seconds": done.get("train_seconds"),  # type: ignore[typeddict-item]
        "command": portable(str(done["command"])),
        "machine": machine_info(int(done["threads"])),  # type: ignore[call-overload]
        "versions": package_versions(), "date": today(),
        "scores": scores(model, corpus_dir(args.work, option), args.threads),
    }
    if note:
        record["note"] = note
    save_results(args.out / results_name(option, seed, args.encoder), record)
    return record


def results_name(option: Option, seed: int, encoder: Union[str, Path]) -> str:
    """<option>-s<seed>.json on the default encoder (minilm-l6), <option>-<encoder>-s<seed>.json
    on another, so that runs of one option on two encoders keep their own files."""
    name = Path(encoder).name
    return f"{option.name}-s{seed}.json" if name == DEFAULT_ENCODER else \
        f"{option.name}-{name}-s{seed}.json"


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def load_runs(folder: Path) -> List[AblationRun]:
    runs = []
    for path in sorted(folder.glob("*-s*.json")):
        record = load_results(path)
        check(record, AblationRun, rel(path))
        runs.append(record)
    return runs


def _machines_text(runs: List[Dict[str, Any]]) -> str:
    """"Machine: X", or, when the runs came from several, the one most ran on and the runs of
    each other one."""
    by_machine: Dict[str, List[str]] = {}
    for r in runs:
        name = f"{r['option']} seed {r['seed']}"
        by_machine.setdefault(machine_text(r["machine"]), []).append(name)
    if len(by_machine) == 1:
        return f"Machine: {next(iter(by_machine))}"
    main = max(by_machine, key=lambda m: len(by_machine[m]))
    others = "; ".join(f"{m}: {', '.join(names)}" for m, names in by_machine.items() if m != main)
    return f"Machines: {main}, except {others}"


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _f(run: AblationRun, split: str) -> float:
    return 100 * float(run["scores"][split]["ents_f"])


def _type_f(runs: Sequence[AblationRun], label: str) -> str:
    values = [100 * float(r["scores"]["test"]["ents_per_type"][label]["f"]) for r in runs
              if label in r["scores"]["test"]["ents_per_type"]]
    return f"{statistics.mean(values):.2f}" if values else ""


def _ece(runs: Sequence[AblationRun]) -> str:
    values = [r["scores"]["test"].get("ece") for r in runs]
    known = [float(v) for v in values if v is not None]
    return f"{statistics.mean(known):.3f}" if known and len(known) == len(values) else ""


def render(runs: Sequence[AblationRun]) -> str:
    """The ablation table (one row per option and encoder, over its seeds) and the runs."""
    groups: Dict[tuple, List[AblationRun]] = {}
    for run in runs:
        groups.setdefault((run["encoder"], run["option"]), []).append(run)
    order = {option.name: i for i, option in enumerate(OPTIONS)}
    rows = []
    for (encoder, name), group in sorted(groups.items(),
                                         key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
        group = sorted(group, key=lambda r: r["seed"])
        tests = [_f(r, "test") for r in group]
        base = groups.get((encoder, "baseline"))
        delta = ""
        if base and name != "baseline":
            delta = f"{statistics.mean(tests) - statistics.mean(_f(r, 'test') for r in base):+.2f}"
        timed = [r for r in group if r.get("train_seconds")]
        minutes = [float(r["train_seconds"]) / 60 for r in timed]
        # the thread counts of the timed seeds ("1/2" where they differ)
        threads = "/".join(str(t) for t in sorted({r["threads"] for r in timed}))
        rows.append([
            f"`{name}`", BY_NAME[name].what if name in BY_NAME else "", encoder,
            f"{group[0]['steps']} steps", ", ".join(str(r["seed"]) for r in group),
            f"{statistics.mean(minutes):.0f} min ({threads} thr)" if minutes else "",
            _mean_std([_f(r, "dev") for r in group]), _mean_std(tests), delta,
        ] + [_type_f(group, label) for label in LABELS] + [_ece(group)])
    first = runs[0] if runs else None
    lines = ["# Fine-tuning options against one reference recipe (issue 15)", "",
             "Produced by `python -m benchmarks.ablations` (one results file per option and seed "
             "in this folder). CoNLL-2003, every option on the same encoder and training budget "
             "(the config's `training.max_steps` and batcher; an option named for a longer "
             "budget says so in the budget column), its `model-best` (chosen on dev "
             "F1) scored on dev and test with the gold tokenization, entity-level micro F1 in %. "
             "Test F1 is a mean ± standard deviation over the seeds (one seed: the value); Δ is "
             "the difference of means against the `baseline` row of the same encoder (the "
             "CoNLL recipe of 2026-12-02, whose crf_ner loss was a mean over tokens; the "
             "shipped recipe is the `case_features` row, which adds case features to "
             "`summed_loss`); test ECE: "
             "expected calibration error of the entity confidences (10 bins) at the pipeline's "
             "own temperature (1: none fitted).", ""]
    if first:
        lines += [f"{_machines_text(runs)}. Versions: "
                  f"{versions_text(first['versions'])}. Dates: "
                  f"{', '.join(sorted({r['date'] for r in runs}))}.", ""]
    head = ["option", "what", "encoder", "budget", "seeds", "train time", "dev F1", "test F1",
            "Δ test"] + [f"test {label}" for label in LABELS] + ["test ECE"]
    lines += table(head, rows, "lllllrrrr" + "r" * len(LABELS) + "r")
    lines += ["", "## Runs", ""]
    for run in sorted(runs, key=lambda r: (r["encoder"], order.get(r["option"], 99), r["seed"])):
        extra = f" {run['note']}." if run.get("note") else ""
        threads = f"{run['threads']} torch thread" + ("s" if run["threads"] != 1 else "")
        lines.append(f"- `{run['option']}` seed {run['seed']} ({run['corpus']}, {threads}): "
                     f"`{run['command']}`.{extra}")
    return "\n".join(lines) + "\n"


def write_report(folder: Path) -> str:
    text = render(load_runs(folder))
    (folder / REPORT).write_text(text, encoding="utf8")
    return text


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if not args.render_only:
        for name in args.options.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                run_one(BY_NAME[name], seed, args)
    print(write_report(args.out))


if __name__ == "__main__":
    main()
