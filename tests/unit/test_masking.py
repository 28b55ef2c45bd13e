"""One masking rule for every ID-shaped token: legacy 15, 18, and 20-character certificate numbers."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from core.masking import mask_structure, mask_text
from core.storage import publish_bytes

ID18 = "33010619800101001X"
CERT20 = ID18 + "42"
LEGACY15 = "330106800101001"


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        (f"person {ID18} held", "person 330106********001X held"),
        (f"cert {CERT20}.", "cert 330106**********1X42."),
        (f"legacy {LEGACY15}", "legacy 330106*****1001"),
        (f"glued id{ID18}y", "glued id330106********001Xy"),
        ("a 14-digit count 12345678901234 stays", "a 14-digit count 12345678901234 stays"),
    ],
)
def test_every_id_shaped_token_is_masked(raw: str, masked: str) -> None:
    assert mask_text(raw) == masked


def test_a_checksum_is_left_whole_and_structures_are_masked_keys_too() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert mask_text(f"sha256 {digest}") == f"sha256 {digest}"
    out = mask_structure({ID18: [CERT20, 3, None]})
    assert out == {"330106********001X": ["330106**********1X42", 3, None]}


def test_published_files_are_private_and_leave_no_temporary(tmp_path) -> None:
    target = tmp_path / "deep" / "file.json"
    publish_bytes(target, b"{}")
    publish_bytes(target, b"{ }")
    assert target.read_bytes() == b"{ }"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(target.parent).st_mode) == 0o700
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]
