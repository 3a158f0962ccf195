"""Shared fixtures. Tests never touch the network: the source archive comes from $SIGNS_SOURCE or datasets/."""

import pytest

import signs_dataset


@pytest.fixture(scope="session")
def source_archive():
    """The pinned source archive; fails (does not skip) with the fix when it cannot be found."""
    try:
        return signs_dataset.find_source(download=False)
    except signs_dataset.DatasetError as exc:
        pytest.fail(f"The data tests need the source archive offline: {exc}")


@pytest.fixture(scope="session")
def built_dataset(tmp_path_factory, source_archive):
    """One build into a temporary folder, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("signs")
    signs_dataset.build(out, source_archive)
    return out
