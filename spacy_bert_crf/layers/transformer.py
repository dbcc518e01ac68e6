"""spacy-transformers' TransformerModel with length-bucketed inference.

spacy-transformers runs every strided window of every doc in a batch through the transformer as
one tensor padded to the longest window. The longest window grows with the number of windows (a
100k-token document has ~1,000 windows, and some window of numbers or rare names is 2.2x longer
in wordpieces than the average one), and attention cost is quadratic in that length, so the cost
per token of a long document grows with its length. At inference this model sorts the windows by
wordpiece length and runs them in sub-batches of similar length, each padded only to its own
longest window; outputs are put back in the original order and padding. Training (is_train=True)
is exactly spacy-transformers' forward pass, and the weights, tokenizer and serialization are
those of `spacy-transformers.TransformerModel.v3`.
"""
from typing import Callable, List, Sequence, Tuple

import torch
from spacy.tokens import Doc
from spacy.util import SimpleFrozenDict, registry
from spacy_transformers.align import get_alignment, get_alignment_via_offset_mapping
from spacy_transformers.data_classes import FullTransformerBatch, WordpieceBatch
from spacy_transformers.layers.transformer_model import TransformerModel
from spacy_transformers.layers.transformer_model import forward as trf_forward
from spacy_transformers.layers.transformer_model import huggingface_tokenize
from spacy_transformers.truncate import truncate_oversize_splits
from thinc.api import Model, get_array_module
from transformers.utils import ModelOutput


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
    inference runs the windows in sub-batches of similar wordpiece length.

    max_batch_pieces (int): At most this many padded wordpieces (rows x length) per sub-batch
        (a single longer window still runs alone).
    min_fill (float): Start a new sub-batch before real wordpieces would fill less than this
        fraction of it (0 < min_fill <= 1).
    """
    if max_batch_pieces < 1:
        raise ValueError(f"max_batch_pieces must be at least 1, got {max_batch_pieces}.")
    if not 0.0 < min_fill <= 1.0:
        raise ValueError(f"min_fill must be in (0, 1], got {min_fill}.")
    model = TransformerModel(
        name,
        get_spans,
        dict(tokenizer_config),
        dict(transformer_config),
        mixed_precision,
        dict(grad_scaler_config),
    )
    model.attrs["max_batch_pieces"] = max_batch_pieces
    model.attrs["min_fill"] = min_fill
    # attention maps have no single sequence axis to re-pad: keep spacy-transformers' pass
    model.attrs["bucketed"] = not transformer_config.get("output_attentions", False)
    model._func = _forward
    return model


def _forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[FullTransformerBatch, Callable]:
    if is_train or not model.attrs["bucketed"]:
        return trf_forward(model, docs, is_train)
    tokenizer = model.tokenizer
    nested_spans = model.attrs["get_spans"](docs)
    flat_spans = [span for doc_spans in nested_spans for span in doc_spans]
    batch_encoding = huggingface_tokenize(tokenizer, [span.text for span in flat_spans])
    wordpieces = WordpieceBatch.from_batch_encoding(batch_encoding)
    if "offset_mapping" in batch_encoding:
        align = get_alignment_via_offset_mapping(flat_spans, batch_encoding["offset_mapping"])
    else:
        align = get_alignment(flat_spans, wordpieces.strings, tokenizer.all_special_tokens)
    wordpieces, align = truncate_oversize_splits(wordpieces, align, tokenizer.model_max_length)
    lengths = [int(n) for n in model.ops.to_numpy(wordpieces.attention_mask).sum(1)] if len(wordpieces) else []
    groups = length_buckets(lengths, model.attrs["max_batch_pieces"], model.attrs["min_fill"])
    transformer = model.layers[0]
    if len(groups) <= 1:
        model_output = transformer.predict(wordpieces)
    else:
        outputs = [transformer.predict(_select(wordpieces, rows, max(lengths[i] for i in rows)))
                   for rows in groups]
        model_output = _assemble(outputs, groups, len(lengths), wordpieces.input_ids.shape[1])
    output = FullTransformerBatch(
        spans=nested_spans, wordpieces=wordpieces, model_output=model_output, align=align
    )
    return output, lambda d_output: docs


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
