"""`distill`: annotate the student's training corpus (and optional unlabelled text) with a
teacher's soft targets, then train the student with spaCy's training machinery
(``training.loop.train``: the config's [training], its logger, checkpoints and --resume) on that
corpus, with crf_ner's distill_weight set."""
import sys
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Tuple, Union

from spacy import util
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training.corpus import walk_corpus
from thinc.api import Config, require_gpu
from wasabi import Printer

from .targets import DistillError, Teacher, check_labels, corpus_labels, read_unlabelled

# OUTPUT_DIR/corpus/train.spacy: the training corpus with the teacher's soft targets
DIR_CORPUS = "corpus"
TRAIN_FILE = "train.spacy"


def distill(
    teacher_path: Union[str, Path],
    config_path: Union[str, Path],
    output_path: Union[str, Path],
    *,
    unlabelled: Optional[Union[str, Path]] = None,
    overrides: Optional[Dict[str, Any]] = None,
    distill_weight: Optional[float] = None,
    temperature: Optional[float] = None,
    use_gpu: int = -1,
    resume: bool = False,
    checkpoint_every: Optional[int] = None,
    batch_size: int = 32,
    stdout: Optional[IO] = None,
    stderr: Optional[IO] = None,
) -> Language:
    """Train the student config on its training corpus annotated by the teacher.

    teacher_path (Union[str, Path]): A trained pipeline with one crf_ner.
    config_path (Union[str, Path]): The student's training config (one crf_ner; its train
        corpus a spacy.Corpus.v1 of .spacy files).
    output_path (Union[str, Path]): corpus/train.spacy (the annotated corpus), model-best,
        model-last, checkpoints/.
    unlabelled (Optional[Union[str, Path]]): .jsonl ("text") or .txt, one document a line: the
        teacher annotates them too, as soft-only examples (no gold annotation).
    overrides (Optional[Dict[str, Any]]): Config overrides, as for `spacy train`.
    distill_weight (Optional[float]): The student crf_ner's distill_weight (None: the config's).
    temperature (Optional[float]): Temperature of the teacher's marginals (None: its own).
    use_gpu, resume, checkpoint_every: as for training.train. With resume, an annotated corpus
        already in output_path is used as it is.
    batch_size (int): Docs per teacher batch.
    RETURNS (Language): The trained student.
    """
    from ..training import train

    msg = Printer(no_print=True)
    stdout = stdout or sys.stdout
    output_path, config_path = Path(output_path), Path(config_path)
    overrides = dict(overrides or {})
    if not config_path.is_file():
        raise DistillError(f"Student config not found: {config_path}")
    config = util.load_config(config_path, overrides=overrides, interpolate=False)
    # the student as spaCy fills its config in (defaults such as training.train_corpus); its
    # tokenizer makes the unlabelled docs, its vocab reads the corpus
    nlp = util.load_model_from_config(config, auto_fill=True, validate=True)
    resolved = nlp.config.interpolate()
    student = _crf_ner_component(resolved, config_path)
    if distill_weight is not None:
        overrides[f"components.{student}.distill_weight"] = distill_weight
    weight = overrides.get(
        f"components.{student}.distill_weight",
        resolved["components"][student].get("distill_weight", 0.0),
    )
    corpus_key, train_paths = _train_corpus(resolved, config_path)
    if not weight:
        stdout.write(msg.warn(
            f"distill_weight of {student!r} is 0: the student learns from the gold annotation "
            "only (set it in the config or with --distill-weight)"
        ) + "\n")
    corpus_file = output_path / DIR_CORPUS / TRAIN_FILE
    if use_gpu >= 0:
        require_gpu(use_gpu)
    if resume and corpus_file.is_file():
        stdout.write(msg.info(f"Resuming: using the annotated corpus {corpus_file}") + "\n")
    else:
        _write_corpus(
            teacher_path, nlp, resolved, student, train_paths, corpus_file,
            unlabelled=unlabelled, temperature=temperature, batch_size=batch_size,
            stdout=stdout, msg=msg,
        )
    overrides[f"{corpus_key}.path"] = str(corpus_file)
    return train(
        config_path, output_path, overrides=overrides, use_gpu=use_gpu, resume=resume,
        checkpoint_every=checkpoint_every, stdout=stdout, stderr=stderr,
    )


def _write_corpus(
    teacher_path, nlp: Language, resolved: Config, student: str, train_paths: List[Path],
    corpus_file: Path, *, unlabelled, temperature, batch_size, stdout: IO, msg: Printer,
) -> None:
    """Check the labels, then write the annotated corpus (gold docs first, then unlabelled)."""
    scheme = resolved["components"][student]["model"].get("scheme", "BILUO")
    docs: List[Doc] = []
    for path in train_paths:
        docs.extend(DocBin().from_disk(path).get_docs(nlp.vocab))
    if not docs:
        raise DistillError(f"The student's training corpus {train_paths} holds no docs.")
    texts, blank = read_unlabelled(unlabelled) if unlabelled is not None else ([], 0)
    teacher_nlp = util.load_model(teacher_path)
    teacher = Teacher(
        teacher_nlp, student_scheme=scheme, temperature=temperature, batch_size=batch_size
    )
    check_labels(
        teacher.labels, corpus_labels(docs), str(teacher_path),
        ", ".join(str(p) for p in train_paths),
    )
    extra = f" and {len(texts)} unlabelled docs" if texts else ""
    stdout.write(msg.info(
        f"Teacher {teacher_path} ({teacher.name!r}, labels {list(teacher.labels)}, "
        f"temperature {teacher.temperature:g}) annotates {len(docs)} training docs{extra}"
    ) + "\n")
    docs.extend(nlp.make_doc(text) for text in texts)
    out = DocBin(store_user_data=True)
    n_tokens = 0
    for doc in teacher.annotate(docs):
        out.add(doc)
        n_tokens += len(doc)
    corpus_file.parent.mkdir(parents=True, exist_ok=True)
    out.to_disk(corpus_file)
    note = f"; {blank} blank lines of {unlabelled} left out" if blank else ""
    stdout.write(msg.good(
        f"Wrote {len(docs)} docs ({n_tokens} tokens, {len(texts)} unlabelled) with soft "
        f"targets to {corpus_file}{note}"
    ) + "\n")


def _crf_ner_component(config: Config, config_path: Path) -> str:
    names = [
        name for name, block in config.get("components", {}).items()
        if block.get("factory") == "crf_ner"
    ]
    if len(names) != 1:
        raise DistillError(
            f"{config_path}: the student config needs exactly one crf_ner component, it has "
            f"{len(names)} ({names})."
        )
    return names[0]


def _train_corpus(config: Config, config_path: Path) -> Tuple[str, List[Path]]:
    """The dot name of the train corpus block (e.g. "corpora.train") and its .spacy files."""
    key = config["training"]["train_corpus"]
    block: Any = config
    for part in key.split("."):
        block = block.get(part) if isinstance(block, dict) else None
    if not isinstance(block, dict) or block.get("@readers") != "spacy.Corpus.v1":
        raise DistillError(
            f"{config_path}: the train corpus [{key}] must be a spacy.Corpus.v1 of .spacy files "
            "(the teacher annotates its docs)."
        )
    if block.get("path") is None:
        raise DistillError(
            f"{config_path}: the train corpus [{key}] has no path: set it with --paths.train."
        )
    paths = walk_corpus(block["path"], ".spacy")
    if not paths:
        raise DistillError(f"No .spacy files at {block['path']} (the train corpus [{key}]).")
    return key, [Path(p) for p in paths]
