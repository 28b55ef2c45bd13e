"""The police simulator under a real uvicorn: bearer auth, 1-based paging, and items byte for byte."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import requests

from core.settings import load_settings
from sandbox.generator import init_sandbox
from sandbox.simulator import SimulatorDataError, create_app, running_police_simulator, serve

pytestmark = pytest.mark.integration

PATH = "/api/v1/hukou/persons"
RARE = [
    {"gmsfhm": "330112201805060021", "xm": "刘䶮", "xbdm": "2", "csrq": "20180506", "hjdz_xzqhdm": "330112",
     "hkztdm": "0", "swrq": None, "gxsj": "2026-10-01 08:00:00"},
    {"gmsfhm": "33011419800101001X", "xm": "王㵘", "xbdm": "1", "csrq": "19800101", "hjdz_xzqhdm": "330114",
     "hkztdm": "1", "swrq": "20260101", "gxsj": "2026-01-05 09:30:00"},
    {"gmsfhm": "330113195002030042", "xm": "阿依古丽·买买提", "xbdm": "2", "csrq": "19500203",
     "hjdz_xzqhdm": "330113", "hkztdm": "0", "swrq": None, "gxsj": "2026-03-01 10:00:00"},
    {"gmsfhm": "330106199001010013", "xm": "张𠮷", "xbdm": "1", "csrq": "19900101", "hjdz_xzqhdm": "330106",
     "hkztdm": "2", "swrq": None, "gxsj": "2026-04-01 11:00:00"},
]  # fmt: skip


def get(url: str, token: str | None, **params: str | int) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(url + PATH, params=params, headers=headers, timeout=10)


def test_paging_through_the_sandbox_police_file(tmp_path: Path) -> None:
    info = init_sandbox(load_settings(var_dir=tmp_path), persons=2000, seed=7)
    lines = info.police_jsonl.read_bytes().splitlines()
    with running_police_simulator(info.root) as (url, token):
        assert requests.get(url + "/healthz", timeout=5).json() == {"status": "ok", "persons": len(lines)}
        items: list[dict[str, str | None]] = []
        page, size = 1, 333
        while True:
            body = get(url, token, page=page, page_size=size).json()
            assert body["page"] == page and body["page_size"] == size
            assert body["total"] == len(lines) and body["total_pages"] == math.ceil(len(lines) / size)
            if not body["items"]:
                break
            items.extend(body["items"])
            page += 1
        assert page == body["total_pages"] + 1
        assert items == [json.loads(line) for line in lines]
        default = get(url, token).json()
        assert default["page"] == 1 and len(default["items"]) == min(1000, len(lines))


def test_rare_characters_arrive_byte_for_byte(tmp_path: Path) -> None:
    data = tmp_path / "persons.jsonl"
    raw_lines = [json.dumps(item, ensure_ascii=False).encode("utf-8") for item in RARE]
    data.write_bytes(b"\n".join(raw_lines) + b"\n")
    with serve(create_app(data, "s3cret")) as url:
        assert url.startswith("http://127.0.0.1:")
        response = get(url, "s3cret", page=1, page_size=2)
        assert response.headers["content-type"].startswith("application/json")
        for line in raw_lines[:2]:
            assert line in response.content
        assert "䶮".encode() in response.content and "㵘".encode() in response.content
        second = get(url, "s3cret", page=2, page_size=2)
        assert [i["xm"] for i in second.json()["items"]] == ["阿依古丽·买买提", "张𠮷"]
        assert raw_lines[3] in second.content
        assert second.json()["items"][0]["swrq"] is None
        assert get(url, "s3cret", page=3, page_size=2).json()["items"] == []


def test_auth_and_bad_parameters(tmp_path: Path) -> None:
    data = tmp_path / "persons.jsonl"
    data.write_text("\n".join(json.dumps(i, ensure_ascii=False) for i in RARE), encoding="utf-8")
    with serve(create_app(data, "s3cret")) as url:
        # a near miss, not a trailing space: HTTP strips a header value's trailing whitespace
        for token in (None, "wrong", "s3cre", "s3cret2"):
            response = get(url, token)
            assert response.status_code == 401 and response.json()["error"] == "unauthorized"
        response = requests.get(url + PATH, headers={"Authorization": "s3cret"}, timeout=5)
        assert response.status_code == 401
        for params in (
            {"page": 0},
            {"page": "x"},
            {"page_size": 0},
            {"page_size": 5001},
            {"page_size": "1e3"},
        ):
            response = get(url, "s3cret", **params)
            assert response.status_code == 400, params
            assert (
                response.json()["error"] == "bad_parameter"
                and "must be an integer" in response.json()["message"]
            )
        assert get(url, "s3cret", page_size=5000).json()["total_pages"] == 1
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/healthz", timeout=2)


def test_a_broken_data_file_names_its_line(tmp_path: Path) -> None:
    data = tmp_path / "persons.jsonl"
    data.write_text('{"gmsfhm": "1"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(SimulatorDataError, match="line 2"):
        create_app(data, "t")
    with pytest.raises(ValueError, match="non-empty token"):
        create_app(data, "")
