"""What a bundle must pass before the agent switches to it (docs/deploy.md, "On the device").

Before the backend is built (:meth:`BundleChecks.before_load`):

- ``MANIFEST.json``: the size and sha256 of every file (``contract.bundle.verify_manifest``);
- with a trust list (``model.trusted_keys``): ``MANIFEST.sig``, an ed25519 signature over the
  manifest by one of the trusted keys (``contract.signing``). An unsigned bundle is refused unless
  ``model.allow_unsigned`` (the explicit development mode) is set.

After the backend is built and warm (:meth:`BundleChecks.after_warmup`): the golden set
(``golden/expected.json``, :mod:`contract.golden`): each reference image through the new backend, its
distribution compared with the FP32 reference within the tolerance for the backend's precision.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from agent.inference.backends.base import Backend
from agent.inference.preprocess import preprocess
from agent.intake.decode import DecodeError, decode_jpeg
from contract.base import ContractError
from contract.bundle import MANIFEST_NAME, verify_manifest
from contract.card import ModelCard
from contract.golden import GOLDEN_FILE, compare_golden, load_golden, softmax
from contract.signing import SignatureError, signature_of, verify_signature

log = logging.getLogger(__name__)

__all__ = ["BundleChecks"]


class BundleChecks:
    """``verify``: check the manifest; ``trusted_keys``: public key files (PEM) of the trust list;
    ``allow_unsigned``: accept an unsigned bundle even with a trust list; ``golden``: check the
    golden set when the bundle has one."""

    def __init__(
        self,
        *,
        verify: bool = True,
        trusted_keys: Sequence[Path] = (),
        allow_unsigned: bool = False,
        golden: bool = True,
    ) -> None:
        self.verify = verify
        self.trusted_keys = [Path(p) for p in trusted_keys]
        self.allow_unsigned = allow_unsigned
        self.golden = golden
        if self.trusted_keys and allow_unsigned:
            log.warning("model.allow_unsigned is set: unsigned bundles are accepted (development mode)")

    @property
    def needs_signature(self) -> bool:
        return bool(self.trusted_keys)

    def before_load(self, bundle: Path, expect_signature: Optional[str] = None) -> list[str]:
        """Problems with the files and the signature (empty: go on). ``expect_signature``: the
        signature a desired state names, which must be the bundle's ``MANIFEST.sig``."""
        problems: list[str] = []
        if expect_signature is not None:
            problems += self._same_signature(bundle, expect_signature)
        has_manifest = (bundle / MANIFEST_NAME).is_file()
        if self.verify and has_manifest:
            problems += list(verify_manifest(bundle))
        elif self.verify and not self.needs_signature:
            log.warning("bundle %s has no %s: its files are not checked", bundle, MANIFEST_NAME)
        if self.needs_signature:
            if not has_manifest:
                problems.append(f"no {MANIFEST_NAME}: a bundle must be signed (model.trusted_keys is set)")
            else:
                problems += self._signature(bundle)
        return problems

    @staticmethod
    def _same_signature(bundle: Path, expected: str) -> list[str]:
        found = signature_of(bundle)
        if found is None:
            return ["the desired state names a signature but the bundle has no MANIFEST.sig"]
        if found.strip() != expected.strip():
            return ["MANIFEST.sig differs from the signature in the desired state"]
        return []

    def _signature(self, bundle: Path) -> list[str]:
        if signature_of(bundle) is None and self.allow_unsigned:
            log.warning("bundle %s is unsigned: accepted because model.allow_unsigned is set", bundle)
            return []
        try:
            key = verify_signature(bundle, self.trusted_keys)
        except (SignatureError, ContractError) as e:
            return [str(e)]
        except ImportError as e:  # pragma: no cover - cryptography comes with binwatch[agent]
            return [f"cannot check signatures ({e}): pip install 'binwatch[agent]'"]  # imported lazily
        log.info("bundle %s is signed by trusted key %s", bundle, key)
        return []

    def after_warmup(self, bundle: Path, card: ModelCard, backend: Backend) -> list[str]:
        """Problems of the golden-set check (empty: pass, or no golden set in the bundle)."""
        if not self.golden or not (bundle / GOLDEN_FILE).is_file():
            return []
        try:
            golden = load_golden(bundle)
        except ContractError as e:
            return [str(e)]
        probs: dict[str, Any] = {}
        for item in golden.items:
            try:
                img = decode_jpeg((bundle / item.file).read_bytes())
            except (OSError, DecodeError) as e:
                return [f"golden image {item.file}: {e}"]
            x = preprocess(img, card.input)[None]
            logits = np.asarray(backend.infer(x), dtype=np.float64)[0]
            probs[item.file] = softmax([float(v) for v in logits], golden.temperature)
        problems = compare_golden(golden, probs, backend.precision)
        return [f"golden set: {p}" for p in problems]
