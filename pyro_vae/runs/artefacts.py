"""Content-addressed artefacts shared by the runs of a store: computed once per key, reused.

What a run needs but its method does not change — the ground-truth initialisation (the
decoder fitted to the true f and φ_GT, 004 App. D) and the true test log-likelihood — is
stored under ``<runs>/artefacts/<kind>/<hash>.pt`` with a ``.json`` beside it holding the
key, what was made and its provenance. The hash is of the key: everything the value depends
on. Files are written atomically (the ``.pt`` first, so a ``.json`` always has its tensors)
and loaded with ``weights_only=True``; two processes building the same artefact at once both
write the same value, and the last rename wins.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import torch

from pyro_vae.io import load_state, read_json, save_state, write_json
from pyro_vae.provenance import provenance_record

ARTEFACTS = "artefacts"


class Artefact(NamedTuple):
    kind: str
    digest: str
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any]  # what the builder reported (e.g. the decoder fit's MSE)
    reused: bool  # loaded from the store rather than built now

    @property
    def ref(self) -> str:
        """``kind/digest``: what a run records to say which artefact it used."""
        return f"{self.kind}/{self.digest}"


def artefact_key_hash(kind: str, key: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the kind and its canonical JSON key."""
    text = json.dumps({"kind": kind, "key": key}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ArtefactStore:
    """The ``artefacts`` folder of a runs folder (created on the first save)."""

    def __init__(self, runs_dir: str | Path):
        self.root = Path(runs_dir) / ARTEFACTS

    def _paths(self, kind: str, digest: str) -> tuple[Path, Path]:
        base = self.root / kind / digest
        return base.with_suffix(".pt"), base.with_suffix(".json")

    def load(self, kind: str, key: Mapping[str, Any]) -> Artefact | None:
        """The stored artefact of ``key``, or None (also when its files are incomplete)."""
        digest = artefact_key_hash(kind, key)
        tensors_path, meta_path = self._paths(kind, digest)
        if not (tensors_path.exists() and meta_path.exists()):
            return None
        try:
            meta = read_json(meta_path)
            tensors = load_state(tensors_path)
        except Exception:  # unreadable: rebuild it
            return None
        return Artefact(kind, digest, tensors, meta.get("info", {}), True)

    def save(self, kind: str, key: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Artefact:
        digest = artefact_key_hash(kind, key)
        tensors_path, meta_path = self._paths(kind, digest)
        tensors = {k: v.detach().cpu() for k, v in tensors.items()}
        save_state(tensors_path, tensors)
        write_json(meta_path, {"kind": kind, "digest": digest, "key": dict(key), "info": dict(info),
                               "provenance": provenance_record()})
        return Artefact(kind, digest, tensors, dict(info), False)

    def get_or_build(
        self, kind: str, key: Mapping[str, Any],
        build: Callable[[], tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]],
    ) -> Artefact:
        """The artefact of ``key``, built by ``build() -> (tensors, info)`` and stored if missing."""
        found = self.load(kind, key)
        if found is not None:
            return found
        tensors, info = build()
        return self.save(kind, key, tensors, info)
