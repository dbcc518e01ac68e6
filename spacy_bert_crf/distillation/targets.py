"""The teacher's side of distillation: per-token tag marginals of a trained pipeline, written on
the reference docs of a corpus (``user_data[SOFT_TARGETS_KEY]``) in the student's tag names.

The teacher reads each doc with the doc's own spaCy tokens (its wordpiece tokenizer may differ
from the student's), under the restrictions its crf_ner decodes with (whitespace tokens,
tokens without wordpieces), at its calibrated temperature unless another is given.
"""
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, List, Optional, Sequence, Set, Tuple
from typing import Union, cast

import numpy
from spacy.language import Language
from spacy.tokens import Doc

from ..tag_schemes import biluo_to_scheme, check_scheme
from .loss import SOFT_TARGETS_KEY

if TYPE_CHECKING:
    from ..pipeline import CRFEntityRecognizer

UNLABELLED_SUFFIXES = (".jsonl", ".txt")


class DistillError(ValueError):
    """Distillation cannot start: the teacher, the student config or the data do not fit."""


def crf_ner_name(nlp: Language, what: str) -> str:
    """The name of the one crf_ner component of a pipeline (what: how to call the pipeline)."""
    from ..pipeline import CRFEntityRecognizer

    names = [name for name, pipe in nlp.pipeline if isinstance(pipe, CRFEntityRecognizer)]
    if len(names) != 1:
        raise DistillError(
            f"The {what} needs exactly one crf_ner component, it has {len(names)} "
            f"(pipeline: {nlp.pipe_names})."
        )
    return names[0]


def tag_map(
    tags: Sequence[str], scheme: str, student_scheme: str
) -> Tuple[List[str], numpy.ndarray]:
    """The student's tags for the teacher's, and the (len(tags), len(student tags)) 0/1 matrix
    that sums the teacher's marginals into them. The same scheme maps each tag to itself; BILUO
    marginals fold into BIO ones (B, U -> B; I, L -> I); BIO marginals have no per-token BILUO
    reading (L- and U- depend on the next token), so that is an error.
    """
    scheme, student_scheme = check_scheme(scheme), check_scheme(student_scheme)
    if scheme == student_scheme:
        return list(tags), numpy.eye(len(tags), dtype="float32")
    if (scheme, student_scheme) != ("BILUO", "BIO"):
        raise DistillError(
            f"The teacher tags with {scheme} and the student with {student_scheme}: "
            f"{scheme} marginals per token cannot be turned into {student_scheme} ones. Use a "
            f"{student_scheme} (or BILUO) teacher, or a {scheme} student."
        )
    mapped = [biluo_to_scheme(tag, student_scheme) or tag for tag in tags]
    student_tags = list(dict.fromkeys(mapped))
    matrix = numpy.zeros((len(tags), len(student_tags)), dtype="float32")
    for k, tag in enumerate(mapped):
        matrix[k, student_tags.index(tag)] = 1.0
    return student_tags, matrix


class Teacher:
    """A trained pipeline whose crf_ner writes its tag marginals on docs as soft targets."""

    def __init__(
        self,
        nlp: Language,
        *,
        student_scheme: str,
        temperature: Optional[float] = None,
        batch_size: int = 32,
    ) -> None:
        """nlp (Language): the teacher pipeline.
        student_scheme (str): the student's tag scheme (the targets are in its tags).
        temperature (Optional[float]): the temperature of the marginals (None: the teacher's
            own, 1.0 unless calibrated).
        batch_size (int): docs per teacher batch.
        """
        self.nlp = nlp
        self.name = crf_ner_name(nlp, "teacher pipeline")
        self.pipe = cast("CRFEntityRecognizer", nlp.get_pipe(self.name))
        if not self.pipe.labels:
            raise DistillError(f"The teacher's {self.name!r} has no labels: is it trained?")
        self.temperature = self.pipe.temperature if temperature is None else float(temperature)
        if not 0.01 <= self.temperature <= 10.0:
            raise DistillError(f"Invalid temperature {temperature!r}: expected 0.01 to 10.")
        if batch_size < 1:
            raise DistillError(f"Invalid batch_size {batch_size!r}: expected >= 1.")
        self.batch_size = batch_size
        self.tags, self.matrix = tag_map(self.pipe.tags, self.pipe.scheme, student_scheme)
        names = nlp.pipe_names
        self.before = [(n, p) for n, p in nlp.pipeline[: names.index(self.name)]]

    @property
    def labels(self) -> Tuple[str, ...]:
        return self.pipe.labels

    def marginals(self, docs: Sequence[Doc]) -> List[numpy.ndarray]:
        """P(tag) per token of each doc, (len(doc), len(self.tags)) float32, read from the
        doc's words and spaces (the docs themselves are not changed)."""
        from ..annotation import decoding_inputs
        from ..layers.crf import chain_arrays
        from ..layers.crf_decode import NumpyChain

        out = [numpy.zeros((len(doc), len(self.tags)), dtype="float32") for doc in docs]
        rows = [i for i, doc in enumerate(docs) if len(doc)]
        if not rows:
            return out
        own: List[Doc] = [
            Doc(
                self.nlp.vocab,
                words=[t.text for t in docs[i]],
                spaces=[bool(t.whitespace_) for t in docs[i]],
            )
            for i in rows
        ]
        for _, proc in self.before:
            own = list(proc.pipe(own)) if hasattr(proc, "pipe") else [proc(d) for d in own]
        inputs = decoding_inputs(self.pipe, own)
        if inputs is None:  # no tokens: cannot happen for the rows kept
            return out
        emissions, allowed, _ = inputs
        arrays = chain_arrays(self.pipe.model, emissions, allowed, self.temperature)
        marg = NumpyChain(arrays.pot, arrays.mask, arrays.trans, arrays.start, arrays.end)
        probs = marg.marginals()
        for r, i in enumerate(rows):
            out[i] = (probs[r, : len(docs[i])] @ self.matrix).astype("float32")
        return out

    def annotate(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        """The docs, in order, each with the teacher's marginals in
        user_data[SOFT_TARGETS_KEY] ({"tags": [...], "probs": float16 (len(doc), n_tags)})."""
        batch: List[Doc] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) >= self.batch_size:
                yield from self._annotate_batch(batch)
                batch = []
        if batch:
            yield from self._annotate_batch(batch)

    def _annotate_batch(self, docs: List[Doc]) -> List[Doc]:
        for doc, probs in zip(docs, self.marginals(docs)):
            doc.user_data[SOFT_TARGETS_KEY] = {
                "tags": list(self.tags),
                "probs": probs.astype("float16"),
            }
        return docs


def check_labels(
    teacher_labels: Iterable[str], corpus_labels: Iterable[str], teacher: str, corpus: str
) -> None:
    """Fail unless the teacher knows exactly the labels of the student's corpus."""
    mine, theirs = sorted(set(teacher_labels)), sorted(set(corpus_labels))
    if mine != theirs:
        raise DistillError(
            f"The teacher ({teacher}) and the student's training corpus ({corpus}) have "
            f"different entity labels. Teacher: {mine}. Corpus: {theirs}. "
            f"Only in the teacher: {sorted(set(mine) - set(theirs))}; only in the corpus: "
            f"{sorted(set(theirs) - set(mine))}. Distil with a teacher trained on these labels."
        )


def corpus_labels(docs: Iterable[Doc]) -> Set[str]:
    return {ent.label_ for doc in docs for ent in doc.ents}


def read_unlabelled(path: Union[str, Path]) -> Tuple[List[str], int]:
    """The texts of an unlabelled file: .jsonl, one JSON object with a string "text" a line, or
    .txt, one document a line. RETURNS the texts and the number of blank lines (and texts of
    whitespace only) left out, for the caller to report. Any other unreadable line is an error
    naming the file and line: nothing else is skipped.
    """
    path = Path(path)
    if path.suffix.lower() not in UNLABELLED_SUFFIXES:
        raise DistillError(
            f"{path}: unlabelled text must be a .jsonl file (one {{\"text\": ...}} a line) or a "
            ".txt file (one document a line)."
        )
    is_json = path.suffix.lower() == ".jsonl"
    texts: List[str] = []
    blank = 0
    try:
        handle = path.open("rb")
    except OSError as err:
        raise DistillError(f"Cannot read the unlabelled text {path}: {err}") from err
    with handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DistillError(f"{where}: not UTF-8 ({err.reason} at byte {err.start}).")
            if is_json and line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DistillError(f"{where}: not a JSON object ({err.msg}).") from err
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise DistillError(
                        f"{where}: expected a JSON object with a string \"text\", got "
                        f"{line[:80]!r}."
                    )
                line = record["text"]
            if not line.strip():
                blank += 1
                continue
            texts.append(line)
    return texts, blank
