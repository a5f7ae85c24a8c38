"""qwen-lsp: a language server running Qwen2.5-Coder in-process on a CPU."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qwen-lsp")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
