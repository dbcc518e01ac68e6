"""The systems of the peer benchmark, each with the commands that train it and run it.

    raw        the encoder's forward pass alone on the test words: the speed limit for any head
    crf        our transformer + crf_ner: `spacy train` with the dataset's config
    softmax    the same config with spacy-bert-crf.SoftmaxTagger.v2 (the CRF ablation)
    spacy_ner  the same config with spaCy's transition-based `ner` on spacy-transformers' own
               TransformerModel.v3 (en_core_web_trf's recipe: what a user builds without us)
    hf         AutoModelForTokenClassification, the run_ner recipe; pipeline(aggregation="first")
    flair      Flair SequenceTagger + CRF on TransformerWordEmbeddings(fine_tune=True), in its own
               virtualenv (benchmarks.flair_env)

A system's `train_command` builds the training command (raw: none), `infer_command` the
inference or scaling step of its peer module (benchmarks/peers/), `model_path` says where the
trained model is. `args` is benchmarks.run's command line (with `encoder` resolved).
"""
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .data import DATASETS
from .flair_env import FLAIR_PYTHON, flair_python
from .paths import ROOT, WORK
from .peers.common import read_jsonl
from .peers.spacy_pipe import SOFTMAX_OVERRIDE, derive_augmented_config, derive_spacy_ner_config
from .peers.spacy_pipe import schedule_overrides

Command = List[object]


class System:
    """A system whose peer module (benchmarks.peers.<module>) trains it and runs it."""

    trains = True
    in_process_speed = True  # benchmarks.peers.speed can time it (it runs in this environment)

    def __init__(self, name: str, description: str, module: str):
        self.name, self.description, self.module = name, description, module

    def python(self, args, env: Optional[dict] = None) -> Path:
        """The interpreter of its steps (env given: make it if it does not exist yet)."""
        return Path(sys.executable)

    def model_path(self, args, work: Path) -> Path:
        return work / "model"

    def train_command(self, seed: int, args, data: Path, work: Path,
                      env: dict) -> Tuple[Command, dict]:
        """RETURNS (cmd, budget): the training command and the training budget it is given."""
        cmd = [self.python(args, env), "-m", self.module, "train", "--data", data,
               "--encoder", args.encoder, "--out", work, "--epochs", args.epochs, "--seed", seed,
               "--threads", args.threads]
        return cmd, {"epochs": args.epochs}

    def infer_command(self, args, data: Path, work: Path, model: Path, step: str) -> Command:
        """The `infer` step (test speed and predictions) or the `scale` step (one long doc)."""
        cmd = [self.python(args), "-m", self.module, step, "--data", data, "--model", model,
               "--out", work, "--threads", args.threads]
        if step == "infer":
            return cmd + ["--batch-sizes", args.batch_sizes, "--limit-b1", args.limit_b1]
        return cmd + ["--sizes", args.scaling_sizes]


class RawEncoder(System):
    trains = False

    def model_path(self, args, work: Path) -> Path:
        return args.encoder

    def train_command(self, seed, args, data, work, env):
        raise ValueError(f"{self.name}: the raw encoder is not trained")


class SpacyPipeline(System):
    """A pipeline trained by `python -m spacy train` on the dataset's config, with `overrides`;
    its schedule (warmup_linear) fitted to the epoch budget unless --keep-schedule."""

    def __init__(self, name: str, description: str, overrides: Sequence[Tuple[str, str]] = ()):
        super().__init__(name, description, "benchmarks.peers.spacy_pipe")
        self.overrides = tuple(overrides)

    def config(self, args) -> Path:
        return ROOT / DATASETS[args.dataset].config

    def model_path(self, args, work: Path) -> Path:
        return work / "train" / "model-last"

    def train_command(self, seed, args, data, work, env):
        config = self.config(args)
        augment = getattr(args, "augment", None)
        if augment:
            derived = WORK / "peers" / "configs" / f"{config.stem}_{augment}.cfg"
            config = derive_augmented_config(config, derived, augment)
        cmd = [self.python(args), "-m", "spacy", "train", config, "--output", work / "train",
               "--paths.train", data / "train.spacy", "--paths.dev", data / "dev.spacy",
               "--paths.transformer", args.encoder, "--gpu-id", "-1", "--system.seed", seed,
               "--training.max_epochs", args.epochs, "--training.max_steps", 0]
        for key, value in self.overrides:
            cmd += [f"--{key}", value]
        train_words = [r["words"] for r in read_jsonl(data / "train.jsonl")]
        sched = schedule_overrides(config, train_words, args.epochs)
        steps = sched.pop("steps_per_epoch")
        config_total = sched.pop("config_total_steps")
        if not args.keep_schedule:
            for key, value in sched.items():
                cmd += [f"--{key}", value]
        elif config_total:  # max_steps is 0 here, so the config's total_steps must be given
            cmd += ["--training.optimizer.learn_rate.total_steps", config_total]
        budget = {"epochs": args.epochs, "steps_per_epoch": steps, "steps": steps * args.epochs,
                  "schedule": "config's" if args.keep_schedule else sched}
        if augment:
            budget["augment"] = augment
        if getattr(args, "context", "sentences") != "sentences":
            budget["context"] = args.context
        return cmd, budget


class SpacyNer(SpacyPipeline):
    """The dataset's config with spaCy's `ner` on spacy-transformers' TransformerModel.v3."""

    def config(self, args) -> Path:
        base = super().config(args)
        derived = WORK / "peers" / "configs" / f"{base.stem}_spacy_ner.cfg"
        return derive_spacy_ner_config(base, derived)


class FlairTagger(System):
    in_process_speed = False

    def python(self, args, env=None) -> Path:
        return FLAIR_PYTHON if env is None else flair_python(args.timeout_setup, env)

    def model_path(self, args, work: Path) -> Path:
        return work / "model" / "final-model.pt"


SYSTEMS: Dict[str, System] = {system.name: system for system in (
    RawEncoder("raw", "encoder forward pass only (no head, no decoding)",
               "benchmarks.peers.raw_encoder"),
    SpacyPipeline("crf", "spacy-bert-crf.TransformerModel.v1 + crf_ner (constrained CRF), "
                         "spacy train"),
    SpacyPipeline("softmax", "spacy-bert-crf.TransformerModel.v1 + crf_ner with SoftmaxTagger.v2 "
                             "(CRF ablation), spacy train", [SOFTMAX_OVERRIDE]),
    SpacyNer("spacy_ner", "spacy-transformers.TransformerModel.v3 + spaCy transition-based ner "
                          "(en_core_web_trf recipe), spacy train"),
    System("hf", "AutoModelForTokenClassification (run_ner recipe), "
                 "pipeline(aggregation_strategy=first)", "benchmarks.peers.hf_tagger"),
    FlairTagger("flair", "Flair SequenceTagger + CRF, TransformerWordEmbeddings(fine_tune=True)",
                "benchmarks.peers.flair_tagger"),
)}
NAMES = tuple(SYSTEMS)  # the order of the report
