"""Fixtures shared by every test tier: the real data folder and a small real model artifact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from encoders.artifact import ModelArtifact, load_artifact
from encoders.serving import UserEncoder
from index.brute import BruteForceIndex
from stream.core.pipeline import Recommender, Rules
from tests.artifacts import small_artifact
from tests.recommenders import single_model

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("STREAMREC_DATA_DIR", REPO.parent / "shared" / "data"))

torch.set_num_threads(1)
# Property tests assert behaviour, not speed (speed lives in `streamrec bench`): no per-example deadline, which
# a machine busy with other work would otherwise trip.
settings.register_profile("streamrec", deadline=None)
settings.load_profile("streamrec")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real datasets; a missing folder is an error, never a skip."""
    assert DATA_DIR.is_dir(), f"shared data not found at {DATA_DIR} (set STREAMREC_DATA_DIR)"
    return DATA_DIR


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The shared test model: trained on diginetica sessions."""
    return small_artifact("diginetica", data_dir, tmp_path_factory.mktemp("models"))


@pytest.fixture()
def artifact(artifact_dir: Path) -> ModelArtifact:
    """A freshly loaded copy of the shared artifact (tests may mutate it)."""
    return load_artifact(artifact_dir)


@pytest.fixture()
def recommender(artifact: ModelArtifact) -> Recommender:
    """The data path over the real artifact, an exact index and a fresh metrics registry."""
    encoder = UserEncoder(artifact)
    index = BruteForceIndex(encoder.dim)
    index.add(encoder.item_ids, encoder.item_vectors())
    return single_model(encoder, index, Rules(top_k=10), clock=lambda: 1_700_000_000.0)
