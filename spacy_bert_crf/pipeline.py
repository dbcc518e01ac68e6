"""The ``crf_ner`` pipeline component: named entities from a constrained linear-chain CRF."""
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy
import srsly
from spacy import util
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.strings import get_string_id
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, set_dropout_rate
from thinc.types import Floats2d

from .annotation import MAX_TEMPERATURE, MIN_TEMPERATURE, analyses_as_spans, check_max_length
from .annotation import check_probability, check_temperature, decoding_inputs, preset_entities
from .annotation import write_annotations
from .decoding import Candidates, Decoded, DocDecoding, SpanTemperatures, TagInventory
from .decoding import allowed_tags, decode, nbest, tag_inventory
from .distillation.loss import check_distill_weight
from .layers.crf import CRFConstraints, set_constraints
from .layers.torch_params import use_torch_params
from .loss import crf_loss, warn_on_loss_scales
from .serialization import load_model_bytes
from .tag_schemes import OUT, constraints, continuations, make_tags
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
MENTION_DTYPE = "<u8"  # the training mentions' hashes, little-endian on disk
# MIN_TEMPERATURE, MAX_TEMPERATURE: the bounds of the temperature setting (see annotation.py)
__all__ = ["CRFEntityRecognizer", "make_crf_ner", "MIN_TEMPERATURE", "MAX_TEMPERATURE"]


@Language.factory(
    "crf_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
    default_config={
        "model": DEFAULT_CRF_NER_MODEL,
        "spans_key": "crf_ner",
        "overwrite_ents": False,
        "respect_sentences": False,
        "threshold": 0.0,
        "candidates_key": None,
        "candidates_threshold": 0.1,
        "candidates_max_length": 16,
        "distill_weight": 0.0,
        "normalize_loss": True,
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
    respect_sentences: bool,
    threshold: float,
    candidates_key: Optional[str],
    candidates_threshold: float,
    candidates_max_length: int,
    distill_weight: float,
    normalize_loss: bool,
    scorer: Optional[Callable],
) -> "CRFEntityRecognizer":
    """Create a CRFEntityRecognizer component.

    model (Model[List[Doc], List[Floats2d]]): A spacy-bert-crf tagger model (CRFTagger.v1/v2 or
        SoftmaxTagger.v1/v2).
    spans_key (Optional[str]): Also store the entities with their confidences in
        doc.spans[spans_key] (attrs["scores"]); None to skip.
    overwrite_ents (bool): False (default): entities already set by an earlier component (e.g.
        an entity_ruler) and tokens it set to "O" are kept, and the rest of the doc is decoded
        conditioned on them. True: predict every token, replacing earlier entities.
    respect_sentences (bool): True: no entity crosses a sentence boundary (from a senter,
        parser or sentencizer before this pipe, or the corpus), by construction: the CRF is
        decoded with a sequence's start and end constraints at every boundary, for the
        entities, their confidences, the candidates and nbest alike. Docs without sentence
        boundaries are decoded as one sequence. Training is unchanged. False (default): the
        doc is one sequence.
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
    normalize_loss (bool): Training only. True (default): the gradient is that of the batch's
        loss divided by its number of tokens (a mean over tokens). False: the loss summed over
        tokens, as spaCy's own tagger, ner, parser and spancat take theirs. Set it to False when
        crf_ner shares its transformer (or tok2vec) with such components: their gradients are
        then on the same scale as crf_ner's, instead of about as many times larger as a batch
        has tokens (initialize warns when it sees this).
    scorer (Optional[Callable]): The scoring method.
    """
    return CRFEntityRecognizer(
        nlp.vocab, model, name, spans_key=spans_key, overwrite_ents=overwrite_ents,
        respect_sentences=respect_sentences, threshold=threshold, candidates_key=candidates_key,
        candidates_threshold=candidates_threshold, candidates_max_length=candidates_max_length,
        distill_weight=distill_weight, normalize_loss=normalize_loss, scorer=scorer,
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
        respect_sentences: bool = False,
        threshold: float = 0.0,
        candidates_key: Optional[str] = None,
        candidates_threshold: float = 0.1,
        candidates_max_length: int = 16,
        distill_weight: float = 0.0,
        normalize_loss: bool = True,
        scorer: Optional[Callable] = None,
    ) -> None:
        """Initialize the component.

        vocab (Vocab): The shared vocabulary.
        model (Model): The tagger model.
        name (str): The component instance name, used to add entries to the losses.
        The settings after `*` are those of the factory: see make_crf_ner.
        """
        if "scheme" not in model.attrs or not model.has_ref("crf"):
            raise ValueError(
                f"The {name!r} component needs a spacy-bert-crf tagger model "
                "(spacy-bert-crf.CRFTagger.v1/v2 or SoftmaxTagger.v1/v2), got "
                f"{model.name!r}."
            )
        single_thread_in_forked_children()  # nlp.pipe(n_process=N) workers: see threads.py
        self.vocab = vocab
        self.model = model
        self.name = name
        self.spans_key = spans_key
        self.overwrite_ents = overwrite_ents
        self.respect_sentences = respect_sentences
        self.threshold = check_probability(threshold, "threshold", name)
        self.candidates_key = candidates_key
        self.candidates_threshold = check_probability(
            candidates_threshold, "candidates_threshold", name
        )
        self.candidates_max_length = check_max_length(candidates_max_length, name)
        self.distill_weight = check_distill_weight(distill_weight, name)
        if not isinstance(normalize_loss, bool):
            raise ValueError(
                f"Invalid normalize_loss {normalize_loss!r} for {name!r}: expected true or false."
            )
        self.normalize_loss = normalize_loss
        self.scorer = scorer
        # temperature, mention_temperatures: set by calibration.fit_temperature, saved with the
        # pipe (cfg)
        self.cfg: Dict[str, Any] = {
            "labels": [], "nI": None, "temperature": 1.0, "mention_temperatures": None,
        }
        # the entity texts of the training data, as sorted unique 64-bit hashes (spaCy's string
        # hash), recorded by initialize: see mention_temperatures
        self._mentions = numpy.zeros((0,), dtype=MENTION_DTYPE)
        self._seen: Optional[frozenset] = None

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
        self.cfg["temperature"] = check_temperature(value, self.name)

    @property
    def mention_temperatures(self) -> Optional[Tuple[float, float]]:
        """RETURNS (Optional[Tuple[float, float]]): The temperatures of the confidences of
        entities and candidate spans whose text was (first) or was not (second) an entity's text
        in the training data (`mentions`), in place of `temperature`, which the n-best
        probabilities keep. None (the default): `temperature` for all. Set by
        calibration.fit_temperature when the pipe has mentions: a model is more often wrong on
        names it never saw, and new data holds more of them than dev data, so one temperature
        fitted on dev leaves the confidences over-confident there."""
        pair = self.cfg.get("mention_temperatures")
        return None if pair is None else (float(pair[0]), float(pair[1]))

    @mention_temperatures.setter
    def mention_temperatures(self, value: Optional[Tuple[float, float]]) -> None:
        if value is None:
            self.cfg["mention_temperatures"] = None
            return
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(
                f"Invalid mention_temperatures {value!r} for {self.name!r}: expected None or two "
                f"temperatures (seen in training, not seen)."
            )
        if not len(self._mentions):
            raise ValueError(
                f"{self.name!r} has no training mentions to tell seen from unseen entities: "
                f"initialize it on training data, or call set_mentions(texts) first."
            )
        self.cfg["mention_temperatures"] = [check_temperature(v, self.name) for v in value]

    @property
    def mentions(self) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): The hashes (spaCy's get_string_id, uint64, sorted, unique) of
        the entity texts the pipe was initialized on: no text is stored."""
        return self._mentions

    def set_mentions(self, texts: Iterable[str]) -> None:
        """Record the entity texts of the training data (initialize does it from its
        examples): mention_temperatures tells the entities whose text is among them.

        texts (Iterable[str]): The texts of the training entities.
        """
        hashes = []
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(
                    f"{self.name}.set_mentions takes entity texts (str), got {text!r}."
                )
            hashes.append(get_string_id(text))
        self._mentions = numpy.unique(numpy.asarray(hashes, dtype=MENTION_DTYPE))
        self._seen = None

    def is_seen(self, text: str) -> bool:
        """RETURNS (bool): Whether `text` was the text of an entity in the training data."""
        if self._seen is None:
            self._seen = frozenset(self._mentions.tolist())
        return get_string_id(text) in self._seen

    def _span_temperatures(self, docs: Sequence[Doc]) -> Optional[SpanTemperatures]:
        pair = self.mention_temperatures
        if pair is None:
            return None

        def group(i: int, start: int, end: int) -> int:
            return 0 if self.is_seen(docs[i][start:end].text) else 1

        return SpanTemperatures(pair, group)

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
        # a new model: its calibration is not this one's
        self.cfg["temperature"] = 1.0
        self.cfg["mention_temperatures"] = None
        self.set_mentions(ent.text for eg in get_examples() for ent in eg.reference.ents)
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
        if nlp is not None:
            warn_on_loss_scales(self, nlp)

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
            span_temperatures=self._span_temperatures(docs),
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
        if isinstance(docs, Doc):  # iterating a Doc gives its tokens
            raise TypeError(f"{self.name}.nbest takes an iterable of Docs, not one Doc: pass "
                            "[doc] (and read the result's [0]).")
        docs = list(docs)
        inputs = self._decoding_inputs(docs, own_spans=True)
        if inputs is None:
            return [[] for _ in docs]
        emissions, allowed, inventory = inputs
        found = nbest(
            self.model, emissions, allowed, inventory.tags, self.scheme, k,
            temperature=self.temperature,
        )
        return [
            analyses_as_spans(doc, analyses, self._presets(doc, own_spans=True))
            for doc, analyses in zip(docs, found)
        ]

    def _decoding_inputs(
        self, docs: List[Doc], *, own_spans: bool = False
    ) -> Optional[Tuple[List[Floats2d], List[numpy.ndarray], TagInventory]]:
        """The emissions and the allowed tags of the docs: see annotation.decoding_inputs."""
        return decoding_inputs(self, docs, own_spans=own_spans)

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
        inventory = inventory or tag_inventory(tuple(self.tags), self.scheme)
        return allowed_tags(
            doc, inventory, frozenset(self.labels), overwrite_ents=self.overwrite_ents, ents=ents,
            sentences=self.respect_sentences,
        )

    def _presets(self, doc: Doc, *, own_spans: bool = False) -> List[Span]:
        """The entities set by earlier components, which this pipe keeps: see
        annotation.preset_entities."""
        return preset_entities(
            doc, overwrite_ents=self.overwrite_ents, spans_key=self.spans_key, own_spans=own_spans
        )

    def set_annotations(self, docs: Iterable[Doc], decoded: Decoded) -> None:
        """Write doc.ents (and the span groups with confidences) from predict's output.

        Preset entities (see overwrite_ents) stay in doc.ents as they were (with their kb_id);
        the span group holds the entities this component predicted, with their confidences
        (attrs["scores"]) and whether each fell below the threshold and so left doc.ents
        (attrs["below_threshold"]). The candidates' span group holds every candidate span but
        the preset entities, with attrs["scores"].
        """
        for doc, decoding in zip(docs, decoded):
            write_annotations(
                doc, decoding, self._presets(doc), threshold=self.threshold,
                spans_key=self.spans_key, candidates_key=self.candidates_key,
            )

    # ------------------------------------------------------------------------- update
    def use_params(self, params: dict) -> Iterator[None]:
        """Modify the pipe's model to use the given parameter values (with `use_averages`, the
        optimizer's averages): thinc's layers and the CRF's torch weights alike (see
        layers/torch_params.py). A generator, as TrainablePipe's: Language.use_params steps
        it with next().

        params (dict): The parameter values, keyed as the optimizer keys them.

        DOCS: https://spacy.io/api/pipe#use_params
        """
        with use_torch_params(self.model, params), self.model.use_params(params):
            yield

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
            divided by the number of tokens in the batch unless normalize_loss is False.
        """
        return crf_loss(self, list(examples), emissions)

    # -------------------------------------------------------------------- serialization
    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """Serialize the pipe to a bytestring.

        DOCS: https://spacy.io/api/pipe#to_bytes
        """
        self._validate_serialization_attrs()
        serialize = {
            "cfg": lambda: srsly.json_dumps(self.cfg),
            "vocab": lambda: self.vocab.to_bytes(exclude=exclude),
            "model": lambda: self.model.to_bytes(),
            "mentions": lambda: self._mentions.astype(MENTION_DTYPE).tobytes(),
        }
        return util.to_bytes(serialize, exclude)

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        """Serialize the pipe to disk.

        DOCS: https://spacy.io/api/pipe#to_disk
        """
        self._validate_serialization_attrs()
        serialize = {
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "vocab": lambda p: self.vocab.to_disk(p, exclude=exclude),
            "model": lambda p: self.model.to_disk(p),
            "mentions": lambda p: p.write_bytes(self._mentions.astype(MENTION_DTYPE).tobytes()),
        }
        util.to_disk(path, serialize, exclude)

    def _load_mentions(self, data: bytes) -> None:
        if len(data) % numpy.dtype(MENTION_DTYPE).itemsize:
            raise ValueError(
                f"The mentions of {self.name!r} are damaged: {len(data)} bytes is not a whole "
                f"number of 64-bit hashes."
            )
        self._mentions = numpy.frombuffer(data, dtype=MENTION_DTYPE).copy()
        self._seen = None

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()):
        """Load the pipe from a bytestring.

        DOCS: https://spacy.io/api/pipe#from_bytes
        """
        self._validate_serialization_attrs()
        deserialize = {
            "cfg": lambda b: self.cfg.update(srsly.json_loads(b)),
            "vocab": lambda b: self.vocab.from_bytes(b, exclude=exclude),
            "model": lambda b: load_model_bytes(self, b, "its serialized model bytes"),
            "mentions": self._load_mentions,
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
            load_model_bytes(self, data, f"the file {p}")

        def load_mentions(p: Path) -> None:
            if p.exists():  # pipelines saved before 2026-12-04 have none
                self._load_mentions(p.read_bytes())

        deserialize: Dict[str, Callable[[Path], Any]] = {
            "cfg": lambda p: self.cfg.update(srsly.read_json(p)),
            "vocab": lambda p: self.vocab.from_disk(p, exclude=exclude),
            "model": load_model,
            "mentions": load_mentions,
        }
        util.from_disk(path, deserialize, exclude)
        return self
