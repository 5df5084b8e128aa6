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
from collections.abc import Iterator
from pathlib import Path

from bastion.errors import BadInputError, ToolError
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


class ConverterProcess:
    """llama.cpp's ``convert_hf_to_gguf.py`` in a child process, started ahead of its input.

    The child imports torch, transformers and the converter's modules at once (see
    ``export/converter_worker.py``), so that cost overlaps whatever the caller does before
    :meth:`convert` (the merge); the script itself runs unchanged, as by hand. Its output goes to
    ``log_path``. Use as a context manager: leaving the block stops an unused child.
    """

    def __init__(self, log_path: Path, base_model: str | Path | None = None) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("w", encoding="utf-8")
        self._started = False
        cmd = [sys.executable, "-m", "export.converter_worker", str(converter_script())]
        if base_model is not None and Path(base_model).is_dir():
            cmd.append(str(base_model))
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )

    def __enter__(self) -> ConverterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child if it is still waiting (or still running after an error elsewhere)."""
        if self._proc.poll() is None:
            if not self._started:
                self._proc.terminate()  # still importing or waiting: nothing of its own to finish
            with contextlib.suppress(OSError, ValueError):
                self._proc.stdin.close()  # type: ignore[union-attr]
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()

    def convert(self, model_dir: Path, out: Path, *, outtype: str, metadata: dict[str, object]) -> Path:
        """Convert ``model_dir`` to ``out`` (atomically); metadata goes in through ``--metadata``."""
        self.start(model_dir, out, outtype=outtype, metadata=metadata)
        return self.wait()

    def start(self, model_dir: Path, out: Path, *, outtype: str, metadata: dict[str, object]) -> None:
        """Hand the child its arguments; it converts while the caller goes on (see :meth:`wait`)."""
        model_dir, out = model_dir.resolve(), out.resolve()  # the child runs in the repository root
        self._started = True
        self._out = out
        self._model_dir = model_dir
        self._meta = out.with_name(f".{out.name}.metadata.json")
        self._meta.write_text(json.dumps(metadata), encoding="utf-8")
        args = [str(model_dir), "--outfile", str(self._tmp_out), "--outtype", outtype, "--metadata", str(self._meta)]
        log.info("export: convert_hf_to_gguf.py %s", " ".join(args))
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(args) + "\n")
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the child already died: its exit status and log say why

    @property
    def _tmp_out(self) -> Path:
        return self._out.with_name(f".{self._out.name}.tmp")

    def wait(self) -> Path:
        """Wait for the conversion started by :meth:`start`; the GGUF's path, or a clear error."""
        code = self._proc.wait()
        self._meta.unlink(missing_ok=True)
        if code != 0 or not self._tmp_out.is_file():
            self._tmp_out.unlink(missing_ok=True)
            tail = self.log_path.read_text(encoding="utf-8", errors="replace").strip()[-2500:]
            raise ToolError(
                f"llama.cpp's converter failed on {self._model_dir} (exit {code}; log {self.log_path}):\n{tail}"
            )
        self._tmp_out.replace(self._out)
        return self._out


def convert_to_gguf(model_dir: Path, out: Path, *, outtype: str, metadata: dict[str, object], log_path: Path) -> Path:
    """Run ``convert_hf_to_gguf.py`` on a merged model (no head start); see :class:`ConverterProcess`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with ConverterProcess(log_path) as converter:
        return converter.convert(model_dir, out, outtype=outtype, metadata=metadata)


def quantize(src: Path, dst: Path, quant: str, *, log_path: Path, threads: int = 0) -> Path:
    """Quantise a GGUF with llama.cpp's quantiser (``llama_cpp.llama_model_quantize``); its log goes to ``log_path``."""
    if quant not in QUANT_FTYPES:
        raise BadInputError(f"unknown quantisation '{quant}'; expected one of {', '.join(QUANT_FTYPES)}")
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANT_FTYPES[quant]}")
    params.nthread = threads
    tmp = dst.with_name(f".{dst.name}.tmp")
    log.info("export: quantising %s -> %s", src.name, dst.name)
    with native_stderr_to(log_path):
        code = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if code != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise ToolError(f"llama.cpp's quantiser failed ({code}) on {src} -> {quant}; log {log_path}")
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
