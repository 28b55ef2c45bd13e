"""Realistic Chinese names for the sandbox: weighted family names, rare characters and minority names.

Rare characters from CJK Extension A/B (䶮, 㵘, 𠮷, ...) and names with `·` (买买提·艾力) are the
ones real exchange files lose to GBK or a replacing decoder; the sandbox makes sure every hop sees them
(docs/domain.md, Text).
"""

from __future__ import annotations

import numpy as np

# Family names with rough shares (per mille) of the population, compound surnames included.
_SURNAME_SHARES = """
    王 71.2  李 70.0  张 67.4  刘 51.0  陈 61.0  杨 32.2  黄 24.5  赵 21.9  吴 28.0  周 22.5
    徐 21.5  孙 13.8  马 12.9  朱 15.8  胡 14.6  郭 11.5  何 10.6  林 14.0  高 10.0  罗 8.6
    郑 10.3  梁 7.2  谢 6.5  宋 5.9  唐 5.6  许 7.3  韩 4.9  冯 4.8  邓 4.3  曹 4.2
    彭 4.1  曾 3.9  肖 3.7  田 3.5  董 3.4  袁 3.2  潘 4.2  于 3.1  蒋 4.6  蔡 3.8
    余 3.6  杜 2.9  叶 5.5  程 3.0  苏 2.8  魏 2.7  吕 2.6  丁 2.6  任 2.5  沈 4.9
    姚 2.8  卢 2.4  姜 2.3  崔 2.1  钟 2.0  谭 1.9  陆 3.2  汪 2.9  范 1.9  金 3.1
    石 1.7  廖 1.6  贾 1.6  夏 1.6  方 2.6  邵 2.2  钱 2.1  严 1.4  戴 1.5  孔 0.9
    毛 1.6  顾 1.5  应 1.2  楼 0.9  俞 1.6  龚 1.1  童 0.9  欧阳 0.6  司马 0.15  上官 0.12
    诸葛 0.08  司徒 0.1  东方 0.05  慕容 0.03  端木 0.04
"""
_SURNAME_TOKENS = _SURNAME_SHARES.split()
SURNAMES: tuple[tuple[str, float], ...] = tuple(
    (name, float(share)) for name, share in zip(_SURNAME_TOKENS[::2], _SURNAME_TOKENS[1::2], strict=True)
)

MALE_CHARS = (
    "伟强军磊勇杰涛明超斌刚平辉鹏华飞鑫波宇浩凯健俊帅旭宁龙林阳建国志文海峰亮东兵成新春荣祥德福根喆堃淼彧赟"
)
FEMALE_CHARS = "芳娜敏静丽艳娟霞秀英燕玲桂兰红梅琳婷雪慧洁颖倩玉萍华凤莉佳欣怡雯晨月琴云玥珺"

# CJK Extension A (U+3400..U+4DBF) and B (U+20000..U+2A6DF) characters seen in real names;
# 䶮 (刘䶮) and 㵘 come first and are drawn most often so every sizeable sandbox has them.
RARE_CHARS: tuple[str, ...] = tuple("䶮㵘㛃㻗㑇㕮㼆䴉𠮷𡈼𤭢𥝱𨰻𩽾")
_RARE_WEIGHTS = np.array([6.0, 6.0] + [1.0] * (len(RARE_CHARS) - 2))

# Uyghur names as written in Chinese: given name · father's given name (sometimes grandfather's too).


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


MINORITY_MALE = _words("买买提 艾力 艾尔肯 吐尔逊 阿不都拉 努尔 依明 热合曼 阿卜杜热合曼 阿卜杜克力木")
MINORITY_FEMALE = _words("阿依古丽 古丽娜尔 帕提古丽 热依拉 米娜瓦尔 迪丽努尔")
MINORITY_FATHER = _words("买买提 艾力 吐尔逊 阿不都拉 艾海提 依明 阿卜杜克力木")

# Variant spellings for injected name conflicts (police writes the traditional form or a homophone).
_VARIANT_PAIRS = """
    伟:偉 强:強 军:軍 磊:垒 勇:湧 杰:傑 涛:濤 明:铭 超:朝 斌:彬 刚:剛 平:萍
    辉:輝 鹏:鵬 华:華 飞:飛 鑫:馨 波:博 宇:羽 浩:皓 凯:凱 健:建 俊:峻 帅:帥
    旭:煦 宁:寧 龙:龍 林:琳 阳:陽 建:健 国:國 志:誌 文:雯 海:凯 峰:锋 亮:靓
    东:東 兵:彬 成:诚 新:欣 春:椿 荣:榮 祥:翔 德:徳 福:富 根:耕 喆:哲 堃:坤
    淼:森 彧:或 赟:贇 芳:方 娜:纳 敏:闵 静:靜 丽:麗 艳:豔 娟:鹃 霞:夏 秀:琇
    英:瑛 燕:艳 玲:铃 桂:贵 兰:蘭 红:紅 梅:玫 琳:林 婷:亭 雪:学 慧:惠 洁:潔
    颖:穎 倩:茜 玉:钰 萍:平 凤:鳳 莉:丽 佳:嘉 欣:新 怡:宜 雯:文 晨:辰 月:悦
    琴:芹 云:雲 玥:月 珺:君 䶮:龑 㵘:淼 㛃:洁 㻗:琪 㑇:周 㕮:甫 㼆:瓶 䴉:鹮
    𠮷:吉 𡈼:廷 𤭢:瓷 𥝱:秭 𨰻:镯 𩽾:鮟
    买买提:麦麦提 艾力:艾利 古丽:古力 热依拉:热伊拉 吐尔逊:吐尔孙 阿不都拉:阿布都拉 艾海提:艾合提
    依明:伊明 努尔:奴尔 热合曼:热合满 艾尔肯:艾尔坎 米娜瓦尔:米那瓦尔 阿卜杜:阿布都
"""
VARIANTS: dict[str, str] = {k: v for k, _, v in (pair.partition(":") for pair in _VARIANT_PAIRS.split())}
_VARIANT_KEYS = sorted(VARIANTS, key=len, reverse=True)


def generate_names(
    rng: np.random.Generator, female: np.ndarray, rare_share: float = 0.005, minority_share: float = 0.003
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Names for people of the given sexes; returns (names, has_rare_char, is_minority_name)."""
    n = len(female)
    shares = np.array([w for _, w in SURNAMES])
    surnames = np.array([s for s, _ in SURNAMES])[rng.choice(len(SURNAMES), n, p=shares / shares.sum())]
    male_pool = np.array(list(MALE_CHARS))
    female_pool = np.array(list(FEMALE_CHARS))
    first = np.where(
        female,
        female_pool[rng.integers(0, len(female_pool), n)],
        male_pool[rng.integers(0, len(male_pool), n)],
    )
    second = np.where(
        female,
        female_pool[rng.integers(0, len(female_pool), n)],
        male_pool[rng.integers(0, len(male_pool), n)],
    )
    two_chars = rng.random(n) < 0.72
    names = np.char.add(np.char.add(surnames, first), np.where(two_chars, second, "")).astype(object)

    draw = rng.random(n)
    rare = draw < rare_share
    minority = (draw >= rare_share) & (draw < rare_share + minority_share)
    rare_idx = np.flatnonzero(rare)
    picks = rng.choice(len(RARE_CHARS), len(rare_idx), p=_RARE_WEIGHTS / _RARE_WEIGHTS.sum())
    for i, pick in zip(rare_idx, picks, strict=True):
        names[i] = names[i][:-1] + RARE_CHARS[pick]
    minority_idx = np.flatnonzero(minority)
    own = rng.integers(0, 1 << 30, len(minority_idx))
    father = rng.integers(0, len(MINORITY_FATHER), len(minority_idx))
    third = rng.integers(0, len(MINORITY_FATHER), len(minority_idx))
    long_form = rng.random(len(minority_idx)) < 0.15
    for k, i in enumerate(minority_idx):
        pool = MINORITY_FEMALE if female[i] else MINORITY_MALE
        parts = [pool[own[k] % len(pool)], MINORITY_FATHER[father[k]]]
        if long_form[k]:
            parts.append(MINORITY_FATHER[third[k]])
        names[i] = "·".join(parts)
    return names, rare, minority


def variant_name(name: str) -> str:
    """The same person's name as another register writes it (a variant or homophone character)."""
    for key in _VARIANT_KEYS:
        at = name.rfind(key)
        if at > 0 or (at == 0 and "·" in name):
            return name[:at] + VARIANTS[key] + name[at + len(key) :]
    return name + "儿"
