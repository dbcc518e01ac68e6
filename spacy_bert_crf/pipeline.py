"""The ``crf_ner`` pipeline component: named entities from a constrained linear-chain CRF."""
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy
import srsly
from spacy import util
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, set_dropout_rate
from thinc.types import Floats2d

from .decoding import Candidates, Decoded, DocDecoding, TagInventory, allowed_tags, check_upstream
from .decoding import decode, hold_tokens_without_wordpieces, nbest
from .distillation.loss import check_distill_weight, distillation_loss
from .layers.crf import CRFConstraints, set_constraints
from .tag_schemes import OUT, biluo_to_scheme, constraints, continuations, make_tags
from .threads import single_thread_in_forked_children

# fmt: off
DEFAULT_MODEL_CONFIG = """
[model]
@architectures = "spacy-bert-crf.CRFTagger.v1"
scheme = "BILUO"
hidden_width = 256
depth = 0
dropout = 0.1

[model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "*"

[model.tok2vec.pooling]
@layers = "reduce_mean.v1"
"""
# fmt: on
DEFAULT_CRF_NER_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]


@Language.factory(
    "crf_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
    default_config={
        "model": DEFAULT_CRF_NER_MODEL,
        "spans_key": "crf_ner",
        "overwrite_ents": False,
        "threshold": 0.0,
        "candidates_key": None,
        "candidates_threshold": 0.1,
        "candidates_max_length": 16,
        "distill_weight": 0.0,
        "scorer": {"@scorers": "spacy-bert-crf.ner_scorer.v1"},
    },
    default_score_weights={
        "ents_f": 1.0,
        "ents_p": 0.0,
        "ents_r": 0.0,
        "ents_per_type": None,
    },
)
def make_crf_ner(
    nlp: Language,
    name: str,
    model: Model[List[Doc], List[Floats2d]],
    spans_key: Optional[str],
    overwrite_ents: bool,
    threshold: float,
    candidates_key: Optional[str],
    candidates_threshold: float,
    candidates_max_length: int,
    distill_weight: float,
    scorer: Optional[Callable],
) -> "CRFEntityRecognizer":
    """Create a CRFEntityRecognizer component.

    model (Model[List[Doc], List[Floats2d]]): A spacy-bert-crf tagger model (CRFTagger.v1 or
        SoftmaxTagger.v1).
    spans_key (Optional[str]): Also store the entities with their confidences in
        doc.spans[spans_key] (attrs["scores"]); None to skip.
    overwrite_ents (bool): False (default): entities already set by an earlier component (e.g.
        an entity_ruler) and tokens it set to "O" are kept, and the rest of the doc is decoded
        conditioned on them. True: predict every token, replacing earlier entities.
    threshold (float): Entities whose confidence is below this leave doc.ents (the span group
        keeps them, with attrs["below_threshold"] True). 0.0 (default) keeps every entity.
    candidates_key (Optional[str]): Write doc.spans[candidates_key]: every span whose probability
        of being exactly that entity (span and label) is >= candidates_threshold, overlaps
        allowed, with attrs["scores"] as spancat writes them. None (default) to skip.
    candidates_threshold (float): The least probability of a candidate span, in [0, 1].
    candidates_max_length (int): Candidate spans have at most this many tokens (the work is
        linear in the doc length times this).
    distill_weight (float): Training only: the loss is the gold NLL plus distill_weight times
        KL(teacher || model) of the tag marginals, on the tokens of reference docs that carry a
        teacher's soft targets (see `python -m spacy_bert_crf distill`). 0.0 (default): gold only.
    scorer (Optional[Callable]): The scoring method.
    """
    return CRFEntityRecognizer(
        nlp.vocab, model, name, spans_key=spans_key, overwrite_ents=overwrite_ents,
        threshold=threshold, candidates_key=candidates_key,
        candidates_threshold=candidates_threshold, candidates_max_length=candidates_max_length,
        distill_weight=distill_weight, scorer=scorer,
    )


class CRFEntityRecognizer(TrainablePipe):
    """Named entities by a linear-chain CRF over token emissions.

    Every prediction is a valid tag sequence by construction (invalid transitions are -inf),
    and every entity carries the marginal probability of exactly that span and label.
    """

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "crf_ner",
        *,
        spans_key: Optional[str] = "crf_ner",
        overwrite_ents: bool = False,
        threshold: float = 0.0,
        candidates_key: Optional[str] = None,
        candidates_threshold: float = 0.1,
        candidates_max_length: int = 16,
        distill_weight: float = 0.0,
        scorer: Optional[Callable] = None,
    ) -> None:
        """Initialize the component.

        vocab (Vocab): The shared vocabulary.
        model (Model): The tagger model.
        name (str): The component instance name, used to add entries to the losses.
        spans_key (Optional[str]): Key of the span group with the entity confidences.
        overwrite_ents (bool): Whether to replace entities set by earlier components instead of
            keeping them as constraints.
        threshold (float): Least confidence of an entity in doc.ents, in [0, 1].
        candidates_key (Optional[str]): Key of the span group of candidate spans (None: none).
        candidates_threshold (float): Least probability of a candidate span, in [0, 1].
        candidates_max_length (int): Most tokens of a candidate span, >= 1.
        distill_weight (float): Weight of KL(teacher || model) in the loss, >= 0 (0: gold only).
        scorer (Optional[Callable]): The scoring method.
        """
        if "scheme" not in model.attrs or not model.has_ref("crf"):
            raise ValueError(
                f"The {name!r} component needs a spacy-bert-crf tagger model "
                "(spacy-bert-crf.CRFTagger.v1 or SoftmaxTagger.v1), got "
                f"{model.name!r}."
            )
        single_thread_in_forked_children()  # nlp.pipe(n_process=N) workers: see threads.py
        self.vocab = vocab
        self.model = model
        self.name = name
        self.spans_key = spans_key
        self.overwrite_ents = overwrite_ents
        self.threshold = _check_probability(threshold, "threshold", name)
        self.candidates_key = candidates_key
        self.candidates_threshold = _check_probability(
            candidates_threshold, "candidates_threshold", name
        )
        if (
            not isinstance(candidates_max_length, int) or isinstance(candidates_max_length, bool)
            or candidates_max_length < 1
        ):
            raise ValueError(
                f"Invalid candidates_max_length {candidates_max_length!r} for {name!r}: expected "
                "an integer >= 1."
            )
        self.candidates_max_length = candidates_max_length
        self.distill_weight = check_distill_weight(distill_weight, name)
        self.scorer = scorer
        # temperature: set by calibration.fit_temperature, saved with the pipe (cfg)
        self.cfg: Dict[str, Any] = {"labels": [], "nI": None, "temperature": 1.0}

    # ----------------------------------------------------------------------- labels
    @property
    def labels(self) -> Tuple[str, ...]:
        """RETURNS (Tuple[str]): The entity labels."""
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        """RETURNS (List[str]): The labels, for `spacy init labels`."""
        return list(self.labels)

    @property
    def temperature(self) -> float:
        """RETURNS (float): The temperature T of the confidences: every probability the pipe
        reports (entity confidences, candidates, n-best) is that of the CRF with its scores
        divided by T. 1.0 until calibrated (calibration.fit_temperature); the best path, and so
        doc.ents at threshold 0, is the same at every T."""
        return float(self.cfg.get("temperature", 1.0))

    @temperature.setter
    def temperature(self, value: float) -> None:
        if (
            isinstance(value, bool) or not isinstance(value, (int, float))
            or not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE
        ):
            raise ValueError(
                f"Invalid temperature {value!r} for {self.name!r}: expected a number in "
                f"[{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]."
            )
        self.cfg["temperature"] = float(value)

    @property
    def scheme(self) -> str:
        return self.model.attrs["scheme"]

    @property
    def tags(self) -> List[str]:
        """RETURNS (List[str]): The tag inventory: "O" then the scheme's tags per label."""
        return make_tags(self.labels, self.scheme)

    def add_label(self, label: str) -> int:
        """Add an entity label. RETURNS (int): 1 if added, 0 if it was already there.

        DOCS: https://spacy.io/api/pipe#add_label
        """
        self._check_label(label)
        if label in self.labels:
            return 0
        if self._is_initialized():
            raise ValueError(
                f"Cannot add label {label!r} to {self.name!r} after it was initialized: its "
                "CRF is sized for the labels it has. Add all labels before nlp.initialize()."
            )
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    def _check_label(self, label: Any) -> None:
        if not isinstance(label, str):
            raise ValueError(Errors.E187)
        # Tags are split at their first "-" only, so a label may itself contain "-".
        if label in ("", OUT):
            raise ValueError(
                f"Invalid entity label {label!r} for {self.name!r}: a label must be non-empty "
                f"and not {OUT!r} (the outside tag)."
            )

    def _is_initialized(self) -> bool:
        return bool(self.model.get_ref("crf").layers)

    # --------------------------------------------------------------------- initialize
    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        """Initialize the pipe for training, using a representative set of data examples.

        get_examples (Callable[[], Iterable[Example]]): Function that returns a representative
            sample of gold-standard Example objects.
        nlp (Language): The current nlp object the component is part of.
        labels (Optional[Sequence[str]]): The labels to add to the component, typically
            generated by `spacy init labels`. If None, they are read from get_examples.

        DOCS: https://spacy.io/api/entityrecognizer#initialize
        """
        validate_get_examples(get_examples, "CRFEntityRecognizer.initialize")
        if labels is not None:
            found = list(dict.fromkeys(labels))
        else:
            found = sorted(
                {ent.label_ for eg in get_examples() for ent in eg.reference.ents}
            )
        for label in found:
            self._check_label(label)
            self.vocab.strings.add(label)
        # (Re-)initializing resets the model and its label set, as for spaCy's own pipes: the
        # CRF is rebuilt below for exactly these labels.
        self.cfg["labels"] = found
        self.cfg["temperature"] = 1.0  # a new model: its calibration is not this one's
        if self.labels:
            self._set_constraints()
        if not self.labels:
            raise ValueError(
                f"No entity labels for {self.name!r}: the training examples have no entities "
                "and no labels were given (see [initialize.components.{self.name}.labels])."
            )
        doc_sample = [eg.x for eg in islice(get_examples(), 10)]
        if not doc_sample:
            raise ValueError(Errors.E923.format(name=self.name))
        self.model.set_dim("nO", len(self.tags), force=True)
        self.model.initialize(X=doc_sample)
        self.cfg["nI"] = self.model.get_dim("nI")

    # ------------------------------------------------------------------------ predict
    def predict(self, docs: Iterable[Doc]) -> Decoded:
        """Decode the best valid tag sequence of each doc.

        RETURNS (List[DocDecoding]): Per doc, the entities (start, end, label, confidence) and,
            when candidates_key is set, the candidate spans.
        """
        docs = list(docs)
        inputs = self._decoding_inputs(docs)
        if inputs is None:
            return [DocDecoding([], None if self.candidates_key is None else []) for _ in docs]
        emissions, allowed, inventory = inputs
        candidates = None
        if self.candidates_key is not None:
            candidates = Candidates(self.candidates_threshold, self.candidates_max_length)
        return decode(
            self.model, emissions, allowed, inventory.tags, self.scheme,
            with_scores=self.spans_key is not None or self.threshold > 0.0,
            temperature=self.temperature, candidates=candidates,
        )

    def nbest(self, docs: Iterable[Doc], k: int) -> List[List[Tuple[List[Span], float]]]:
        """The k most probable valid analyses of each doc, by k-best constrained Viterbi: the
        entity lists doc.ents would hold for the k most probable tag sequences, with their
        probabilities (exact, at the pipe's temperature), most probable first; they sum to <= 1.

        The docs are decoded under the same restrictions as by the pipe itself: whitespace,
        tokens an earlier component blocked and its entities (unless overwrite_ents), tokens
        without wordpieces. Docs this pipe already annotated can be passed as they are when
        spans_key is set: the entities in its span group are its own, not restrictions (blocked
        tokens are not known any more once doc.ents was written: pass such docs as they were
        before this pipe, e.g. from nlp.pipe(texts, disable=[name])).

        docs (Iterable[Doc]): The docs, processed by the components before this one.
        k (int): How many analyses per doc, >= 1.
        RETURNS (List[List[Tuple[List[Span], float]]]): Per doc, up to k (ents, probability)
            pairs, most probable first; [] for a doc of 0 tokens.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Invalid k {k!r} for {self.name}.nbest: expected an integer >= 1.")
        docs = list(docs)
        inputs = self._decoding_inputs(docs, own_spans=True)
        if inputs is None:
            return [[] for _ in docs]
        emissions, allowed, inventory = inputs
        found = nbest(
            self.model, emissions, allowed, inventory.tags, self.scheme, k,
            temperature=self.temperature,
        )
        out: List[List[Tuple[List[Span], float]]] = []
        for doc, analyses in zip(docs, found):
            presets = self._presets(doc, own_spans=True)
            doc_out = []
            for ents, p in analyses:
                own, _ = _merge(doc, presets, [(s, e, label, p) for s, e, label in ents])
                spans = presets + [span for span, _ in own]
                doc_out.append((sorted(spans, key=lambda span: span.start), p))
            out.append(doc_out)
        return out

    def _decoding_inputs(
        self, docs: List[Doc], *, own_spans: bool = False
    ) -> Optional[Tuple[List[Floats2d], List[numpy.ndarray], TagInventory]]:
        """The emissions and the allowed tags of the docs (None when no doc has a token).

        own_spans: entities in this pipe's span group are its own output, not restrictions.
        """
        if not self._is_initialized():
            raise ValueError(Errors.E109.format(name=self.name))
        if not any(len(doc) for doc in docs):
            return None
        listens_to_transformer = check_upstream(self.model, docs, self.name)
        emissions = self.model.predict(docs)
        inventory = TagInventory(self.tags, self.scheme)  # once per batch, not per doc
        allowed = [
            self._allowed_tags(doc, inventory, ents=self._presets(doc, own_spans=own_spans))
            for doc in docs
        ]
        if listens_to_transformer:
            hold_tokens_without_wordpieces(
                docs, allowed, inventory, overwrite_ents=self.overwrite_ents, name=self.name
            )
        return emissions, allowed, inventory

    def _set_constraints(self) -> None:
        """Derive the CRF's constraints from the tags and hand them to the model's CRF layer."""
        trans, start, end = constraints(self.tags, self.scheme)
        set_constraints(
            self.model, CRFConstraints(trans, start, end, continuations(self.tags, self.scheme))
        )

    def _allowed_tags(
        self,
        doc: Doc,
        inventory: Optional[TagInventory] = None,
        *,
        ents: Optional[Sequence[Span]] = None,
    ) -> numpy.ndarray:
        """The tags each token may take, (len(doc), n_tags) bool: see decoding.allowed_tags."""
        inventory = inventory or TagInventory(self.tags, self.scheme)
        return allowed_tags(
            doc, inventory, frozenset(self.labels), overwrite_ents=self.overwrite_ents, ents=ents
        )

    def _presets(self, doc: Doc, *, own_spans: bool = False) -> List[Span]:
        """The entities set by earlier components, which this pipe keeps (none if
        overwrite_ents). own_spans: leave out the entities of this pipe's own span group (a doc
        this pipe already annotated)."""
        if self.overwrite_ents:
            return []
        ents = list(doc.ents)
        if own_spans and self.spans_key is not None and self.spans_key in doc.spans:
            own = {(s.start, s.end, s.label) for s in doc.spans[self.spans_key]}
            ents = [e for e in ents if (e.start, e.end, e.label) not in own]
        return ents

    def set_annotations(self, docs: Iterable[Doc], decoded: Decoded) -> None:
        """Write doc.ents (and the span groups with confidences) from predict's output.

        Preset entities (see overwrite_ents) stay in doc.ents as they were (with their kb_id);
        the span group holds the entities this component predicted, with their confidences
        (attrs["scores"]) and whether each fell below the threshold and so left doc.ents
        (attrs["below_threshold"]). The candidates' span group holds every candidate span but
        the preset entities, with attrs["scores"].
        """
        for doc, decoding in zip(docs, decoded):
            preset = self._presets(doc)
            own, taken = _merge(doc, preset, decoding.entities)
            below = numpy.asarray([p < self.threshold for _, p in own], dtype=bool)
            doc.ents = sorted(
                preset + [span for (span, _), low in zip(own, below) if not low],
                key=lambda span: span.start,
            )
            if self.spans_key is not None:
                doc.spans[self.spans_key] = SpanGroup(
                    doc, name=self.spans_key, spans=[span for span, _ in own],
                    attrs={
                        "scores": numpy.asarray([p for _, p in own], dtype="float32"),
                        "below_threshold": below,
                    },
                )
            if self.candidates_key is not None and decoding.candidates is not None:
                found = [c for c in decoding.candidates if c[:3] not in taken]
                doc.spans[self.candidates_key] = SpanGroup(
                    doc, name=self.candidates_key,
                    spans=[Span(doc, start, end, label=label) for start, end, label, _ in found],
                    attrs={"scores": numpy.asarray([c[3] for c in found], dtype="float32")},
                )

    # ------------------------------------------------------------------------- update
    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Learn from a batch of examples.

        DOCS: https://spacy.io/api/pipe#update
        """
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "CRFEntityRecognizer.update")
        if not any(len(eg.predicted) for eg in examples):
            return losses
        if not self._is_initialized():
            raise ValueError(Errors.E109.format(name=self.name))
        set_dropout_rate(self.model, drop)
        emissions, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_emissions = self.get_loss(examples, emissions)
        backprop(d_emissions)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(
        self, examples: Iterable[Example], emissions: List[Floats2d]
    ) -> Tuple[float, List[Floats2d]]:
        """CRF negative log-likelihood of the gold annotation and its gradient.

        Tokens whose gold tag is missing ("-" / None) are marginalised over every tag the
        scheme allows there, not treated as "O". The gradient of the CRF's own parameters is
        accumulated here (they are updated by the next finish_update). With distill_weight > 0,
        distill_weight x KL(teacher || model) is added on the tokens that carry a teacher's
        soft targets (distillation.loss).

        RETURNS (Tuple[float, List[Floats2d]]): The summed loss and d_emissions per doc,
            normalised by the number of tokens in the batch.
        """
        examples = list(examples)
        ops = self.model.ops
        tags = self.tags
        index = {tag: i for i, tag in enumerate(tags)}
        rows, allowed = [], []
        for i, eg in enumerate(examples):
            if len(eg.predicted):
                rows.append(i)
                allowed.append(self._gold_allowed(eg, i, index))
        d_emissions = [ops.alloc2f(*e.shape) for e in emissions]
        if not rows:
            return 0.0, d_emissions
        crf = self.model.get_ref("crf")
        nll, backprop = crf.begin_update(([emissions[i] for i in rows], allowed))
        n_tokens = sum(len(emissions[i]) for i in rows)
        d_rows = backprop(ops.alloc1f(len(rows)) + 1.0 / n_tokens)
        for i, d in zip(rows, d_rows):
            d_emissions[i] = d
        loss = float(nll.sum())
        # + distill_weight x KL(teacher || model) where the reference docs carry soft targets
        loss += distillation_loss(self, examples, emissions, d_emissions, n_tokens)
        if not numpy.isfinite(loss):
            raise ValueError(f"{self.name}: the loss is not finite ({loss}).")
        return loss, d_emissions

    def _gold_allowed(self, eg: Example, i: int, index: Dict[str, int]) -> numpy.ndarray:
        xp = self.model.ops.xp
        allowed = numpy.zeros((len(eg.predicted), len(index)), dtype=bool)
        for j, biluo in enumerate(eg.get_aligned_ner()):
            tag = biluo_to_scheme(biluo, self.scheme)
            if tag is None:
                allowed[j] = True
            elif tag in index:
                allowed[j, index[tag]] = True
            else:
                token = eg.predicted[j]
                raise ValueError(
                    f"{self.name}: doc {i} of the batch ({eg.predicted.text[:50]!r}...) has the "
                    f"gold tag {tag!r} on token {j} ({token.text!r}), but its label is not one of "
                    f"{list(self.labels)}. Add it to the labels before initialize."
                )
        return xp.asarray(allowed)

    # -------------------------------------------------------------------- serialization
    def _initialize_before_deserializing(self) -> None:
        """Build the lazy PyTorch layers from cfg so the saved weights have somewhere to go."""
        if not self.labels:
            return
        if not self.cfg.get("nI"):
            raise ValueError(f"Cannot load {self.name!r}: its cfg has no 'nI' (tok2vec width).")
        self.model.set_dim("nO", len(self.tags), force=True)
        self.model.set_dim("nI", self.cfg["nI"], force=True)
        self._set_constraints()
        self.model.initialize()

    def _load_model(self, data: bytes, source: str) -> None:
        self._initialize_before_deserializing()
        try:
            srsly.msgpack_loads(data)
        except Exception as err:
            raise ValueError(
                f"Cannot load the model of {self.name!r}: {source} is damaged or incomplete "
                f"({type(err).__name__}: {err}). If it comes from an interrupted training run, "
                "use the run's model-last, or train again."
            ) from err
        try:
            self.model.from_bytes(data)
        except ValueError as err:
            raise ValueError(
                f"Cannot load the model of {self.name!r}: it does not match its cfg (labels "
                f"{list(self.labels)}, {len(self.tags)} {self.scheme} tags, "
                f"nI={self.cfg.get('nI')}). "
                f"Were the labels or the model config changed? ({err})"
            ) from err

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()):
        """Load the pipe from a bytestring.

        DOCS: https://spacy.io/api/pipe#from_bytes
        """
        self._validate_serialization_attrs()
        deserialize = {
            "cfg": lambda b: self.cfg.update(srsly.json_loads(b)),
            "vocab": lambda b: self.vocab.from_bytes(b, exclude=exclude),
            "model": lambda b: self._load_model(b, "its serialized model bytes"),
        }
        util.from_bytes(bytes_data, deserialize, exclude)
        return self

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()):
        """Load the pipe from disk.

        DOCS: https://spacy.io/api/pipe#from_disk
        """
        self._validate_serialization_attrs()

        def load_model(p: Path) -> None:
            with p.open("rb") as file_:
                data = file_.read()
            self._load_model(data, f"the file {p}")

        deserialize: Dict[str, Callable[[Path], Any]] = {
            "cfg": lambda p: self.cfg.update(srsly.read_json(p)),
            "vocab": lambda p: self.vocab.from_disk(p, exclude=exclude),
            "model": load_model,
        }
        util.from_disk(path, deserialize, exclude)
        return self


# Temperatures outside this range are rejected: confidences would all be 0/1 or uniform, and at
# T > 10 the large finite penalty (-1e4) of the forbidden tags no longer underflows to 0.
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 10.0


def _check_probability(value: Any, setting: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"Invalid {setting} {value!r} for {name!r}: expected a number in [0, 1]."
        )
    return float(value)


def _merge(
    doc: Doc, preset: List[Span], entities: Iterable[Tuple[int, int, str, float]]
) -> Tuple[List[Tuple[Span, float]], Set[Tuple[int, int, str]]]:
    """The decoded entities that are not preset ones nor overlap one, as (Span, probability),
    and the (start, end, label) of the presets. (Known-label presets are decoded as themselves;
    presets with a label the pipe does not know are decoded as "O", so nothing overlaps them.)
    """
    taken = {(e.start, e.end, e.label_) for e in preset}
    occupied = numpy.zeros(len(doc), dtype=bool)
    for ent in preset:
        occupied[ent.start : ent.end] = True
    own = [
        (Span(doc, start, end, label=label), p)
        for start, end, label, p in entities
        if (start, end, label) not in taken and not occupied[start:end].any()
    ]
    return own, taken
