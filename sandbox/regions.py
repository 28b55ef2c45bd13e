"""Real Zhejiang county codes (GB/T 2260) for the sandbox province, with weights and local 低保 standards.

An ID number keeps the address code it was issued with, so people registered in a district created
after their number was issued carry the predecessor's code (临安市 330185 before 临安区 330112 in 2017,
余杭区 330110 before 临平区 330113 in 2021, 江干区 330104 before 钱塘区 330114 in 2021). Numbers issued
after a redistricting carry the new code; the hub must accept both (docs/domain.md, ID numbers).
Weights are rough resident populations (10,000s); 低保 standards (yuan/month) are plausible values
between 1060 and 1300 (so last year's standard on ended entries stays above 1000), not official figures.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class County:
    """One county-level division: code, names, weight for sampling and the local 低保 standard."""

    code: str
    name: str
    prefecture: str
    prefecture_code: str
    weight: float
    dibao_standard: int
    created: int | None = None  # year the code came into use (None: long before any living holder's ID)
    predecessors: tuple[str, ...] = ()  # codes numbers issued before `created` carry


def _c(
    code: str,
    name: str,
    weight: float,
    dibao: int,
    created: int | None = None,
    predecessors: tuple[str, ...] = (),
) -> County:
    prefectures = {
        "3301": "杭州市",
        "3302": "宁波市",
        "3303": "温州市",
        "3304": "嘉兴市",
        "3305": "湖州市",
        "3306": "绍兴市",
        "3307": "金华市",
        "3308": "衢州市",
        "3309": "舟山市",
        "3310": "台州市",
        "3311": "丽水市",
    }
    return County(code, name, prefectures[code[:4]], code[:4] + "00", weight, dibao, created, predecessors)


ZHEJIANG: tuple[County, ...] = (
    _c("330102", "上城区", 132, 1295),
    _c("330105", "拱墅区", 112, 1295),
    _c("330106", "西湖区", 115, 1295),
    _c("330108", "滨江区", 50, 1295),
    _c("330109", "萧山区", 201, 1295),
    _c("330110", "余杭区", 123, 1295),
    _c("330111", "富阳区", 84, 1295),
    _c("330112", "临安区", 64, 1295, 2017, ("330185",)),
    _c("330113", "临平区", 117, 1295, 2021, ("330110",)),
    _c("330114", "钱塘区", 77, 1295, 2021, ("330104", "330109")),
    _c("330122", "桐庐县", 46, 1295),
    _c("330127", "淳安县", 33, 1295),
    _c("330182", "建德市", 44, 1295),
    _c("330203", "海曙区", 60, 1235),
    _c("330205", "江北区", 49, 1235),
    _c("330206", "北仑区", 83, 1235),
    _c("330212", "鄞州区", 160, 1235),
    _c("330281", "余姚市", 125, 1235),
    _c("330282", "慈溪市", 183, 1235),
    _c("330302", "鹿城区", 115, 1150),
    _c("330304", "瓯海区", 96, 1150),
    _c("330381", "瑞安市", 152, 1150),
    _c("330382", "乐清市", 144, 1150),
    _c("330383", "龙港市", 47, 1150, 2019, ("330327",)),
    _c("330402", "南湖区", 66, 1180),
    _c("330481", "海宁市", 108, 1180),
    _c("330483", "桐乡市", 103, 1180),
    _c("330502", "吴兴区", 78, 1120),
    _c("330522", "长兴县", 67, 1120),
    _c("330602", "越城区", 93, 1160),
    _c("330603", "柯桥区", 110, 1160),
    _c("330681", "诸暨市", 122, 1160),
    _c("330702", "婺城区", 87, 1080),
    _c("330782", "义乌市", 186, 1080),
    _c("330783", "东阳市", 109, 1080),
    _c("330802", "柯城区", 46, 1070),
    _c("330881", "江山市", 50, 1070),
    _c("330902", "定海区", 51, 1130),
    _c("331002", "椒江区", 62, 1100),
    _c("331081", "温岭市", 142, 1100),
    _c("331082", "临海市", 114, 1100),
    _c("331102", "莲都区", 52, 1060),
    _c("331127", "景宁畲族自治县", 11, 1060),
)

# Registrations outside the province (户籍 elsewhere: no local subsidy) and birthplaces of migrants.
OUTSIDE: tuple[tuple[str, str], ...] = (
    ("320102", "南京市玄武区"),
    ("310101", "上海市黄浦区"),
    ("340104", "合肥市蜀山区"),
    ("360102", "南昌市东湖区"),
    ("350102", "福州市鼓楼区"),
    ("510104", "成都市锦江区"),
    ("410105", "郑州市金水区"),
    ("430102", "长沙市芙蓉区"),
)

BY_CODE: dict[str, County] = {c.code: c for c in ZHEJIANG}


def county_name(code: str) -> str:
    """Name of a sandbox county or outside registration (codes only appear in IDs when unknown here)."""
    if code in BY_CODE:
        return BY_CODE[code].prefecture + BY_CODE[code].name
    return dict(OUTSIDE).get(code, code)
