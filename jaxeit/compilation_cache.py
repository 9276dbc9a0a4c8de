"""A persistent compilation cache, so that a second run does not compile again.

JAX can keep compiled XLA programs on disk (``jax_compilation_cache_dir``); a
later process that traces the same program with the same shapes, devices and
JAX version loads it instead of compiling (the first forward solve or
reconstruction step of a run is mostly compilation). Off by default in the
library; a command-line tool or a notebook turns it on with::

    import jaxeit.compilation_cache
    jaxeit.compilation_cache.enable()          # ~/.cache/jaxeit/xla

The folder is trusted code: keep it private to the user (it is created with
mode 0o700). Set ``JAXEIT_CACHE_DIR`` to move it, or pass ``path``.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["default_dir", "enable", "disable", "enabled_dir"]


def default_dir() -> Path:
    """The cache folder: ``$JAXEIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxeit/xla``, else ``~/.cache/jaxeit/xla``."""
    if os.environ.get("JAXEIT_CACHE_DIR"):
        return Path(os.environ["JAXEIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jaxeit" / "xla"


def _reset() -> None:
    """Make JAX re-read the cache settings (it reads them once, at the first compilation)."""
    from jax._src import compilation_cache as cc  # no public reset in jax 0.10

    cc.reset_cache()


def enable(path: str | os.PathLike | None = None, *, min_compile_time_s: float = 0.5) -> Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default :func:`default_dir`).

    Args:
        path: folder for the compiled programs; created (mode 0o700) if missing.
        min_compile_time_s: programs that compiled faster than this (seconds) are not
            written (JAX's default is 1 s; jaxeit's forward solves compile in 0.3–3 s).

    Returns:
        The cache folder (absolute).

    Raises:
        ValueError: ``path`` exists and is not a folder, or cannot be created or written.
    """
    folder = Path(path).expanduser() if path is not None else default_dir()
    folder = folder.resolve()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"compilation cache path {folder} exists and is not a folder: pass another path")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise ValueError(f"cannot create the compilation cache folder {folder}: {e.strerror}; "
                         "pass a writable path or set JAXEIT_CACHE_DIR") from e
    if not os.access(folder, os.W_OK):
        raise ValueError(f"the compilation cache folder {folder} is not writable: pass a writable path "
                         "or set JAXEIT_CACHE_DIR")
    if min_compile_time_s < 0:
        raise ValueError(f"min_compile_time_s must be >= 0, got {min_compile_time_s}")
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_enable_compilation_cache", True)
    _reset()
    return folder


def disable() -> None:
    """Turn the persistent cache off for the rest of the process (programs already on disk stay)."""
    jax.config.update("jax_enable_compilation_cache", False)
    _reset()


def enabled_dir() -> Path | None:
    """The folder in use, or None when the persistent cache is off."""
    d = jax.config.jax_compilation_cache_dir
    if not d or not jax.config.jax_enable_compilation_cache:
        return None
    return Path(d)
