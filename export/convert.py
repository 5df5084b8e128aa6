"""GGUF conversion with llama.cpp's own converter (from the pinned llama-cpp-python sdist) and
quantisation through the installed runtime's ``llama_model_quantize``."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bastion.errors import BadInputError, BastionError
from bastion.vendor import converter_script

log = logging.getLogger(__name__)

QUANT_FTYPES = {
    "q4_0": "Q4_0",
    "q4_1": "Q4_1",
    "q5_0": "Q5_0",
    "q5_1": "Q5_1",
    "q8_0": "Q8_0",
    "q2_k": "Q2_K",
    "q3_k_m": "Q3_K_M",
    "q4_k_s": "Q4_K_S",
    "q4_k_m": "Q4_K_M",
    "q5_k_s": "Q5_K_S",
    "q5_k_m": "Q5_K_M",
    "q6_k": "Q6_K",
}


def convert_to_gguf(model_dir: Path, out: Path, *, outtype: str, metadata: dict[str, object]) -> Path:
    """Run ``convert_hf_to_gguf.py`` on a merged model; metadata goes in through ``--metadata``."""
    script = converter_script()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as meta:
        json.dump(metadata, meta)
    cmd = [
        sys.executable,
        str(script),
        str(model_dir),
        "--outfile",
        str(tmp_out),
        "--outtype",
        outtype,
        "--metadata",
        meta.name,
    ]
    log.info("export: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    Path(meta.name).unlink(missing_ok=True)
    if proc.returncode != 0 or not tmp_out.is_file():
        tmp_out.unlink(missing_ok=True)
        raise BastionError(
            f"llama.cpp's converter failed on {model_dir} (exit {proc.returncode}):\n{proc.stderr.strip()[-2500:]}"
        )
    tmp_out.replace(out)
    return out


def quantize(src: Path, dst: Path, quant: str, threads: int = 0) -> Path:
    """Quantise a GGUF with llama.cpp's quantiser (``llama_cpp.llama_model_quantize``)."""
    if quant not in QUANT_FTYPES:
        raise BadInputError(f"unknown quantisation '{quant}'; expected one of {', '.join(QUANT_FTYPES)}")
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANT_FTYPES[quant]}")
    params.nthread = threads
    tmp = dst.with_name(f".{dst.name}.tmp")
    log.info("export: quantising %s -> %s", src.name, dst.name)
    with native_stderr_to(dst.parent / "quantize.log"):
        code = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if code != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise BastionError(f"llama.cpp's quantiser failed ({code}) on {src} -> {quant}")
    tmp.replace(dst)
    return dst


@contextlib.contextmanager
def native_stderr_to(path: Path) -> Iterator[None]:
    """Send what C code writes to stderr (llama.cpp's per-tensor log) to a file for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def read_gguf_metadata(path: Path) -> dict[str, object]:
    """Key/value metadata of a GGUF, read with llama.cpp's gguf-py from the same sdist."""
    from bastion.vendor import vendored_gguf

    skip = {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"}
    with vendored_gguf() as gguf:
        try:
            reader = gguf.GGUFReader(str(path))
        except (ValueError, OSError, KeyError, IndexError) as exc:
            raise BadInputError(f"{path} is not a readable GGUF file: {exc}") from None
        out: dict[str, object] = {}
        for name, field in reader.fields.items():
            if name in skip:
                continue
            try:
                out[name] = field.contents()
            except (ValueError, TypeError, IndexError):
                continue
        out["tensor_types"] = sorted({t.tensor_type.name for t in reader.tensors})
    return out
