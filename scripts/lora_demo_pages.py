"""``python scripts/lora_demo_pages.py DIR``: 48 training and 8 validation pages in a script the
model never saw (the synthetic engine's text pages transliterated to Cyrillic before painting),
as DIR/images/*.png + DIR/train.jsonl and DIR/val.jsonl for ``data=jsonl``."""

import json
import sys
from pathlib import Path

from zoo.data.layout_engine import paint, plan_page

LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
CYRILLIC = "абцдефгхийклмнопярстужвьызАБЦДЕФГХИЙКЛМНОПЯРСТУЖВЬЫЗ"
TO_CYRILLIC = str.maketrans(LATIN, CYRILLIC)
TEXT_ONLY = {"figure_prob": 0, "table_prob": 0, "formula_prob": 0}

out = Path(sys.argv[1])
(out / "images").mkdir(parents=True, exist_ok=True)
for split, seed, n_pages in [("train", 0, 48), ("val", 1, 8)]:
    with (out / f"{split}.jsonl").open("w", encoding="utf-8") as jsonl:
        for i in range(n_pages):
            plan = plan_page(seed, i, 256, **TEXT_ONLY)
            plan.texts = [(x, y, t.translate(TO_CYRILLIC), *rest) for x, y, t, *rest in plan.texts]
            for block in plan.blocks:
                block["text"] = block["text"].translate(TO_CYRILLIC)
            paint(plan).save(out / f"images/{split}_{i}.png")
            record = {"image": f"images/{split}_{i}.png", "markdown": plan.markdown}
            jsonl.write(json.dumps(record, ensure_ascii=False) + "\n")
