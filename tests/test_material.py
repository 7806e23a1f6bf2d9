"""The registry material the real-project suites stand on: every pinned package downloads,
matches its sha256, unpacks inside the cache and holds the paths the suites use."""

from __future__ import annotations

import tarfile

import pytest

import material


@pytest.mark.parametrize("name", sorted(material.PACKAGES))
def test_each_package_is_pinned_verified_and_unpacked_outside_the_repository(name):
    root = material.ensure(name)
    package = material.PACKAGES[name]
    assert (root / ".verified").read_text().strip() == package.sha256
    for held in package.holds:
        assert (root / held).exists(), held
    repo = material.Path(__file__).resolve().parents[1]
    assert repo not in root.resolve().parents


def test_an_archive_with_a_member_outside_the_folder_is_refused(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(evil, "w:gz") as tf:
        tf.add(payload, arcname="../../escaped.txt")
    with pytest.raises(tarfile.FilterError):
        material._unpack(evil, tmp_path / "out")
    assert not (tmp_path.parent / "escaped.txt").exists()
