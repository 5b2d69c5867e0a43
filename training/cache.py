"""The prepared cache's index (``CACHE/index.json``): its settings and one entry per image.

:mod:`training.prepare` writes a cache; :mod:`training.dataset`, training and evaluation read it
through :func:`load_index`. Imports only pydantic and the contract, so that readers need not load
the cache builder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from contract.base import ContractError, Strict
from contract.card import InputSpec, ResizeSpec
from contract.files import write_atomic

__all__ = ["IMAGES", "INDEX", "CacheEntry", "CacheIndex", "load_index", "write_index"]

INDEX = "index.json"
IMAGES = "images"


class CacheEntry(Strict):
    key: str
    count: int = Field(ge=0)
    split: Optional[str] = None
    file: str = Field(description="path relative to the cache folder")
    src_width: int = Field(gt=0)
    src_height: int = Field(gt=0)
    reduce: int = Field(default=1, description="JPEG DCT-scaling factor used when decoding (1 = full)")


class CacheIndex(Strict):
    format: Literal["binwatch.cache"] = "binwatch.cache"
    version: Literal[1] = 1
    source: str
    synthetic: bool = False
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    resize: ResizeSpec = Field(default_factory=ResizeSpec)
    encoding: Literal["png", "jpg", "npy"] = "npy"
    reduce_margin: Optional[float] = Field(default=1.0, description="None: reduced decoding off")
    items: list[CacheEntry] = Field(default_factory=list)

    def input_spec(self) -> InputSpec:
        """The card input spec that the cache was made for (ImageNet mean/std, RGB, NCHW)."""
        return InputSpec(height=self.height, width=self.width, resize=self.resize)

    def settings(self) -> dict:
        return self.model_dump(mode="json", exclude={"items", "source", "synthetic"})


def load_index(cache: Path | str) -> CacheIndex:
    """The index of the cache folder ``cache``: ``FileNotFoundError`` (saying how to make one) when
    it has none, :class:`~contract.base.ContractError` naming the file when it is not an index."""
    path = Path(cache) / INDEX
    if not path.is_file():
        raise FileNotFoundError(
            f"no {INDEX} in {cache}: make the cache with `binwatch data prepare SRC --out {cache}`"
        )
    try:
        return CacheIndex.model_validate_json(path.read_bytes())
    except ValueError as e:
        raise ContractError(f"{path}: not a binwatch cache index: {e}") from e


def write_index(cache: Path, index: CacheIndex) -> Path:
    """Write ``cache/index.json`` atomically (readable by all: a cache is meant to be shared)."""
    return write_atomic(Path(cache) / INDEX, index.model_dump_json(indent=1), mode=0o644)
