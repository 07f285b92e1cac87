#!/usr/bin/env python3
"""Builds the tokenizer benchmark corpus: JSONL {"text": ...} records, about TARGET_MB megabytes, from the
GSM8K / MATH text under ../shared/data plus seeded generated multilingual text (CJK, Arabic, Devanagari,
Cyrillic, emoji, code, LaTeX, whitespace runs).  usage: make_corpus.py SHARED_DATA_DIR OUT.jsonl [MB]"""
import json
import os
import random
import sys

SCRIPTS = {
    "zh": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴",
    "ja": "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモ",
    "ar": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "hi": "कखगघङचछजझञटठडढणतथदधनपफबभमयरलवशषसहािीुूेैोौं्",
    "ru": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
}
EMOJI = ["\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467", "\U0001F680", "\u2764\uFE0F",
         "\U0001F1FA\U0001F1F8", "\U0001F914"]
EXTRA = ["def solve(x):\n    return x ** 2 + 1\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}\n",
         r"$\frac{a+b}{c} = \sqrt{x^2 + y^2}$", r"\boxed{\dfrac{3}{4}}", "  \n\n\t  ", "<|im_start|>user\n", "<|im_end|>\n"]


def gen_text(r):
    parts = []
    for _ in range(r.randint(5, 40)):
        k = r.random()
        if k < 0.5:
            name = r.choice(list(SCRIPTS))
            alpha = SCRIPTS[name]
            if name in ("zh", "ja"):
                parts.append("".join(r.choice(alpha) for _ in range(r.randint(5, 40))))
            else:
                parts.append(" ".join("".join(r.choice(alpha) for _ in range(r.randint(2, 9))) for _ in range(r.randint(2, 12))))
        elif k < 0.65:
            parts.append("".join(r.choice(EMOJI) for _ in range(r.randint(1, 3))))
        elif k < 0.8:
            parts.append(r.choice(EXTRA))
        else:
            parts.append(str(r.randint(0, 10 ** r.randint(1, 12))))
    return r.choice([" ", "\n", "", ", "]).join(parts)


def main():
    data, out = sys.argv[1], sys.argv[2]
    target = int(float(sys.argv[3]) if len(sys.argv) > 3 else 10) * 1_000_000
    texts = []
    for rel, fields in [("gsm8k/train.jsonl", ["question", "answer"]), ("gsm8k/test.jsonl", ["question", "answer"]),
                        ("math/math500.jsonl", ["problem", "solution"])]:
        path = os.path.join(data, rel)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                texts.append("\n\n".join(str(rec[k]) for k in fields if k in rec))
    r = random.Random(1234)
    size = 0
    with open(out, "w", encoding="utf-8") as f:
        i = 0
        while size < target:
            if texts and r.random() < 0.6:
                t = texts[i % len(texts)]
                i += 1
            else:
                t = gen_text(r)
            line = json.dumps({"text": t}, ensure_ascii=False) + "\n"
            f.write(line)
            size += len(t.encode("utf-8"))
    print(f"corpus: {out}, {size / 1e6:.1f} MB of text", file=sys.stderr)


if __name__ == "__main__":
    main()
