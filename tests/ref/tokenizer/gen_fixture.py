#!/usr/bin/env python3
"""Generates the tokenizer fixture: seeded random strings (mixed scripts, emoji, whitespace runs, contractions,
LaTeX, code, special-token strings, combining characters, NUL) tokenized by HF `tokenizers`
(Tokenizer.from_file(...).encode(text, add_special_tokens=False).ids).

Run from the repository root through the reference chroot (it sees the repository as /work):
    mkdir -p tests/tmp/tokref && cp ../shared/data/tokenizer/qwen2/tokenizer*.json tests/tmp/tokref/
    /work/shared/tools/pyref run tests/ref/tokenizer/gen_fixture.py tests/tmp/tokref tests/ref/tokenizer/fixture.jsonl
Each output line: {"text": ..., "ids": [...]} plus "nfc": NFC(text) when it differs, as HF's own NFC normalizer
(tokenizers.normalizers.NFC) computes it: its Unicode tables are older than Python's unicodedata, and the
decode(encode(x)) round trip must give the text the tokenizer actually saw.
"""
import json
import random
import sys

from tokenizers import Tokenizer, normalizers

SEED = 20240611
N_STRINGS = 12000

WORDS = ("the of and to in is you that it he was for on are as with his they I at be this have from or one had by "
         "word but not what all were we when your can said there use an each which she do how their if will up other "
         "about out many then them these so some her would make like him into time has look two more write go see "
         "number no way could people my than first water been call who oil its now find long down day did get come "
         "made may part Hello World HELLO tokenizer Qwen PRM reasoning step answer therefore Let's compute").split()
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'lL", "'D",
                "\u2019s", "'\u017f", "'\u212a", "'x", "''", "'"]
CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴"
JA = "あいうえおかきくけこがぎぐげごさしすせそたちつてとなにぬねのはばぱひびぴふぶぷへべぺほぼぽまみむめもやゆよらりるれろわをんアイウエオカキクケコガギグゲゴサシスセソタチツテトナニヌネノハバパヒビピフブプヘベペホボポマミムメモヤユヨラリルレロワヲンーッャュョ。、「」"
KO = "안녕하세요한국어토크나이저테스트입니다감사합니다대한민국서울부산"
AR = "مرحبا بالعالم هذا اختبار للمحلل اللغوي العربية كتاب مدرسة ١٢٣٤٥٦٧٨٩٠ ، ؟"
HI = "नमस्ते दुनिया यह एक परीक्षण है हिन्दी भाषा क़ ख़ ग़ ज़ ड़ ढ़ फ़ य़ ०१२३४५६७८९ ।"
RU = "Привет мир это тест токенизатора Ёлка ёжик Й й щука Съешь же ещё этих мягких французских булок"
EL = "Γειά σου Κόσμε αβγδεζηθικλμνξοπρστυφχψω ΆΈΉΊΌΎΏ ΐΰ"
TH = "สวัสดีชาวโลก ภาษาไทย ทดสอบ"
HE = "שלום עולם בדיקה עברית"
EMOJI = ["\U0001F600", "\U0001F602", "\U0001F44D", "\U0001F44D\U0001F3FB", "\U0001F44D\U0001F3FF", "\U0001F44B\U0001F3FD",
         "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466", "\U0001F469\u200D\U0001F4BB", "\U0001F3F3\uFE0F\u200D\U0001F308",
         "\U0001F1FA\U0001F1F8", "\U0001F1EF\U0001F1F5", "1\uFE0F\u20E3", "#\uFE0F\u20E3", "\u2764\uFE0F", "\u2764",
         "\U0001F9D1\U0001F3FE\u200D\U0001F680", "\U0001F525", "\U0001F680", "\U0001F914", "\u263A\uFE0F", "\U0001FAE0",
         "\U0001F937\U0001F3FC\u200D\u2642\uFE0F"]
LATEX = [r"\frac{a}{b}", r"\sqrt{x^2+y^2}", r"$x = \frac{-b \pm \sqrt{b^2-4ac}}{2a}$", r"\boxed{42}", r"\int_0^\infty e^{-x^2}\,dx",
         r"\sum_{i=1}^{n} i = \frac{n(n+1)}{2}", r"\left(\frac{1}{2}\right)^{3}", r"\begin{align} a &= b \\ c &= d \end{align}",
         r"$\alpha+\beta=\gamma$", r"\mathbb{R}^n", r"\cdot", r"\times", r"\le", r"\ge", r"\{1,2,3\}", "$$", r"\\", r"x_{i,j}^{(k)}"]
CODE = ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", "if x == 1:\n\tprint('hi')",
        "int main(void) { return 0; }", "console.log(`value: ${v}`);", "SELECT * FROM users WHERE id = 42;",
        "<div class=\"x\">Hello</div>", "    ", "\t\t", "x += 1  # comment", "#include <stdio.h>", "a->b", "a::b", "a != b",
        "lambda x: x**2", "arr[0][1]", "{\"key\": [1, 2, 3]}", "/* c */", "// comment", "   indented", "foo_bar_baz = None"]
WS = [" ", "  ", "   ", "        ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\r", " \n", "\n ", " \t ", "\u00A0",
      "\u2003", "\u3000", "\u0085", "\u2028", "\u2029", "\u202F", "\u205F", "\u1680", "\u200B", "\x0b", "\x0c", " \r\n ", "\n\t"]
COMBINING = ["e\u0301", "a\u0308", "o\u0302", "A\u030A", "n\u0303", "c\u0327", "a\u0323\u0302", "a\u0302\u0323", "u\u031B\u0303",
             "\u1100\u1161", "\u1100\u1161\u11A8", "\uAC00\u11A8", "\u0915\u093C", "\u0928\u093C", "\u05D1\u05BC", "e\u0301\u0301",
             "\u0301", "\u0301abc", "\u212B", "\u2126", "\uF900", "\uFA10", "\u0344", "\u0958", "\u1E9B\u0323", "\u0CCA", "\u0B47\u0B3E",
             "\u3099", "\u304B\u3099", "\u30CF\u309A", "i\u0307", "\u00C5", "\u1E0A\u0323", "\u1E0C\u0307", "Q\u0307\u0323",
             # marks newer than HF's normalization tables (see probe_nfc.py): left alone by HF
             "\u0312\u0EBA", "a\u1DFA\u0301", "e\u0301\u1ACE\u0323", "\u0915\u0C3C\u093C", "o\u0308\u1DF6", "\u0EBA\u0312"]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|quad_end|>", "<think>", "</think>", "<tool_call>", "<|fim_prefix|>",
           "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n", "<extra_0>", "<|im_start", "<|endoftext|", "<|im_end|>>",
           "<<|im_start|>", "<|vision_pad|><|image_pad|>", "< think>", "<|box_start|>x<|box_end|>"]
MISC = ["\x00", "a\x00b", "\x01\x02\x1f", "\x7f", "\u017F", "\u212A", "\u00B2", "\u2167", "\uFF11\uFF12\uFF13", "\u00BD", "\U0001D400",
        "\U00020000", "\uE000", "\U000F0000", "\uFFFD", "\uFEFF", "\u200E", "\u00AD", "ﬁ", "\u0130", "ß", "ẞ", "ǅ", "…", "—", "«»",
        "“quoted”", "‘single’", "©®™", "€£¥", "°C", "±", "∑∏∫√∞≈≠≤≥", "→⇒↔", "♠♣♥♦", "①②③", "Ⅳ", "¿¡", "\\", "\"", "''", "``", "..."]


def rand_word(r):
    w = r.choice(WORDS)
    k = r.random()
    if k < 0.1:
        w = w.upper()
    elif k < 0.2:
        w = w.capitalize()
    return w


def rand_digits(r):
    return "".join(r.choice("0123456789") for _ in range(r.randint(1, 14)))


def rand_chars(r, alphabet, lo=1, hi=12):
    return "".join(r.choice(alphabet) for _ in range(r.randint(lo, hi)))


def rand_cp(r):
    while True:
        k = r.random()
        if k < 0.6:
            c = r.randint(0x20, 0xFFFF)
        elif k < 0.8:
            c = r.randint(0x80, 0x2FFF)
        else:
            c = r.randint(0x10000, 0x10FFFF)
        if not (0xD800 <= c <= 0xDFFF):
            return chr(c)


def fragment(r):
    k = r.randint(0, 19)
    if k <= 3:
        return " ".join(rand_word(r) for _ in range(r.randint(1, 6)))
    if k == 4:
        return rand_word(r) + r.choice(CONTRACTIONS) + r.choice(["", " ", " " + rand_word(r)])
    if k == 5:
        return rand_digits(r) + r.choice(["", ".", ",", " ", "%", "x", "$", "/"]) + r.choice(["", rand_digits(r)])
    if k == 6:
        return r.choice(WS) * r.randint(1, 3)
    if k == 7:
        return rand_chars(r, CJK, 1, 20)
    if k == 8:
        return rand_chars(r, r.choice([JA, KO]), 1, 15)
    if k == 9:
        return r.choice([AR, HI, RU, EL, TH, HE])[: r.randint(3, 60)]
    if k == 10:
        return "".join(r.choice(EMOJI) for _ in range(r.randint(1, 4)))
    if k == 11:
        return r.choice(LATEX)
    if k == 12:
        return r.choice(CODE)
    if k == 13:
        return r.choice(SPECIAL)
    if k == 14:
        return r.choice(COMBINING) + r.choice(["", rand_word(r), " "])
    if k == 15:
        return r.choice(MISC)
    if k == 16:
        return "".join(rand_cp(r) for _ in range(r.randint(1, 6)))
    if k == 17:
        return rand_word(r) + r.choice([".", ",", "!", "?", ":", ";", "...", "!!", "?!", ")", "(", "-", "--"])
    if k == 18:
        return " " * r.randint(1, 8) + rand_word(r) + " " * r.randint(0, 5)
    return r.choice(["Step 1: ", "Step 2: ", "\n\n", "Therefore, ", "The answer is ", "#### ", "Q: ", "A: "]) + rand_digits(r)


def make_strings(r):
    out = ["", " ", "\n", "\x00", "<|im_start|>", "<|endoftext|><|endoftext|>", "a" * 300, "1" * 200, " " * 100 + "x",
           "\n" * 50, "\t \n" * 20, "ab" * 150]
    while len(out) < N_STRINGS:
        n = r.choice([1, 1, 2, 3, 4, 5, 6, 8, 12]) if r.random() < 0.97 else r.randint(20, 60)
        sep = r.choice(["", "", " ", "\n", "", r.choice(WS)])
        s = sep.join(fragment(r) for _ in range(n))
        if r.random() < 0.1:
            s += " " * r.randint(1, 4)  # trailing spaces
        out.append(s)
    return out


def main():
    tokdir, out_path = sys.argv[1], sys.argv[2]
    tok = Tokenizer.from_file(tokdir + "/tokenizer.json")
    r = random.Random(SEED)
    strings = make_strings(r)
    # cross-check: transformers' Qwen2 tokenizer adds nothing (no BOS/EOS) even with add_special_tokens=True
    try:
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(tokdir)
        for s in strings[:300]:
            a = tok.encode(s, add_special_tokens=False).ids
            assert hf.encode(s, add_special_tokens=False) == a, repr(s)
            assert hf.encode(s, add_special_tokens=True) == a, repr(s)
        print("transformers agrees on 300 strings (add_special_tokens True and False)", file=sys.stderr)
    except ImportError:
        pass
    n_nfc = 0
    hf_nfc = normalizers.NFC()
    with open(out_path, "w", encoding="utf-8") as f:
        for s in strings:
            rec = {"text": s, "ids": tok.encode(s, add_special_tokens=False).ids}
            nfc = hf_nfc.normalize_str(s)
            if nfc != s:
                rec["nfc"] = nfc
                n_nfc += 1
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(strings)} records ({n_nfc} change under NFC) to {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
