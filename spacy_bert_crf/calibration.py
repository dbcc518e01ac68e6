"""Temperature scaling of crf_ner's confidences, fitted on a dev corpus.

The CRF's probability of a tag sequence is proportional to exp(score / T). At T = 1 (the CRF as
trained) its entity confidences tend to be over-confident; one temperature, fitted on held-out
data, corrects that for every probability the pipe reports (entity confidences, candidate spans,
n-best), and leaves the best path, and so the entities, unchanged.

    result = fit_temperature(nlp, "corpus/dev.spacy")   # -> TemperatureFit, sets nothing
    result.apply(nlp.get_pipe("crf_ner"))                 # temperature, mention_temperatures
    nlp.to_disk("training/model-calibrated")              # saved with the pipe (its cfg)

or ``python -m spacy_bert_crf evaluate MODEL TEST --fit-temperature DEV --save-model DIR``.

The fit minimises the log loss (binary cross-entropy) of the confidences of the predicted
entities against whether each is correct (span and label equal to a gold entity), the quantity
the expected calibration error (ECE) of the evaluation report measures, by golden-section search
over log T in [MIN_TEMPERATURE, MAX_TEMPERATURE].

Mention-stratified temperatures. A model errs more on names it never saw in training than on
names it did, and new data holds more unseen names than dev data does (CoNLL-2003: about 68% of
the predicted entities of dev have a text seen as a training entity, 54% of test's), so one
temperature fitted on dev leaves test over-confident. When the pipe knows its training mentions
(`initialize` records their hashes), the fit also gives one temperature to the entities whose
text was a training entity's and one to the others, each fitted on its own share of dev, and
sets them as the pipe's `mention_temperatures` (entities and candidates; n-best keeps the one
temperature). The idea is that of calibrating by subgroup under a shift of the groups' mix.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example

from .annotation import MAX_TEMPERATURE, MIN_TEMPERATURE, decoding_inputs, merge
from .confidence_metrics import calibration
from .evaluate import EvaluationError, PathLike, find_errors, make_examples, read_docbins

# The least entities (and a tenth of that, wrong ones and right ones) of each group, seen and
# unseen, to fit mention-stratified temperatures on; below it, one temperature.
MIN_GROUP_ENTITIES = 200
# Golden-section search steps over log T: the bracket shrinks by 0.618 a step, so 40 steps end
# within 1e-8 of the optimum in log T.
N_SEARCH_STEPS = 40


@dataclass
class ScoredEntities:
    """What fitting a temperature needs about a corpus, computed once: per doc with predicted
    entities, its emissions and allowed tags, and the pipe's own entities as span queries
    (row, start, end, tag ids) with whether each is correct.

    n_docs (int): Docs predicted.
    n_entities (int): Entities with a correctness (over annotated gold tokens).
    """

    emissions: List[numpy.ndarray] = field(default_factory=list)
    allowed: List[numpy.ndarray] = field(default_factory=list)
    queries: List[List[Tuple[int, int, List[int]]]] = field(default_factory=list)
    correct: List[List[bool]] = field(default_factory=list)
    seen: List[List[bool]] = field(default_factory=list)  # the text was a training entity's
    n_docs: int = 0

    @property
    def n_entities(self) -> int:
        return sum(len(c) for c in self.correct)

    def group(self, seen: bool) -> "ScoredEntities":
        """The entities seen in training (or not), with only the docs that have some: a fit on
        one group decodes only its docs."""
        out = ScoredEntities(n_docs=self.n_docs)
        for e, a, queries, correct, flags in zip(
            self.emissions, self.allowed, self.queries, self.correct, self.seen
        ):
            keep = [j for j, s in enumerate(flags) if s == seen]
            if keep:
                out.emissions.append(e)
                out.allowed.append(a)
                out.queries.append([queries[j] for j in keep])
                out.correct.append([correct[j] for j in keep])
                out.seen.append([seen] * len(keep))
        return out


@dataclass
class TemperatureFit:
    """The fitted temperature and the calibration (confidence_metrics.calibration) of the corpus it
    was fitted on, before (at the pipe's temperature then) and after."""

    temperature: float
    previous_temperature: float
    data_path: str
    n_entities: int
    before: Dict[str, Any]
    after: Dict[str, Any]
    # (seen, unseen), None when the pipe has no training mentions or a group is too small
    mention_temperatures: Optional[Tuple[float, float]] = None
    n_seen: int = 0
    # with mention_temperatures: the calibration at the one temperature, for comparison
    after_single: Optional[Dict[str, Any]] = None

    def apply(self, pipe) -> None:
        """Set the fitted temperature(s) on the crf_ner component `pipe`."""
        pipe.temperature = self.temperature
        pipe.mention_temperatures = self.mention_temperatures

    def to_dict(self) -> Dict[str, Any]:
        return {
            "temperature": self.temperature,
            "mention_temperatures": (
                None if self.mention_temperatures is None
                else dict(zip(("seen", "unseen"), self.mention_temperatures))
            ),
            "previous_temperature": self.previous_temperature,
            "fitted_on": self.data_path,
            "n_entities": self.n_entities,
            "n_seen": self.n_seen,
            "objective": "log loss of the predicted entities' confidences",
            "before": self.before,
            "after": self.after,
            "after_single": self.after_single,
        }


def find_pipe(nlp: Language, name: Optional[str] = None):
    """The crf_ner component of the pipeline: `name`, or the only one.

    RAISES (EvaluationError): No such component, or several and no name.
    """
    from .pipeline import CRFEntityRecognizer

    found = [(n, p) for n, p in nlp.pipeline if isinstance(p, CRFEntityRecognizer)]
    if name is not None:
        found = [(n, p) for n, p in found if n == name]
    if len(found) != 1:
        which = f"named {name!r}" if name else "(give its name)"
        raise EvaluationError(
            f"Expected one crf_ner component {which} in the pipeline {nlp.pipe_names}, found "
            f"{len(found)}."
        )
    return found[0]


def score_entities(
    nlp: Language, examples: Sequence[Example], *, name: Optional[str] = None,
    batch_size: int = 64,
) -> ScoredEntities:
    """Run the pipeline up to the crf_ner component `name` over the examples' predicted docs,
    decode them, and keep what confidences at any temperature need.

    RETURNS (ScoredEntities): The emissions, allowed tags and entity queries, with correctness.
    """
    from .decoding import decode

    pipe_name, pipe = find_pipe(nlp, name)
    before = []
    for n, proc in nlp.pipeline:
        if n == pipe_name:
            break
        before.append(proc)
    out = ScoredEntities()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].predicted))
    for start in range(0, len(order), batch_size):
        batch = [examples[i] for i in order[start : start + batch_size]]
        docs = [eg.predicted.copy() for eg in batch]
        for proc in before:
            docs = list(proc.pipe(docs)) if hasattr(proc, "pipe") else [proc(d) for d in docs]
        inputs = decoding_inputs(pipe, docs)
        out.n_docs += len(docs)
        if inputs is None:
            continue
        emissions, allowed, inventory = inputs
        decoded = decode(
            pipe.model, emissions, allowed, inventory.tags, pipe.scheme, with_scores=False
        )
        index = inventory.index
        for doc, eg, e, a, decoding in zip(docs, batch, emissions, allowed, decoded):
            preset = pipe._presets(doc)
            own, _ = merge(doc, preset, decoding.entities)
            doc.ents = sorted(preset + [span for span, _ in own], key=lambda s: s.start)
            errors = find_errors(Example(doc, eg.reference))
            if errors is None:
                continue
            correct = {(label, s, e_): ok for label, s, e_, ok in errors.scored}
            queries, flags, seen = [], [], []
            for span, _ in own:
                key = (span.label_, span.start, span.end)
                if key in correct:
                    tags = _span_tag_ids(len(span), span.label_, pipe.scheme, index)
                    queries.append((span.start, span.end, tags))
                    flags.append(correct[key])
                    seen.append(pipe.is_seen(span.text))
            if queries:
                out.emissions.append(pipe.model.ops.to_numpy(e))
                out.allowed.append(a)
                out.queries.append(queries)
                out.correct.append(flags)
                out.seen.append(seen)
    return out


def _span_tag_ids(length: int, label: str, scheme: str, index: Dict[str, int]) -> List[int]:
    from .tag_schemes import span_tags

    return [index[tag] for tag in span_tags(length, label, scheme)]


def confidences(
    pipe, scored: ScoredEntities, temperature: float, *, batch_size: int = 64,
    mention_temperatures: Optional[Tuple[float, float]] = None,
) -> List[Tuple[float, bool]]:
    """(confidence at `temperature`, correct) of every scored entity; with mention_temperatures,
    at the first for the entities seen in training and at the second for the others."""
    if mention_temperatures is not None:
        seen = [s for doc_seen in scored.seen for s in doc_seen]
        at_seen = confidences(pipe, scored, mention_temperatures[0], batch_size=batch_size)
        at_unseen = confidences(pipe, scored, mention_temperatures[1], batch_size=batch_size)
        return [a if s else b for a, b, s in zip(at_seen, at_unseen, seen)]
    from .layers.crf import chain_arrays
    from .layers.crf_decode import NumpyChain, entity_log_probs

    out: List[Tuple[float, bool]] = []
    for start in range(0, len(scored.emissions), batch_size):
        stop = start + batch_size
        arrays = chain_arrays(
            pipe.model, scored.emissions[start:stop], scored.allowed[start:stop], temperature
        )
        log_alpha, log_beta, log_z = NumpyChain(
            arrays.pot, arrays.mask, arrays.trans, arrays.start, arrays.end
        ).log_alpha_beta()
        queries = [
            (r, s, e, tags)
            for r, doc_queries in enumerate(scored.queries[start:stop])
            for s, e, tags in doc_queries
        ]
        log_p = entity_log_probs(
            log_alpha, log_beta, log_z, arrays.pot, arrays.trans, arrays.continuation,
            arrays.lengths, queries,
        )
        flags = [ok for doc_flags in scored.correct[start:stop] for ok in doc_flags]
        out.extend(zip(numpy.minimum(1.0, numpy.exp(log_p)).tolist(), flags))
    return out


def log_loss(pairs: Sequence[Tuple[float, bool]]) -> float:
    """Mean binary cross-entropy of confidences against correctness (clipped at 1e-12)."""
    p = numpy.clip(numpy.asarray([c for c, _ in pairs], dtype="float64"), 1e-12, 1 - 1e-12)
    y = numpy.asarray([ok for _, ok in pairs], dtype="float64")
    return float(-(y * numpy.log(p) + (1 - y) * numpy.log(1 - p)).mean())


def fit_scored(pipe, scored: ScoredEntities) -> float:
    """The temperature minimising the log loss of the scored entities' confidences."""
    flags = [ok for doc_flags in scored.correct for ok in doc_flags]
    if not flags:
        raise EvaluationError("No predicted entity to fit a temperature on.")
    if all(flags) or not any(flags):
        # every entity right (or wrong): the loss decreases without bound towards T -> 0 (-> inf)
        return MIN_TEMPERATURE if all(flags) else MAX_TEMPERATURE

    def loss(log_t: float) -> float:
        return log_loss(confidences(pipe, scored, math.exp(log_t)))

    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(N_SEARCH_STEPS):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    return float(math.exp((low + high) / 2))


def fit_mention_temperatures(
    pipe, scored: ScoredEntities, min_entities: Optional[int] = None
) -> Optional[Tuple[float, float]]:
    """One temperature for the scored entities seen in training and one for the others, each
    fitted on its own; None when either group has fewer than min_entities entities (default:
    MIN_GROUP_ENTITIES), or fewer than min_entities // 10 wrong ones or right ones (too few to
    fit on)."""
    if min_entities is None:
        min_entities = MIN_GROUP_ENTITIES
    groups = [scored.group(seen) for seen in (True, False)]
    for group in groups:
        ok = [f for doc_flags in group.correct for f in doc_flags]
        if len(ok) < min_entities or min(sum(ok), len(ok) - sum(ok)) < min_entities // 10:
            return None
    return fit_scored(pipe, groups[0]), fit_scored(pipe, groups[1])


def fit_temperature(
    nlp: Language,
    data_path: PathLike,
    *,
    name: Optional[str] = None,
    batch_size: int = 64,
    gold_preproc: bool = False,
    by_mention: bool = True,
) -> TemperatureFit:
    """Fit the temperature of a crf_ner component on a corpus (dev data, not the test data),
    and, if the pipe knows its training mentions, its mention temperatures. The pipeline is not
    changed: `fit.apply(nlp.get_pipe(name))` sets them.

    nlp (Language): The pipeline.
    data_path (Union[str, Path]): A .spacy file or a directory of them, with gold entities.
    name (Optional[str]): The crf_ner component (default: the only one).
    by_mention (bool): Fit mention-stratified temperatures too, when the pipe has mentions
        and each group enough entities (MIN_GROUP_ENTITIES).
    RETURNS (TemperatureFit): The temperature and the corpus' calibration before and after.
    """
    _, pipe = find_pipe(nlp, name)
    examples = make_examples(nlp, read_docbins(data_path), gold_preproc=gold_preproc)[0]
    scored = score_entities(nlp, examples, name=name, batch_size=batch_size)
    temperature = fit_scored(pipe, scored)
    pair = fit_mention_temperatures(pipe, scored) if by_mention and len(pipe.mentions) else None
    single = calibration(confidences(pipe, scored, temperature))
    return TemperatureFit(
        temperature=temperature,
        previous_temperature=pipe.temperature,
        data_path=str(data_path),
        n_entities=scored.n_entities,
        before=calibration(confidences(
            pipe, scored, pipe.temperature, mention_temperatures=pipe.mention_temperatures
        )),
        after=(single if pair is None else
               calibration(confidences(pipe, scored, temperature, mention_temperatures=pair))),
        mention_temperatures=pair,
        n_seen=sum(s for doc_seen in scored.seen for s in doc_seen),
        after_single=None if pair is None else single,
    )


def rescore(pipe, docs: Sequence[Doc], temperature: float) -> List[numpy.ndarray]:
    """The confidences at `temperature` of the entities in the pipe's span group of each doc
    (docs the pipeline predicted, with their upstream output still on them): what the group's
    attrs["scores"] would hold had the pipe run at that temperature.

    RETURNS (List[numpy.ndarray]): One float32 array per doc, in the group's order.
    """
    from .layers.crf import chain_arrays
    from .layers.crf_decode import NumpyChain, entity_log_probs

    out = [numpy.zeros((0,), dtype="float32") for _ in docs]
    key = pipe.spans_key
    if key is None:
        raise EvaluationError(f"{pipe.name!r} has no spans_key: its entities have no scores.")
    rows = [i for i, doc in enumerate(docs) if len(doc) and len(doc.spans.get(key, []))]
    if not rows:
        return out
    inputs = decoding_inputs(pipe, [docs[i] for i in rows], own_spans=True)
    if inputs is None:
        return out
    emissions, allowed, inventory = inputs
    arrays = chain_arrays(pipe.model, emissions, allowed, temperature)
    log_alpha, log_beta, log_z = NumpyChain(
        arrays.pot, arrays.mask, arrays.trans, arrays.start, arrays.end
    ).log_alpha_beta()
    queries = [
        (r, span.start, span.end,
         _span_tag_ids(len(span), span.label_, pipe.scheme, inventory.index))
        for r, i in enumerate(rows) for span in docs[i].spans[key]
    ]
    log_p = entity_log_probs(
        log_alpha, log_beta, log_z, arrays.pot, arrays.trans, arrays.continuation,
        arrays.lengths, queries,
    )
    probs = numpy.minimum(1.0, numpy.exp(log_p)).astype("float32")
    at = 0
    for i in rows:
        n = len(docs[i].spans[key])
        out[i] = probs[at : at + n]
        at += n
    return out


def calibration_at(
    nlp: Language, prediction, temperature: float, *, name: Optional[str] = None,
    batch_size: int = 64,
) -> Optional[Dict[str, Any]]:
    """The calibration (confidence_metrics.calibration) of a Prediction's entities had the crf_ner
    component `name` reported their confidences at `temperature`, from the docs as predicted
    (their upstream output is reused: nothing upstream runs again).

    RETURNS (Optional[Dict[str, Any]]): The calibration; None when no entity has a confidence.
    """
    _, pipe = find_pipe(nlp, name)
    pairs: List[Tuple[float, bool]] = []
    for start in range(0, len(prediction.examples), batch_size):
        batch = prediction.examples[start : start + batch_size]
        rescored = rescore(pipe, [eg.predicted for eg in batch], temperature)
        for eg, values in zip(batch, rescored):
            errors = find_errors(eg)
            if errors is None or pipe.spans_key not in eg.predicted.spans:
                continue
            group = eg.predicted.spans[pipe.spans_key]
            by_span = {(s.label_, s.start, s.end): float(p) for s, p in zip(group, values)}
            for label, s, e, ok in errors.scored:
                if (label, s, e) in by_span:
                    pairs.append((by_span[(label, s, e)], ok))
    return calibration(pairs) if pairs else None
