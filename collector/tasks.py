"""The built-in task set: qa, summary, code, creative × short/medium/long × English/Chinese.

QA and summary cases carry a reference text (BARTScore); code cases carry ``expect`` for the
quality module's checks (symbols, stated complexity, entry point and Python asserts).
"""
from __future__ import annotations

from typing import Any

from shared.tasks import TASKS

LOADS = ("short", "medium", "long")
LANGS = ("en", "zh")


_CODE_TESTS = (
    "assert binary_search([1, 3, 5, 7, 9], 7) == 3\n"
    "assert binary_search([1, 3, 5, 7, 9], 4) == -1\n"
    "assert binary_search([], 1) == -1\n"
    "assert binary_search([2], 2) == 0\n"
)
_CODE_TESTS_LEFTMOST = _CODE_TESTS + "assert binary_search([1, 2, 2, 2, 3], 2) == 1\n"
_CODE_EXPECT = {"symbols": ["def binary_search", "mid", "while"], "complexity": "O(log n)", "entry": "binary_search",
                "tests": _CODE_TESTS}

_SOLAR_EN = [
    "Solar panels turn sunlight into electricity using photovoltaic cells made mostly of silicon.",
    "When light hits a cell, it frees electrons, and the electric field inside the cell pushes them into a current.",
    "A typical rooftop panel converts between 18 and 23 percent of the light that reaches it into electricity.",
    "Output falls on cloudy days and stops at night, so homes pair panels with batteries or the grid.",
    "Prices for panels dropped by about 90 percent between 2010 and 2020, which made solar the cheapest new power in many countries.",
    "Panels lose a little efficiency each year, usually around half a percent, and most are guaranteed for 25 years.",
    "Large solar farms need land, and planners weigh that against farming and nature protection.",
    "Recycling old panels is still rare, although glass, aluminium and silicon can be recovered.",
]
_SOLAR_ZH = [
    "太阳能电池板利用主要由硅制成的光伏电池把阳光转化为电能。",
    "光照射到电池上时会激发电子，电池内部的电场推动这些电子形成电流。",
    "常见的屋顶光伏板能把照到其表面的光能的百分之十八到二十三转化为电能。",
    "阴天发电量下降，夜间停止发电，因此家庭通常配合蓄电池或电网使用。",
    "二〇一〇年到二〇二〇年间，光伏板价格下降了约百分之九十，使太阳能成为许多国家最便宜的新增电源。",
    "光伏板的效率每年略有下降，通常约为百分之零点五，大多数产品提供二十五年质保。",
    "大型光伏电站需要占用土地，规划时要在农业和自然保护之间权衡。",
    "旧光伏板的回收仍然很少，但玻璃、铝和硅都可以回收利用。",
]


def _case(task: str, load: str, lang: str, prompt: str, reference: str | None = None,
          max_tokens: int | None = None, expect: dict | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"task": task, "task_type": task, "load": load, "lang": lang, "prompt": prompt,
                         "source": "builtin"}
    if reference is not None:
        c["reference_text"] = reference
    if max_tokens is not None:
        c["max_tokens"] = max_tokens
    if expect is not None:
        c["expect"] = expect
    return c


def _builtin_en() -> list[dict[str, Any]]:
    text_m = " ".join(_SOLAR_EN[:4])
    text_l = " ".join(_SOLAR_EN) + " " + " ".join(
        f"Note {i + 1}: {s}" for i, s in enumerate(reversed(_SOLAR_EN)))
    ref_sum_m = "Solar cells turn sunlight into electric current; rooftop panels convert about a fifth of the light, and need batteries or the grid when it is dark or cloudy."
    ref_sum_l = "Solar panels convert about a fifth of sunlight into electricity, became much cheaper after 2010, degrade slowly, need storage for cloudy days and nights, and raise land-use and recycling questions."
    leftmost = "If the target occurs several times, return the smallest index at which it occurs."
    code_long_ctx = "\n".join(f"def helper_{i}(xs):\n    return [x * {i} for x in xs]\n" for i in range(12))
    return [
        _case("qa", "short", "en", "What is Newton's first law of motion?",
              "Newton's first law says an object stays at rest or keeps moving in a straight line at constant speed unless a net force acts on it."),
        _case("qa", "medium", "en", "Read the text and answer the question.\n\n" + text_m +
              "\n\nQuestion: Why do homes with solar panels still need batteries or the grid?",
              "Because panels produce less on cloudy days and nothing at night, so stored or grid power covers those times."),
        _case("qa", "long", "en", "Read the text and answer the question.\n\n" + text_l +
              "\n\nQuestion: How much did solar panel prices fall between 2010 and 2020, and what was the effect?",
              "They fell by about 90 percent, which made solar the cheapest source of new electricity in many countries."),
        _case("summary", "short", "en", "Summarize in one sentence: " + _SOLAR_EN[0] + " " + _SOLAR_EN[1],
              "Silicon photovoltaic cells turn sunlight into electric current."),
        _case("summary", "medium", "en", "Summarize the following text in two sentences.\n\n" + text_m, ref_sum_m),
        _case("summary", "long", "en", "Summarize the following text in three sentences.\n\n" + text_l, ref_sum_l),
        _case("code", "short", "en", "Write a Python function binary_search(arr, target) that returns the index of target in the sorted list arr, or -1. State its time complexity.",
              expect=dict(_CODE_EXPECT)),
        _case("code", "medium", "en", "Write a Python function binary_search(arr, target) for a sorted list arr that may contain duplicates. "
              + leftmost + " Return -1 if the target is absent. Use an iterative loop, not recursion, handle the empty list, "
              "and explain in one line what the time complexity is and why.",
              expect={**_CODE_EXPECT, "tests": _CODE_TESTS_LEFTMOST}),
        _case("code", "long", "en", "Here is an existing Python module:\n\n" + code_long_ctx +
              "\nAdd to this module a function binary_search(arr, target) that returns the index of target in the sorted list arr, or -1 "
              "if it is absent. " + leftmost + " Do not change the helpers. Give only the new function and state its time complexity.",
              expect={**_CODE_EXPECT, "tests": _CODE_TESTS_LEFTMOST}),
        _case("creative", "short", "en", "Write a four-line poem about the sea at night."),
        _case("creative", "medium", "en", "Write a short story (about 150 words) about a lighthouse keeper who finds a message in a bottle. "
              "Give the keeper a name, describe the weather, and end with a surprise."),
        _case("creative", "long", "en", "Use the background below to write a short story about a family that installs solar panels, "
              "told from the point of view of the youngest child.\n\nBackground: " + text_l),
    ]


def _builtin_zh() -> list[dict[str, Any]]:
    text_m = "".join(_SOLAR_ZH[:4])
    text_l = "".join(_SOLAR_ZH) + "".join(f"补充{i + 1}：{s}" for i, s in enumerate(reversed(_SOLAR_ZH)))
    leftmost = "如果目标值出现多次，返回它第一次出现的下标。"
    code_long_ctx = "\n".join(f"def helper_{i}(xs):\n    return [x * {i} for x in xs]\n" for i in range(12))
    return [
        _case("qa", "short", "zh", "请解释牛顿第一定律。",
              "牛顿第一定律，也称为惯性定律：物体在不受外力或所受合力为零时，保持静止或匀速直线运动状态。"),
        _case("qa", "medium", "zh", "阅读下面的材料并回答问题。\n\n" + text_m + "\n\n问题：为什么安装了光伏板的家庭仍然需要蓄电池或电网？",
              "因为阴天发电减少、夜间不发电，需要蓄电池储存的电或电网供电来补足。"),
        _case("qa", "long", "zh", "阅读下面的材料并回答问题。\n\n" + text_l + "\n\n问题：二〇一〇年到二〇二〇年间光伏板价格下降了多少？带来了什么影响？",
              "价格下降了约百分之九十，使太阳能成为许多国家最便宜的新增电源。"),
        _case("summary", "short", "zh", "用一句话概括：" + _SOLAR_ZH[0] + _SOLAR_ZH[1], "硅光伏电池把阳光转化为电流。"),
        _case("summary", "medium", "zh", "用两句话概括下面的文字。\n\n" + text_m,
              "光伏电池把阳光转化为电流，屋顶光伏板约能转化五分之一的光能；阴天和夜间需要蓄电池或电网补充。"),
        _case("summary", "long", "zh", "用三句话概括下面的文字。\n\n" + text_l,
              "光伏板把约五分之一的阳光转化为电能，二〇一〇年后价格大幅下降；效率缓慢衰减，阴天和夜间需要储能；大型电站还涉及土地和回收问题。"),
        _case("code", "short", "zh", "用 Python 写一个函数 binary_search(arr, target)，在升序列表 arr 中返回 target 的下标，找不到返回 -1，并说明时间复杂度。",
              expect=dict(_CODE_EXPECT)),
        _case("code", "medium", "zh", "用 Python 写一个函数 binary_search(arr, target)，arr 是可能含重复元素的升序列表。" + leftmost +
              "找不到返回 -1。请用循环而不是递归实现，处理空列表，并用一句话说明时间复杂度及原因。",
              expect={**_CODE_EXPECT, "tests": _CODE_TESTS_LEFTMOST}),
        _case("code", "long", "zh", "下面是一个已有的 Python 模块：\n\n" + code_long_ctx +
              "\n请在这个模块中增加函数 binary_search(arr, target)：在升序列表 arr 中返回 target 的下标，找不到返回 -1。" + leftmost +
              "不要修改已有的辅助函数，只给出新函数，并说明时间复杂度。",
              expect={**_CODE_EXPECT, "tests": _CODE_TESTS_LEFTMOST}),
        _case("creative", "short", "zh", "写一首关于夜晚大海的四行小诗。"),
        _case("creative", "medium", "zh", "写一篇约两百字的短篇故事：一位灯塔看守人捡到了一个漂流瓶。请给看守人起名字，描写天气，并以一个意外结尾。"),
        _case("creative", "long", "zh", "根据下面的背景材料，以家里最小的孩子的视角，写一篇关于一家人安装太阳能板的短篇故事。\n\n背景：" + text_l),
    ]


def builtin_cases(tasks=TASKS, loads=LOADS, langs=LANGS) -> list[dict[str, Any]]:
    """The built-in cases for the chosen tasks/loads/langs, in a stable order."""
    for name, given, allowed in (("task", tasks, TASKS), ("load", loads, LOADS), ("lang", langs, LANGS)):
        bad = [x for x in given if x not in allowed]
        if bad:
            raise ValueError(f"unknown {name} {bad}; choose from {', '.join(allowed)}")
    out = []
    for c in _builtin_en() + _builtin_zh():
        if c["task"] in tasks and c["load"] in loads and c["lang"] in langs:
            out.append(c)
    return out
