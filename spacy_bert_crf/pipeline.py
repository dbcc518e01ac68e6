"""The ``crf_ner`` pipeline component: named entities from a constrained linear-chain CRF."""
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

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

from .decoding import Decoded, TagInventory, allowed_tags, check_upstream, decode
from .decoding import hold_tokens_without_wordpieces
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
    scorer (Optional[Callable]): The scoring method.
    """
    return CRFEntityRecognizer(
        nlp.vocab, model, name, spans_key=spans_key, overwrite_ents=overwrite_ents, scorer=scorer
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
        scorer: Optional[Callable] = None,
    ) -> None:
        """Initialize the component.

        vocab (Vocab): The shared vocabulary.
        model (Model): The tagger model.
        name (str): The component instance name, used to add entries to the losses.
        spans_key (Optional[str]): Key of the span group with the entity confidences.
        overwrite_ents (bool): Whether to replace entities set by earlier components instead of
            keeping them as constraints.
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
        self.scorer = scorer
        self.cfg: Dict[str, Any] = {"labels": [], "nI": None}

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

        RETURNS (List[List[Tuple[int, int, str, float]]]): (start, end, label, confidence) per
            entity, per doc.
        """
        docs = list(docs)
        if not self._is_initialized():
            raise ValueError(Errors.E109.format(name=self.name))
        if not any(len(doc) for doc in docs):
            return [[] for _ in docs]
        listens_to_transformer = check_upstream(self.model, docs, self.name)
        emissions = self.model.predict(docs)
        inventory = TagInventory(self.tags, self.scheme)  # once per batch, not per doc
        allowed = [self._allowed_tags(doc, inventory) for doc in docs]
        if listens_to_transformer:
            hold_tokens_without_wordpieces(
                docs, allowed, inventory, overwrite_ents=self.overwrite_ents, name=self.name
            )
        return decode(
            self.model, emissions, allowed, inventory.tags, self.scheme,
            with_scores=self.spans_key is not None,
        )

    def _set_constraints(self) -> None:
        """Derive the CRF's constraints from the tags and hand them to the model's CRF layer."""
        trans, start, end = constraints(self.tags, self.scheme)
        set_constraints(
            self.model, CRFConstraints(trans, start, end, continuations(self.tags, self.scheme))
        )

    def _allowed_tags(
        self, doc: Doc, inventory: Optional[TagInventory] = None
    ) -> numpy.ndarray:
        """The tags each token may take, (len(doc), n_tags) bool: see decoding.allowed_tags."""
        inventory = inventory or TagInventory(self.tags, self.scheme)
        return allowed_tags(
            doc, inventory, frozenset(self.labels), overwrite_ents=self.overwrite_ents
        )

    def set_annotations(self, docs: Iterable[Doc], decoded: Decoded) -> None:
        """Write doc.ents (and the span group with confidences) from predict's output.

        Preset entities (see overwrite_ents) stay in doc.ents as they were (with their kb_id);
        the span group holds the entities this component predicted, with their confidences.
        """
        for doc, entities in zip(docs, decoded):
            preset = [] if self.overwrite_ents else list(doc.ents)
            taken = {(e.start, e.end, e.label_) for e in preset}
            occupied = numpy.zeros(len(doc), dtype=bool)
            for ent in preset:
                occupied[ent.start : ent.end] = True
            own = [
                (Span(doc, start, end, label=label), p)
                for start, end, label, p in entities
                if (start, end, label) not in taken and not occupied[start:end].any()
            ]
            doc.ents = sorted(preset + [span for span, _ in own], key=lambda span: span.start)
            if self.spans_key is not None:
                scores = numpy.asarray([p for _, p in own], dtype="float32")
                spans = [span for span, _ in own]
                doc.spans[self.spans_key] = SpanGroup(
                    doc, name=self.spans_key, spans=spans, attrs={"scores": scores}
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
        accumulated here (they are updated by the next finish_update).

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
