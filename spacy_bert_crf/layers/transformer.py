"""spacy-transformers' TransformerModel with windows bounded by wordpieces, length-bucketed
inference and checked loading.

Windows bounded by wordpieces: the span getter cuts docs into windows of tokens, but a window
of hashes, URLs or unsegmented CJK text can hold more wordpieces than the encoder takes, and
spacy-transformers then cuts the excess wordpieces off (`truncate_oversize_splits`): the tokens
there get no vector at all. Here every window with too many wordpieces (special tokens
included) is split in halves, recursively, until each part fits or is a single token, in
training and at inference. A single token longer than the limit keeps its first wordpieces.
Tokens that still have no wordpiece (invisible characters the tokenizer drops, such as U+200B
or U+FEFF) are reported by `tokens_without_wordpieces`.

Length-bucketed inference: spacy-transformers runs every window of every doc in a batch as one
tensor padded to the longest window, and attention cost is quadratic in that length. At
inference this model sorts the windows by wordpiece length and runs them in sub-batches of
similar length, each padded only to its own longest window; outputs are put back in the
original order and padding. Training (is_train=True) is spacy-transformers' forward pass over
the bounded windows. At inference the encoder runs without thinc's per-call mode switches and
under torch.inference_mode (encoder_predict): the same numbers, less work per call, which is
what counts at batch 1.

Checked loading: the weights, tokenizer and files are those of
`spacy-transformers.TransformerModel.v3`, but loading refuses saved data that could write
files or run code (tokenizer file names that are not plain names, `trust_remote_code`,
`auto_map`, Python files), says which component and file is damaged or incomplete, and a
path-like model name that is not a local folder is an error, never a Hub query.
"""
import contextlib
import copy
import functools
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, cast

import numpy
import torch
from spacy.tokens import Doc, Span
from spacy.util import SimpleFrozenDict, registry
from spacy_transformers.align import get_alignment, get_alignment_via_offset_mapping
from spacy_transformers.data_classes import FullTransformerBatch, WordpieceBatch
from spacy_transformers.layers._util import replace_listener_cfg as trf_replace_listener_cfg
from spacy_transformers.layers.hf_shim import HFShim
from spacy_transformers.layers.split_trf import split_trf_batch
from spacy_transformers.layers.trfs2arrays import trfs2arrays
from spacy_transformers.layers.transformer_model import TransformerModel
from spacy_transformers.layers.transformer_model import forward as trf_forward
from spacy_transformers.layers.transformer_model import huggingface_from_pretrained
from spacy_transformers.truncate import truncate_oversize_splits
from thinc.api import Model, chain, get_array_module
from thinc.types import Floats2d
from thinc.util import convert_recursive, is_xp_array
from transformers.tokenization_utils_base import BatchEncoding
from transformers.tokenization_utils_fast import PreTrainedTokenizerFast
from transformers.utils import ModelOutput

from ..threads import single_thread_in_forked_children
from .shim_predict import predict_eval
from .sparse_embeddings import SparseEmbeddingHFShim, set_sparse_embedding_updates
from .torch_params import use_torch_params
from .transformer_loading import (
    check_saved_transformer,
    read_saved_model,
    remote_code_keys,
    resolve_transformer_name,
)


@registry.architectures("spacy-bert-crf.TransformerModel.v1")
def build_transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict = SimpleFrozenDict(),
    transformer_config: dict = SimpleFrozenDict(),
    mixed_precision: bool = False,
    grad_scaler_config: dict = SimpleFrozenDict(),
    max_batch_pieces: int = 4096,
    min_fill: float = 0.75,
) -> Model[List[Doc], FullTransformerBatch]:
    """`spacy-transformers.TransformerModel.v3` (same arguments, same weights and files) whose
    windows are bounded by wordpieces, whose inference runs the windows in sub-batches of
    similar wordpiece length, and whose loading is checked.

    name (str): A local folder (see `resolve_transformer_name` for what counts as a path) or a
        Hugging Face Hub name; its weights are loaded at initialize only.
    max_batch_pieces (int): At most this many padded wordpieces (rows x length) per sub-batch
        (a single longer window still runs alone).
    min_fill (float): Start a new sub-batch before real wordpieces would fill less than this
        fraction of it (0 < min_fill <= 1).
    """
    model = build_transformer_model_v2(
        name, get_spans, tokenizer_config, transformer_config, mixed_precision,
        grad_scaler_config, max_batch_pieces, min_fill, freeze_input_embeddings=False,
    )
    # a replaced listener gets the tok2vec version that takes this version's settings
    model.attrs["replace_listener_cfg"] = replace_listener_cfg_naming(
        "spacy-bert-crf.Tok2VecTransformer.v1"
    )
    return model


@registry.architectures("spacy-bert-crf.TransformerModel.v2")
def build_transformer_model_v2(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict = SimpleFrozenDict(),
    transformer_config: dict = SimpleFrozenDict(),
    mixed_precision: bool = False,
    grad_scaler_config: dict = SimpleFrozenDict(),
    max_batch_pieces: int = 4096,
    min_fill: float = 0.75,
    freeze_input_embeddings: bool = False,
) -> Model[List[Doc], FullTransformerBatch]:
    """spacy-bert-crf.TransformerModel.v1, whose input embeddings (the wordpiece embedding
    matrix) can be kept as pretrained.

    freeze_input_embeddings (bool): Do not train the encoder's input embeddings
        (`get_input_embeddings()`): they get no gradient and no optimizer update. Training
        steps get cheaper where that matrix is most of the encoder, as in the multilingual
        encoders (e5-small: 96M of its 118M weights), whose optimizer update of the whole
        matrix, every step, costs about as much as a third of the step; the position
        embeddings and every layer still train.
    Other arguments as for spacy-bert-crf.TransformerModel.v1.
    """
    if max_batch_pieces < 1:
        raise ValueError(f"max_batch_pieces must be at least 1, got {max_batch_pieces}.")
    if not 0.0 < min_fill <= 1.0:
        raise ValueError(f"min_fill must be in (0, 1], got {min_fill}.")
    for setting, values in (("tokenizer_config", tokenizer_config),
                            ("transformer_config", transformer_config)):
        found = remote_code_keys(values)
        if found:
            raise ValueError(
                f"{setting} sets {', '.join(found)}: spacy-bert-crf.TransformerModel never runs "
                f"Python code shipped with a model. Remove the setting."
            )
    single_thread_in_forked_children()  # nlp.pipe(n_process=N) workers: see threads.py
    return BoundedTransformerModel(
        name,
        get_spans,
        dict(tokenizer_config),
        dict(transformer_config),
        mixed_precision,
        dict(grad_scaler_config),
        max_batch_pieces=max_batch_pieces,
        min_fill=min_fill,
        freeze_input_embeddings=freeze_input_embeddings,
    )


@registry.architectures("spacy-bert-crf.Tok2VecTransformer.v1")
def build_tok2vec_transformer(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict,
    pooling: Model,
    grad_factor: float = 1.0,
    transformer_config: dict = SimpleFrozenDict(),
    mixed_precision: bool = False,
    grad_scaler_config: dict = SimpleFrozenDict(),
    max_batch_pieces: int = 4096,
    min_fill: float = 0.75,
) -> Model[List[Doc], List[Floats2d]]:
    """spacy-bert-crf.TransformerModel.v1 as a component's own tok2vec, as
    spacy-transformers.Tok2VecTransformer.v3 is TransformerModel.v3's: what
    `nlp.replace_listeners("transformer", NAME, ["model.tok2vec"])` writes into the component's
    config, so that the component, saved with its own copy of the transformer, loads again.

    pooling (Model[Ragged, Floats2d]): Reduces each token's wordpiece vectors (the listener's).
    grad_factor (float): Scales the gradient into the transformer (the listener's).
    Other arguments as for spacy-bert-crf.TransformerModel.v1.
    """
    return build_tok2vec_transformer_v2(
        name, get_spans, tokenizer_config, pooling, grad_factor, transformer_config,
        mixed_precision, grad_scaler_config, max_batch_pieces, min_fill,
        freeze_input_embeddings=False,
    )


@registry.architectures("spacy-bert-crf.Tok2VecTransformer.v2")
def build_tok2vec_transformer_v2(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict,
    pooling: Model,
    grad_factor: float = 1.0,
    transformer_config: dict = SimpleFrozenDict(),
    mixed_precision: bool = False,
    grad_scaler_config: dict = SimpleFrozenDict(),
    max_batch_pieces: int = 4096,
    min_fill: float = 0.75,
    freeze_input_embeddings: bool = False,
) -> Model[List[Doc], List[Floats2d]]:
    """spacy-bert-crf.TransformerModel.v2 as a component's own tok2vec (what replace_listeners
    writes for it); arguments as for Tok2VecTransformer.v1 and TransformerModel.v2."""
    transformer = build_transformer_model_v2(
        name, get_spans, tokenizer_config, transformer_config, mixed_precision,
        grad_scaler_config, max_batch_pieces, min_fill,
        freeze_input_embeddings=freeze_input_embeddings,
    )
    return as_tok2vec(transformer, pooling, grad_factor)


def as_tok2vec(transformer: Model, pooling: Model, grad_factor: float) -> Model:
    """A transformer model as a component's own tok2vec: a chain of a chain, as
    spacy-transformers builds it, the structure a listener has once replace_listener has
    replaced it, so that the weights saved either way load either way."""
    return chain(chain(transformer, split_trf_batch()), trfs2arrays(pooling, grad_factor))


def replace_listener_cfg_naming(architecture: str) -> Callable[[dict, dict], dict]:
    """A model's replace_listener_cfg (the config nlp.replace_listeners writes for a listener's
    replacement): spacy-transformers' own (the transformer's config with the listener's
    pooling and grad_factor), naming `architecture` instead of
    spacy-transformers.Tok2VecTransformer.v3, which takes none of this plugin's own settings
    (max_batch_pieces, min_fill, ...), so the saved component would not load. A partial of a
    module-level function, so that the model stays picklable (spawned workers)."""
    return functools.partial(_replace_listener_cfg, architecture=architecture)


def _replace_listener_cfg(
    tok2vec_model_cfg: dict, listener_model_cfg: dict, *, architecture: str
) -> dict:
    result = trf_replace_listener_cfg(tok2vec_model_cfg, listener_model_cfg)
    if result.get("@architectures") == "spacy-transformers.Tok2VecTransformer.v3":
        result["@architectures"] = architecture
    return result


class BoundedTransformerModel(TransformerModel):
    """spacy-transformers' TransformerModel with windows bounded by wordpieces, bucketed
    inference, a checked model name at initialize and checked loading (see the module)."""

    def __init__(
        self,
        name: str,
        get_spans: Callable,
        tokenizer_config: dict,
        transformer_config: dict,
        mixed_precision: bool,
        grad_scaler_config: dict,
        *,
        max_batch_pieces: int,
        min_fill: float,
        freeze_input_embeddings: bool = False,
    ):
        super().__init__(
            name, get_spans, tokenizer_config, transformer_config, mixed_precision,
            grad_scaler_config,
        )
        # spacy-transformers' own forward, init and listeners call attrs["get_spans"]
        self.attrs["span_getter"] = get_spans
        self.attrs["get_spans"] = self.bounded_spans
        self.attrs["max_batch_pieces"] = max_batch_pieces
        self.attrs["min_fill"] = min_fill
        self.attrs["freeze_input_embeddings"] = freeze_input_embeddings
        # an implementation setting, not a config one: the same weights either way (see
        # sparse_embeddings.py); False trains the embedding matrix densely
        self.attrs["sparse_embedding_updates"] = True
        # one multi-tensor optimizer step for the other weights, with the row-sparse update
        # (fused_update.py); False: thinc's per-array loop
        self.attrs["fused_optimizer_update"] = True
        # TransformerModel.v1 names its own Tok2VecTransformer.v1 (see build_transformer_model)
        self.attrs["replace_listener_cfg"] = replace_listener_cfg_naming(
            "spacy-bert-crf.Tok2VecTransformer.v2"
        )
        # attention maps have no single sequence axis to re-pad: keep spacy-transformers' pass
        self.attrs["bucketed"] = not transformer_config.get("output_attentions", False)
        self._func = bucketed_forward
        self.init = _init

    @contextlib.contextmanager
    def use_params(self, params: Dict[Tuple[int, str], Any]) -> Iterator[None]:
        """thinc's Model.use_params, the encoder's torch weights included: what `spacy train`
        evaluates and saves with `use_averages = true` (see use_torch_params)."""
        with use_torch_params(self, params), super().use_params(params):
            yield

    def bounded_spans(self, docs: Iterable[Doc]) -> List[List[Span]]:
        """The configured span getter's windows, re-split where they exceed the wordpiece limit.

        RETURNS (List[List[Span]]): The windows of each doc.
        """
        nested = self.attrs["span_getter"](docs)
        if self.tokenizer is None:  # not initialized: nothing to count with
            return nested
        return fit_spans(nested, self.tokenizer, max_wordpieces(self))

    def copy(self) -> "BoundedTransformerModel":
        """A copy with the same settings, tokenizer and weights (nlp.replace_listeners copies
        the model; spacy-transformers' copy would drop the settings and the class)."""
        copied = BoundedTransformerModel(
            self.attrs["name"],
            self.attrs["span_getter"],
            dict(self._init_tokenizer_config),
            dict(self._init_transformer_config),
            False,
            {},
            max_batch_pieces=self.attrs["max_batch_pieces"],
            min_fill=self.attrs["min_fill"],
            freeze_input_embeddings=self.attrs["freeze_input_embeddings"],
        )
        for key in ("bucketed", "has_transformer", "flush_cache_chance", "replace_listener_cfg",
                    "sparse_embedding_updates"):
            copied.attrs[key] = self.attrs[key]
        copied._dims = copy.deepcopy(self._dims)
        copied.layers[0] = copy.deepcopy(self.layers[0])  # mixed precision lives in its shim
        return copied

    def from_bytes(self, bytes_data: bytes) -> "BoundedTransformerModel":
        """Load the model, refusing data that is damaged or that could write files or run code
        (see check_saved_transformer).

        RAISES (TransformerLoadError): The data is damaged or incomplete, or unsafe; the message
            names the component and the file when they are known.
        """
        def check_shims(msg: Dict[str, Any]) -> Dict[str, Any]:
            for node, shims_data in zip(self.walk(), msg["shims"]):
                for i, shim in enumerate(node.shims[: len(shims_data)]):
                    if isinstance(shim, HFShim):
                        shims_data[i] = check_saved_transformer(shims_data[i])
            return msg

        msg = read_saved_model(
            self, bytes_data, check_shims,
            kind="transformer model",
            damaged_hint="If training stopped while it was written (spaCy rewrites model-best at "
            "every new best score), use model-last, which is intact, or train again.",
            written_by="saved",
        )
        loaded = self.from_dict(convert_recursive(is_xp_array, self.ops.asarray, msg))
        return cast(BoundedTransformerModel, loaded)  # from_dict returns self


def _init(model: TransformerModel, X: Any = None, Y: Any = None) -> None:
    """Load the weights and tokenizer from the model name (once; a loaded pipeline has them)."""
    if model.attrs["has_transformer"]:
        return
    source = resolve_transformer_name(model.attrs["name"])
    hf_model = huggingface_from_pretrained(
        source, dict(model._init_tokenizer_config), dict(model._init_transformer_config)
    )
    model.attrs["set_transformer"](model, hf_model)
    freeze_input_embeddings(model)


def freeze_input_embeddings(model: TransformerModel) -> None:
    """Keep the encoder's input embeddings as they are (no gradient, so no optimizer update),
    where the model's freeze_input_embeddings setting asks for it and the encoder is loaded:
    at initialize and before every training forward pass."""
    if not model.attrs.get("freeze_input_embeddings") or not model.attrs["has_transformer"]:
        return
    encoder = model.transformer
    try:
        embeddings = encoder.get_input_embeddings()
    except NotImplementedError:
        embeddings = None
    if embeddings is None:
        raise ValueError(
            f"freeze_input_embeddings = true, but the encoder '{model.attrs['name']}' "
            f"({type(encoder).__name__}) does not say which are its input embeddings "
            f"(get_input_embeddings). Set freeze_input_embeddings = false."
        )
    for weight in embeddings.parameters():
        weight.requires_grad_(False)
        weight.grad = None


def sparse_embedding_updates(model: Model) -> None:
    """Update the encoder's input embedding matrix row by row (sparse_embeddings.py) unless its
    attrs["sparse_embedding_updates"] is False or the matrix is frozen; before every training
    forward pass, as freeze_input_embeddings (loading builds new torch weights)."""
    if not model.attrs.get("has_transformer") or model.attrs.get("freeze_input_embeddings"):
        return
    shim = model.layers[0].shims[0] if model.layers[0].shims else None
    if not isinstance(shim, HFShim):  # the ONNX encoder does not train
        return
    try:
        embeddings = shim._model.get_input_embeddings()
    except NotImplementedError:
        return
    if embeddings is not None:
        sparse = set_sparse_embedding_updates(
            shim, embeddings, bool(model.attrs.get("sparse_embedding_updates", True)))
        if sparse and isinstance(shim, SparseEmbeddingHFShim):  # the other weights: fused_update.py
            shim.fused_update = bool(model.attrs.get("fused_optimizer_update", True))


# ---------------------------------------------------------------------------------------------
# Windows bounded by wordpieces
# ---------------------------------------------------------------------------------------------


def max_wordpieces(model: TransformerModel) -> int:
    """RETURNS (int): The most wordpieces (special tokens included) one window may hold: the
    tokenizer's model_max_length, or the encoder's position embeddings if fewer."""
    limit = model.tokenizer.model_max_length
    config = getattr(model.transformer, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limit = min(limit, positions)
    return int(limit)


def count_wordpieces(tokenizer: Any, texts: Sequence[str]) -> List[int]:
    """RETURNS (List[int]): The number of wordpieces of each text, special tokens included."""
    if not texts:
        return []
    encoded = tokenizer(
        list(texts), add_special_tokens=True, return_attention_mask=False,
        return_token_type_ids=False, verbose=False,
    )
    return [len(ids) for ids in encoded["input_ids"]]


def fit_spans(
    nested_spans: Sequence[Sequence[Span]],
    tokenizer: Any,
    max_length: int,
    lengths: Optional[Sequence[int]] = None,
) -> List[List[Span]]:
    """Split every span with more than max_length wordpieces (special tokens included) in
    halves, recursively, until each part fits or is a single token.

    nested_spans (Sequence[Sequence[Span]]): The windows of each doc.
    lengths (Optional[Sequence[int]]): Wordpieces of each span in order, if already counted.
    RETURNS (List[List[Span]]): The windows of each doc; the same spans where all fit.
    """
    flat = [span for spans in nested_spans for span in spans]
    if lengths is None:
        lengths = count_wordpieces(tokenizer, [span.text for span in flat])
    if not flat or max(lengths) <= max_length:
        return [list(spans) for spans in nested_spans]
    fitted: List[List[Span]] = []
    k = 0
    for spans in nested_spans:
        doc_spans: List[Span] = []
        for span in spans:
            if lengths[k] > max_length and len(span) > 1:
                doc_spans.extend(_halve_to_fit(span, tokenizer, max_length))
            else:
                doc_spans.append(span)
            k += 1
        fitted.append(doc_spans)
    return fitted


def _halve_to_fit(span: Span, tokenizer: Any, max_length: int) -> List[Span]:
    middle = len(span) // 2
    halves = [span[:middle], span[middle:]]
    parts: List[Span] = []
    for half, n in zip(halves, count_wordpieces(tokenizer, [h.text for h in halves])):
        if n > max_length and len(half) > 1:
            parts.extend(_halve_to_fit(half, tokenizer, max_length))
        else:
            parts.append(half)
    return parts


def tokens_without_wordpieces(doc: Doc) -> numpy.ndarray:
    """Which tokens of a doc the transformer gave no wordpiece, so no vector: characters the
    tokenizer drops (U+200B, U+FEFF, U+202E, private use) or tokens no window covers.
    Whitespace tokens never have a wordpiece and are not flagged.

    doc (Doc): A doc the transformer component has processed (doc._.trf_data).
    RETURNS (numpy.ndarray): Booleans, shape (len(doc),); all False when the doc has no
        transformer output.
    RAISES (ValueError): doc._.trf_data does not belong to this doc's tokens.
    """
    flags = numpy.zeros(len(doc), dtype=bool)
    data = doc._.trf_data if Doc.has_extension("trf_data") else None
    if data is None or not len(doc):
        return flags
    lengths = data.align.lengths
    lengths = numpy.asarray(lengths.get() if hasattr(lengths, "get") else lengths)
    if lengths.shape[0] == 0:  # no window covered the doc
        lengths = numpy.zeros(len(doc), dtype="i")
    elif lengths.shape[0] != len(doc):
        raise ValueError(
            f"doc._.trf_data aligns {lengths.shape[0]} tokens, but the doc has {len(doc)} "
            f"(text starts {doc.text[:40]!r}): its transformer output belongs to another doc."
        )
    flags = lengths == 0
    if flags.any():  # whitespace is not flagged (one array op, not a loop over the tokens)
        flags &= doc.to_array("IS_SPACE") == 0
    return flags


# ---------------------------------------------------------------------------------------------
# Bucketed inference
# ---------------------------------------------------------------------------------------------


def bucketed_forward(
    model: TransformerModel, docs: List[Doc], is_train: bool
) -> Tuple[FullTransformerBatch, Callable]:
    """The forward pass of BoundedTransformerModel (and of the ONNX model, onnx/model.py): at
    inference, the windows run in sub-batches of similar wordpiece length (see the module
    docstring); in training, or when the encoder outputs attention maps, spacy-transformers'
    own forward pass over the bounded windows."""
    if is_train:
        # here, not at loading: a component's own copy of the transformer (replace_listeners)
        # loads through its chain's from_bytes, which builds new torch weights, all trainable
        freeze_input_embeddings(model)
        sparse_embedding_updates(model)
    if is_train or not model.attrs["bucketed"]:
        return trf_forward(model, docs, is_train)  # through bounded_spans
    tokenizer = model.tokenizer
    limit = max_wordpieces(model)
    nested_spans = [list(spans) for spans in model.attrs["span_getter"](docs)]
    flat_spans = [span for doc_spans in nested_spans for span in doc_spans]
    batch_encoding = _tokenize(tokenizer, [span.text for span in flat_spans])
    lengths = [int(n) for n in batch_encoding["attention_mask"].sum(1)] if flat_spans else []
    if lengths and max(lengths) > limit:  # rare: re-split, then tokenize again
        nested_spans = fit_spans(nested_spans, tokenizer, limit, lengths)
        flat_spans = [span for doc_spans in nested_spans for span in doc_spans]
        batch_encoding = _tokenize(tokenizer, [span.text for span in flat_spans])
    wordpieces = WordpieceBatch.from_batch_encoding(batch_encoding)
    if "offset_mapping" in batch_encoding:
        align = get_alignment_via_offset_mapping(flat_spans, batch_encoding["offset_mapping"])
    else:
        align = get_alignment(flat_spans, wordpieces.strings, tokenizer.all_special_tokens)
    # only a single token longer than the limit is still cut (it keeps its first wordpieces)
    wordpieces, align = truncate_oversize_splits(wordpieces, align, limit)
    mask = model.ops.to_numpy(wordpieces.attention_mask)
    lengths = [int(n) for n in mask.sum(1)] if len(wordpieces) else []
    groups = length_buckets(lengths, model.attrs["max_batch_pieces"], model.attrs["min_fill"])
    transformer = model.layers[0]
    if len(groups) <= 1:
        model_output = encoder_predict(transformer, wordpieces)
    else:
        outputs = [
            encoder_predict(transformer, _select(wordpieces, rows, max(lengths[i] for i in rows)))
            for rows in groups
        ]
        model_output = _assemble(outputs, groups, len(lengths), wordpieces.input_ids.shape[1])
    output = FullTransformerBatch(
        spans=nested_spans, wordpieces=wordpieces, model_output=model_output, align=align
    )
    return output, lambda d_output: docs


def encoder_predict(layer: Model, wordpieces: WordpieceBatch) -> Any:
    """layer.predict(wordpieces) for the encoder layer (spacy-transformers' HFWrapper, or the
    ONNX one), without thinc's per-call eval()/train() walk over every submodule (see
    shim_predict). The outputs are inference tensors: spacy-transformers turns them into arrays
    per doc."""
    return predict_eval(layer, wordpieces)


def _tokenize(tokenizer: Any, texts: List[str]) -> BatchEncoding:
    """spacy-transformers' huggingface_tokenize, without transformers' log line about
    sequences over the maximum length (they are re-split here)."""
    token_data = tokenizer(
        texts,
        add_special_tokens=True,
        return_attention_mask=True,
        return_offsets_mapping=isinstance(tokenizer, PreTrainedTokenizerFast),
        return_tensors="np",
        return_token_type_ids=None,
        padding="longest",
        verbose=False,
    )
    token_data["input_texts"] = [
        tokenizer.convert_ids_to_tokens(ids) for ids in token_data["input_ids"]
    ]
    token_data["pad_token"] = tokenizer.pad_token
    return token_data


def length_buckets(lengths: Sequence[int], max_pieces: int, min_fill: float) -> List[List[int]]:
    """Row indices grouped into sub-batches of similar length, shortest first.

    A row joins the current group unless the group would then hold more than max_pieces padded
    pieces or be filled by real pieces to less than min_fill; every row is in exactly one group.
    """
    groups: List[List[int]] = []
    current: List[int] = []
    total = 0
    for i in sorted(range(len(lengths)), key=lambda j: lengths[j]):
        n = lengths[i]
        padded = (len(current) + 1) * n  # sorted: this row is the group's longest
        if current and (padded > max_pieces or (total + n) < min_fill * padded):
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += n
    if current:
        groups.append(current)
    return groups


def _select(wordpieces: WordpieceBatch, rows: List[int], length: int) -> WordpieceBatch:
    xp = get_array_module(wordpieces.input_ids)
    index = xp.asarray(rows)
    return WordpieceBatch(
        strings=[wordpieces.strings[i][:length] for i in rows],
        input_ids=wordpieces.input_ids[index, :length],
        attention_mask=wordpieces.attention_mask[index, :length],
        lengths=[wordpieces.lengths[i] for i in rows],
        token_type_ids=(
            wordpieces.token_type_ids[index, :length]
            if wordpieces.token_type_ids is not None
            else None
        ),
    )


def _assemble(
    outputs: List[ModelOutput], groups: List[List[int]], n_rows: int, width: int
) -> ModelOutput:
    """One ModelOutput in the original row order: per-row tensors are scattered back, tensors
    with a sequence axis are zero-padded to the full batch's padded length."""
    first = outputs[0]
    merged = ModelOutput()
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            merged[key] = _scatter([o[key] for o in outputs], groups, n_rows, width)
        elif isinstance(value, tuple) and all(isinstance(t, torch.Tensor) for t in value):
            merged[key] = tuple(
                _scatter([o[key][k] for o in outputs], groups, n_rows, width)
                for k in range(len(value))
            )
    return merged


def _scatter(
    parts: List[torch.Tensor], groups: List[List[int]], n_rows: int, width: int
) -> torch.Tensor:
    ref = parts[0]
    shape: Tuple[int, ...] = (n_rows,) + tuple(ref.shape[1:])
    has_seq = ref.dim() >= 3
    if has_seq:
        shape = (n_rows, width) + tuple(ref.shape[2:])
    out = ref.new_zeros(shape)
    for part, rows in zip(parts, groups):
        index = torch.as_tensor(rows, device=out.device)
        if has_seq:
            out[index, : part.shape[1]] = part
        else:
            out[index] = part
    return out
