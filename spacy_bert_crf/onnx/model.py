"""`spacy-bert-crf.OnnxTransformerModel.v1`: the transformer model of an exported pipeline,
whose encoder runs in ONNX Runtime.

Everything but the encoder is `spacy-bert-crf.TransformerModel.v1`'s: the same span getter,
windows bounded by wordpieces, length-bucketed inference, tokenizer (the saved files of the
torch pipeline) and alignment, so the listeners and `crf_ner` receive the same kind of
`doc._.trf_data` (its model output holds `last_hidden_state` only). The weights are an ONNX
graph saved inside the component's `model` file with the tokenizer and the encoder's config;
`python -m spacy_bert_crf export` writes them (see export.py). The model is inference only:
initializing or updating it raises `ExportedModelError`.
"""
import copy
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

import numpy
import srsly
import torch
from spacy.tokens import Doc
from spacy.util import make_tempdir, registry
from spacy_transformers.data_classes import FullTransformerBatch, WordpieceBatch
from spacy_transformers.layers._util import replace_listener
from thinc.api import Model, Shim
from thinc.types import Floats2d
from thinc.util import convert_recursive, is_xp_array
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import ModelOutput

from ..layers.transformer import (
    BoundedTransformerModel,
    as_tok2vec,
    bucketed_forward,
    replace_listener_cfg_naming,
)
from ..layers.transformer_loading import (
    LoadProblem,
    check_saved_transformer,
    read_saved_model,
)
from ..threads import single_thread_in_forked_children

ARCHITECTURE = "spacy-bert-crf.OnnxTransformerModel.v1"
TOK2VEC_ARCHITECTURE = "spacy-bert-crf.OnnxTok2VecTransformer.v1"
INSTALL_HINT = "pip install 'spacy-bert-crf[onnx]'"
# Encoder inputs the exported graph may take, in the order the tokenizer can produce them.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ExportedModelError(RuntimeError):
    """An exported (ONNX Runtime) transformer was asked to train or initialize."""


def refuse_training(what: str) -> ExportedModelError:
    return ExportedModelError(
        f"Can't {what} this transformer: it runs in ONNX Runtime ({ARCHITECTURE}, written by "
        f"`python -m spacy_bert_crf export`), which is inference only. Train or fine-tune the "
        f"torch pipeline it was exported from, then export it again."
    )


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"{ARCHITECTURE} needs onnxruntime, which is not installed ({err}). Install it "
            f"with `{INSTALL_HINT}`."
        ) from None
    return onnxruntime


@registry.architectures(ARCHITECTURE)
def build_onnx_transformer_model(
    get_spans: Callable,
    max_batch_pieces: int = 4096,
    min_fill: float = 0.75,
    threads: int = 0,
) -> Model[List[Doc], FullTransformerBatch]:
    """The transformer model of an exported pipeline: windows, tokenization, bucketing and
    alignment as in `spacy-bert-crf.TransformerModel.v1`, the encoder in ONNX Runtime. Its
    weights come from the pipeline folder only (written by `python -m spacy_bert_crf
    export`); it can't be initialized or trained.

    get_spans (Callable): The span getter of the torch pipeline it was exported from.
    max_batch_pieces (int): At most this many padded wordpieces (rows x length) per sub-batch.
    min_fill (float): Start a new sub-batch before real wordpieces would fill less than this
        fraction of it (0 < min_fill <= 1).
    threads (int): ONNX Runtime's intra-op threads; 0 lets ONNX Runtime choose (one per
        physical core).
    """
    if max_batch_pieces < 1:
        raise ValueError(f"max_batch_pieces must be at least 1, got {max_batch_pieces}.")
    if not 0.0 < min_fill <= 1.0:
        raise ValueError(f"min_fill must be in (0, 1], got {min_fill}.")
    if threads < 0:
        raise ValueError(f"threads must be 0 (ONNX Runtime's choice) or more, got {threads}.")
    single_thread_in_forked_children()
    return OnnxTransformerModel(
        get_spans, max_batch_pieces=max_batch_pieces, min_fill=min_fill, threads=threads
    )


@registry.architectures(TOK2VEC_ARCHITECTURE)
def build_onnx_tok2vec_transformer(
    get_spans: Callable,
    pooling: Model,
    grad_factor: float = 1.0,
    max_batch_pieces: int = 4096,
    min_fill: float = 0.75,
    threads: int = 0,
) -> Model[List[Doc], List[Floats2d]]:
    """spacy-bert-crf.OnnxTransformerModel.v1 as a component's own tok2vec: what
    `nlp.replace_listeners("transformer", NAME, ["model.tok2vec"])` writes into the component's
    config in an exported pipeline, so that the component, saved with its own copy of the
    encoder, loads again (as spacy-bert-crf.Tok2VecTransformer.v1 does for the torch model).

    pooling (Model[Ragged, Floats2d]): Reduces each token's wordpiece vectors (the listener's).
    grad_factor (float): The listener's; the model is inference only.
    Other arguments as for spacy-bert-crf.OnnxTransformerModel.v1.
    """
    transformer = build_onnx_transformer_model(get_spans, max_batch_pieces, min_fill, threads)
    return as_tok2vec(transformer, pooling, grad_factor)


class OnnxShim(Shim):
    """Holds the ONNX graph, the tokenizer and the encoder's config, and the ONNX Runtime
    session that runs the graph. Serialized as the torch HFShim's config and tokenizer files
    plus the graph's bytes (`onnx`) and how it was made (`export`)."""

    def __init__(self, threads: int = 0):
        super().__init__(None)
        self.threads = threads
        self.tokenizer: Any = None
        self.config: Any = None
        self.onnx_model: bytes = b""
        self.export_info: Dict[str, Any] = {}
        self._tokenizer_files: Dict[str, Any] = {}
        self._session: Any = None
        self._input_names: Tuple[str, ...] = ()

    @property
    def loaded(self) -> bool:
        return bool(self.onnx_model)

    def set_encoder(
        self,
        onnx_model: bytes,
        hf_config: Dict[str, Any],
        tokenizer_files: Dict[str, Any],
        export_info: Dict[str, Any],
    ) -> None:
        """Set the graph, the encoder's config (a transformers config dict) and the saved
        tokenizer files (as spacy-transformers' HFShim saves them, with `kwargs`)."""
        with make_tempdir() as tmp:
            srsly.write_json(tmp / "config.json", hf_config)
            config = AutoConfig.from_pretrained(str(tmp))
            files = dict(tokenizer_files)
            kwargs = files.pop("kwargs", {})
            for name, content in files.items():
                (tmp / name).write_bytes(content)
            tokenizer = AutoTokenizer.from_pretrained(str(tmp), **kwargs)
        self.config = config
        self.tokenizer = tokenizer
        self._tokenizer_files = dict(tokenizer_files)
        self.onnx_model = bytes(onnx_model)
        self.export_info = dict(export_info)
        self._session = None
        self.session  # noqa: B018  (fail at load, not at the first doc, if the graph is bad)

    @property
    def session(self) -> Any:
        if self._session is None:
            ort = import_onnxruntime()
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(
                self.onnx_model, options, providers=["CPUExecutionProvider"]
            )
            self._input_names = tuple(i.name for i in self._session.get_inputs())
            unknown = [name for name in self._input_names if name not in ENCODER_INPUTS]
            if unknown:
                raise ValueError(
                    f"The ONNX encoder takes inputs {', '.join(unknown)}, which "
                    f"{ARCHITECTURE} can't provide (only {', '.join(ENCODER_INPUTS)})."
                )
        return self._session

    def run(self, wordpieces: WordpieceBatch) -> numpy.ndarray:
        """RETURNS (numpy.ndarray): last_hidden_state, (rows, length, width) float32."""
        n_rows, length = wordpieces.input_ids.shape[:2] if len(wordpieces) else (0, 0)
        if n_rows == 0 or length == 0:
            return numpy.zeros((n_rows, length, self.config.hidden_size), dtype="float32")
        session = self.session
        input_ids = _as_int64(wordpieces.input_ids)
        available = {
            "input_ids": input_ids,
            "attention_mask": _as_int64(wordpieces.attention_mask),
            "token_type_ids": (
                _as_int64(wordpieces.token_type_ids)
                if wordpieces.token_type_ids is not None
                else numpy.zeros_like(input_ids)
            ),
        }
        feeds = {name: available[name] for name in self._input_names}
        return session.run(None, feeds)[0]

    def to_bytes(self) -> bytes:
        msg = {
            "config": self.config.to_dict() if self.config is not None else {},
            "tokenizer": self._tokenizer_files,
            "onnx": self.onnx_model,
            "export": self.export_info,
        }
        return srsly.msgpack_dumps(msg)

    def from_bytes(self, bytes_data: bytes) -> "OnnxShim":
        msg = srsly.msgpack_loads(check_saved_transformer(bytes_data))
        if not isinstance(msg, dict) or not isinstance(msg.get("onnx"), bytes):
            raise LoadProblem("it has no ONNX graph", damaged=True)
        if msg["onnx"]:
            self.set_encoder(msg["onnx"], msg["config"], msg["tokenizer"], msg.get("export", {}))
        return self

    def __deepcopy__(self, memo: dict) -> "OnnxShim":
        copied = OnnxShim(self.threads)
        if self.loaded:
            copied.set_encoder(
                self.onnx_model, self.config.to_dict(), self._tokenizer_files, self.export_info
            )
        return copied


def _as_int64(array: Any) -> numpy.ndarray:
    return numpy.ascontiguousarray(numpy.asarray(array), dtype="int64")


def _encoder_forward(model: Model, wordpieces: WordpieceBatch, is_train: bool):
    if is_train:
        raise refuse_training("train")
    shim = cast(OnnxShim, model.shims[0])
    hidden = shim.run(wordpieces)
    return ModelOutput(last_hidden_state=torch.from_numpy(hidden)), _no_backprop


def _no_backprop(d_output: Any) -> Any:
    raise refuse_training("backpropagate through")


class OnnxTransformerModel(BoundedTransformerModel):
    """BoundedTransformerModel whose encoder is an ONNX graph run by ONNX Runtime
    (inference only; see the module)."""

    def __init__(
        self, get_spans: Callable, *, max_batch_pieces: int, min_fill: float, threads: int
    ):
        encoder: Model = Model("onnx_encoder", _encoder_forward, shims=[OnnxShim(threads)])
        Model.__init__(
            self,
            "onnx_transformer",
            _forward,
            init=_init,
            layers=[encoder],
            dims={"nO": None},
            attrs={
                "span_getter": get_spans,
                "get_spans": self.bounded_spans,
                "max_batch_pieces": max_batch_pieces,
                "min_fill": min_fill,
                "bucketed": True,
                "threads": threads,
                "name": "",
                "set_transformer": _refuse_set_transformer,
                "has_transformer": False,
                "flush_cache_chance": 0.0,
            },
        )
        # nlp.replace_listeners copies this model (spacy-transformers' replace_listener) and
        # writes the copy's config (replace_listener_cfg)
        self.attrs["replace_listener"] = replace_listener
        self.attrs["replace_listener_cfg"] = replace_listener_cfg_naming(TOK2VEC_ARCHITECTURE)

    @property
    def shim(self) -> OnnxShim:
        return cast(OnnxShim, self.layers[0].shims[0])

    @property
    def tokenizer(self) -> Any:
        return self.shim.tokenizer

    @property
    def transformer(self) -> Optional["OnnxShim"]:
        """The encoder: it has the transformers `config` that max_wordpieces reads."""
        return self.shim if self.shim.loaded else None

    @property
    def _init_tokenizer_config(self) -> dict:
        return {}

    @property
    def _init_transformer_config(self) -> dict:
        return {}

    def set_encoder(
        self,
        onnx_model: bytes,
        hf_config: Dict[str, Any],
        tokenizer_files: Dict[str, Any],
        export_info: Dict[str, Any],
    ) -> None:
        """Give the model its encoder (export does this; a loaded pipeline has it)."""
        self.shim.set_encoder(onnx_model, hf_config, tokenizer_files, export_info)
        self.attrs["has_transformer"] = True
        self.set_dim("nO", int(self.shim.config.hidden_size), force=True)

    def copy(self) -> "OnnxTransformerModel":
        copied = OnnxTransformerModel(
            self.attrs["span_getter"],
            max_batch_pieces=self.attrs["max_batch_pieces"],
            min_fill=self.attrs["min_fill"],
            threads=self.attrs["threads"],
        )
        copied.attrs["has_transformer"] = self.attrs["has_transformer"]
        copied._dims = copy.deepcopy(self._dims)
        copied.layers[0].shims[0] = copy.deepcopy(self.shim)
        return copied

    def from_bytes(self, bytes_data: bytes) -> "OnnxTransformerModel":
        """Load the model, refusing data that is damaged or could write files or run code.

        RAISES (TransformerLoadError): The data is damaged, incomplete or unsafe; the message
            names the component and the file when they are known.
        """
        def load(msg: Dict[str, Any]) -> Model:  # onnxruntime's errors are damaged data too
            threads = self.attrs["threads"]  # the config's setting, not the saved one
            loaded = self.from_dict(convert_recursive(is_xp_array, self.ops.asarray, msg))
            self.attrs["threads"] = threads  # the shim made its session with the config's threads
            return loaded

        loaded = read_saved_model(
            self, bytes_data, load,
            kind="ONNX transformer model",
            damaged_hint="Export the pipeline again with `python -m spacy_bert_crf export`.",
            written_by="exported",
        )
        return cast(OnnxTransformerModel, loaded)


def _forward(
    model: OnnxTransformerModel, docs: List[Doc], is_train: bool
) -> Tuple[FullTransformerBatch, Callable]:
    if is_train:
        raise refuse_training("train")
    if not model.shim.loaded:
        raise ValueError(
            f"This {ARCHITECTURE} model has no encoder: load an exported pipeline with "
            f"spacy.load (export one with `python -m spacy_bert_crf export MODEL_DIR "
            f"OUTPUT_DIR`)."
        )
    return bucketed_forward(model, docs, is_train)


def _init(model: OnnxTransformerModel, X: Any = None, Y: Any = None) -> None:
    raise refuse_training("initialize")


def _refuse_set_transformer(model: Any, hf_model: Any) -> None:
    raise refuse_training("load torch weights into")
