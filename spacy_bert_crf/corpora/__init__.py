"""Converters: CoNLL-2003 style columns and character-per-line files -> Docs / .spacy.

    read_conll(path, ...) -> (docs, stats)  word first, NER tag last (IOB1, IOB2/BIO, BIOES/BILUO)
    read_msra(path, ...) -> (docs, stats)   one character per line: CHAR<TAB>BIO, CHAR<SPACE>BMES
    read_zh_chars(path, ...) -> (docs, stats)  any character-per-line corpus: CHAR, tab or
                                            spaces, TAG (BMES, BIOES, BIO; "-" outside or missing)
    convert_file(fmt, path, output_dir, ...) -> (output_path, stats)
    split_docs(docs, dev_size=..., seed=...) -> (train, dev)

Modules: conll.py, msra.py and zh_chars.py parse the formats, docs.py holds what they share
(reading lines, progress, sentences to Docs, ConversionStats, ConversionError, the
character-per-line checks of msra.py and zh_chars.py), convert.py
writes a .spacy file, split.py splits Docs. The command line is in cli/convert.py:

    python -m spacy_bert_crf convert FORMAT INPUT OUTPUT_DIR [--scheme S] [--docs] [-n N] [--strict]
        [--dash auto|outside|missing]
    python -m spacy_bert_crf split INPUT.spacy OUTPUT_DIR [--dev-size 0.1] [--seed 0]
"""
from .conll import DOCSTART, read_conll
from .convert import DEFAULT_LANGS, FORMATS, convert_file, parse_label_map
from .docs import (
    MAX_REPAIR_LOCATIONS,
    PROGRESS_MIN_LINES,
    PROGRESS_STEPS,
    ConversionError,
    ConversionStats,
)
from .msra import DEFAULT_MSRA_LABEL_MAP, read_msra
from .split import split_docs
from .zh_chars import DASH_MEANINGS, CharCorpusStats, read_zh_chars

__all__ = [
    "DEFAULT_LANGS",
    "DASH_MEANINGS",
    "DEFAULT_MSRA_LABEL_MAP",
    "DOCSTART",
    "FORMATS",
    "MAX_REPAIR_LOCATIONS",
    "PROGRESS_MIN_LINES",
    "PROGRESS_STEPS",
    "CharCorpusStats",
    "ConversionError",
    "ConversionStats",
    "convert_file",
    "parse_label_map",
    "read_conll",
    "read_msra",
    "read_zh_chars",
    "split_docs",
]
