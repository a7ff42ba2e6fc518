#!/usr/bin/env python3
"""Builds the tokenizer test corpus (tests/data/tokenizer/corpus.jsonl) and a
small hand-made tokenizer that exercises added-token flags
(tests/data/tokenizer/flags/tokenizer.json). Deterministic: same seed, same
output. Usage: python3 tools/make_tokenizer_corpus.py [--out tests/data/tokenizer]
"""
import argparse
import json
import os
import random

SEED = 20250601

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged that a single man in possession of a good fortune must be in want of a wife.",
    "I'm sure you'll agree: we've done what we'd planned, and they're happy.",
    "DON'T SHOUT. WE'LL HEAR YOU. IT'S FINE, ISN'T IT? THEY'RE HERE, I'VE SEEN 'EM.",
    "She said, \"Hello there!\" and then -- without warning -- left.",
    "Dr. Smith's lab (room 4B) measured 3.14159 radians; see Fig. 2a.",
    "e-mail: someone@example.com, url: https://example.org/path?q=1&r=two#frag",
    "Mixed   spacing\tand\ttabs   here.  Two spaces after a period.  Like this.",
    "Trailing spaces   ",
    "   Leading spaces",
    "line one\nline two\n\nline four after a blank line\n",
    "Windows line endings\r\nsecond line\r\n\r\nafter blank\r\n",
    "old mac\rline endings\rhere",
    "Ellipsis… em—dash – en-dash ‘single’ “double” « guillemets » ‹x›",
    "Reasoning step by step: first, 2 + 2 = 4; second, 4 * 3 = 12; therefore the answer is 12.",
    "The year 2024 had 366 days, 8784 hours and 527040 minutes.",
    "Prices: $5, $10.99, €1.000,50, £3, ¥500, ₹1,00,000.",
    "Version v1.2.3-rc.4+build.567 released on 2023-11-05T12:34:56Z.",
    "Shakespeare wrote: 'Tis nobler in the mind to suffer the slings and arrows of outrageous fortune.",
    "Words with apostrophes: rock'n'roll, o'clock, y'all, ma'am, 'tis, fo'c's'le.",
    "Unicode apostrophe: it’s, we’re, they’ve, I’d, you’ll.",
    "Long s: ſtate of the art; Kelvin: 273 K; Angstrom: 1 Å; ligature: ﬁne ﬂow.",
    "Greek: Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
    "Russian: Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Arabic: الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "Hebrew: השועל החום המהיר קופץ מעל הכלב העצלן.",
    "Hindi: तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    "Thai: สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ",
    "Vietnamese: Con cáo nâu nhanh nhẹn nhảy qua con chó lười biếng.",
    "Turkish: Hızlı kahverengi tilki tembel köpeğin üzerinden atlar. İstanbul ıİ",
    "German: Größere Übungen für Äpfel und Öl; straße STRASSE ẞ.",
    "French: L'œuvre d'art coûte très cher à Noël, n'est-ce pas ?",
    "Spanish: ¿Dónde está el baño? ¡Aquí! El niño comió piñata.",
    "Polish: Zażółć gęślą jaźń.",
    "Armenian: Բարեւ աշխարհ; Georgian: გამარჯობა მსოფლიო",
    "Amharic: ሰላም ለዓለም; Tamil: வணக்கம் உலகம்; Bengali: হ্যালো বিশ্ব",
]

CHINESE = [
    "我们今天去公园散步，天气非常好。",
    "深度求索公司发布了新的推理模型，它在数学和编程任务上表现出色。",
    "人工智能（AI）正在改变世界：从医疗到教育，无处不在！",
    "这是一个测试句子，包含English单词和数字123456。",
    "《红楼梦》是中国古典四大名著之一，作者曹雪芹。",
    "请问：“你吃饭了吗？”他回答：‘还没有。’",
    "繁體中文：臺灣的天氣很熱，我們去喝珍珠奶茶吧。",
    "数学公式：设 x² + y² = r²，则圆的面积为 πr²。",
    "一二三四五六七八九十百千万亿",
    "𠀀𠀁𠀂𪚥𫝀 是扩展汉字区的字符",
    "龘靐齉齾爩鱻麤龗灪龖厵滟",
]

JAPANESE = [
    "今日はいい天気ですね。散歩に行きましょう。",
    "カタカナとひらがなと漢字が混ざった文章です。",
    "東京タワーは1958年に完成しました。",
    "ｈａｌｆｗｉｄｔｈ ｶﾀｶﾅ and full-width ＡＢＣ１２３！",
    "「こんにちは」と彼女は言った。〜ですよ♪",
    "ヴァイオリンとゔぁいおりん、ー長音符",
]

KOREAN = [
    "안녕하세요, 만나서 반갑습니다.",
    "한국어 문장과 English 단어가 섞여 있습니다.",
    "다람쥐 헌 쳇바퀴에 타고파.",
    "\u1100\u1161\u11a8 decomposed hangul jamo \u1112\u1161\u11ab",
]

CODE = [
    "def fib(n):\n\tif n < 2:\n\t\treturn n\n\treturn fib(n - 1) + fib(n - 2)\n",
    "int main(int argc, char** argv) {\n    std::vector<int> v{1, 2, 3};\n    for (auto& x : v) x *= 2;\n    return 0;\n}\n",
    "    if (a && b || !c) { x += 0x1F; y <<= 3; }\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "const f = async (x) => { await fetch(`/api/${x}`); return x ?? null; };",
    "<html>\n  <body>\n    <div class=\"a\">Hi &amp; bye</div>\n  </body>\n</html>",
    "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
    "#include <stdio.h>\n\n\n\nint x;          // many spaces\n\t\t\t// tabs\n",
    "fn main() {\n    let s: &str = \"hello\";\n    println!(\"{s:?}\");\n}\n",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # comment\n",
    "    \n    \n\t\n  ",
    "a\t\tb\t \tc \t d",
    "                                                                end",
    "$ ls -la | grep '^d' | awk '{print $9}' > out.txt 2>&1",
    "regex: ^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@\\w+\\.com$",
    "path\\to\\file.txt C:\\Users\\name\\Documents",
    "diff --git a/x b/x\n@@ -1,3 +1,4 @@\n-old line\n+new line\n context",
    "// 中文注释\nlet 变量 = \"值\";",
    "matrix = [[1,0,0],[0,1,0],[0,0,1]]\r\n\r\nprint(matrix)\r\n",
]

SPECIALS = [
    "<｜User｜>Hello<｜Assistant｜><think>\nLet me think.\n</think>\n\nHi!<｜end▁of▁sentence｜>",
    "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>What is 2+2?<｜Assistant｜>",
    "text before <think> inside </think> after",
    "<think></think><think>\n\n</think>",
    "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
    "<|endoftext|> <|end_of_text|> <|reserved_special_token_5|>",
    "partial <｜User and <think but not closed <|im_start",
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
    "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{\"temp\": 21}<｜tool▁output▁end｜><｜tool▁outputs▁end｜>",
    "<<think>> <</think>> <thinkthink> <<｜User｜>>",
    "  <think>  spaced  </think>  ",
    "<｜fim▁begin｜>def f():<｜fim▁hole｜>\n<｜fim▁end｜>",
    "<｜place▁holder▁no▁0｜><｜place▁holder▁no▁799｜>",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call><tool_response>ok</tool_response>",
    "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>",
    "<|vision_start|><|image_pad|><|vision_end|>",
    "</think>",
    "<think>",
    "<｜User｜>",
]

EMOJI = [
    "Hello 👋 world 🌍!",
    "Family: 👨‍👩‍👧‍👦 couple: 👩‍❤️‍👨 technologist: 🧑🏽‍💻",
    "Skin tones: 👍🏻👍🏼👍🏽👍🏾👍🏿",
    "Flags: 🇺🇸🇨🇳🇯🇵🇰🇷🇩🇪 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣ and hearts ❤️ ♥ ❤",
    "🤖🤖🤖🤖🤖🤖🤖🤖🤖🤖",
    "🏳️‍🌈🏳️‍⚧️ 🐻‍❄️ 😶‍🌫️",
    "Math: ∀x∈ℝ, ∃y: x² + y² ≥ 0 ⇒ √(x²) = |x|; ∑ᵢ aᵢ ≤ ∞ ∮ ∇·E",
    "Bold math: 𝐀𝐁𝐂 𝑎𝑏𝑐 𝔸𝔹ℂ 𝟘𝟙𝟚",
    "Box drawing: ┌─┬─┐ │ │ │ └─┴─┘ ░▒▓█",
    "Arrows ←↑→↓↔ ⟵⟶ and stars ★☆✦✧",
    "Musical 𝄞 𝄢 ♩♪♫♬",
]

SPACES = [
    "nbsp\u00a0between\u00a0words",
    "thin\u2009space and hair\u200aspace and em\u2003space",
    "ideographic\u3000space\u3000here",
    "narrow\u202fnbsp and medium\u205fmath space",
    "ogham\u1680space and next line\u0085here",
    "line sep\u2028para sep\u2029end",
    "zero width\u200bspace, zwnj\u200c, zwj\u200d, bom\ufeffhere",
    "\u00a0\u00a0\u00a0leading nbsp",
    "trailing nbsp\u00a0\u00a0",
    " \u00a0 \u2003 \t \n mixed whitespace run \u3000\u3000 end",
    "vertical\x0btab and form\x0cfeed",
    "control chars \x01\x02\x03\x1b[31mred\x1b[0m \x7f",
    "file\x1cgroup\x1drecord\x1eunit\x1fsep",
    "\n\n\n\n",
    "\r\n\r\n\r\n",
    " ",
    "  ",
    "\t",
    "a \n b \r\n c \n\n d",
    "word   \n   next",
    "   \n",
]

COMBINING = [
    "cafe\u0301 vs caf\u00e9",
    "n\u0303 and \u00f1; a\u030a vs \u00e5; o\u0308 vs \u00f6",
    "Zalgo: Z\u0351\u036b\u0343a\u0352\u0310l\u0300g\u0311o\u034b\u0344",
    "stacked e\u0301\u0302\u0323 and q\u0307\u0323 order",
    "\u0301 leading combining mark",
    "Devanagari with virama: क्ष त्र ज्ञ",
    "Angstrom sign \u212b and ohm \u2126 and kelvin \u212a",
    "compatibility: \ufb01 \u2460 \u00bd \u2122 \u33a1 \uff21",
    "Hangul precomposed 한 vs decomposed \u1112\u1161\u11ab",
    "a\u0328\u0301 and \u0105\u0301 and \u1e9b\u0323",
    "Vietnamese decomposed: Vie\u0323\u0302t Nam",
    "\u0344 \u0340 \u0341 \u0343 singleton decompositions",
]

INVALID_LOOKING = [
    "\ufffd replacement char \ufffd\ufffd",
    "literal escapes: \\xff \\u0000 \\n \\t <0xFF> <0x0A>",
    "byte-level lookalikes: Ġhello Ċ ĉ Ã© Ã¤",
    "surrogate-ish text: \\ud800 \\udfff",
    "noncharacters: \ufdd0 \ufffe \uffff \U0001fffe",
    "private use: \ue000\uf8ff \U000f0000 \U0010fffd",
    "BOM at start",
    "\ufeffBOM at start",
    "tag characters: \U000e0041\U000e0042",
    "variation selectors: ⛄\ufe0f ⛄\ufe0e 葛\U000e0100",
    "\x00 null in text \x00",
    "mojibake: ä½ å¥½ ì•ˆë…• Ð¿Ñ€Ð¸Ð²ÐµÑ‚",
]

WORD_POOL = (
    "the of and to in is you that it he was for on are as with his they I at be this have from or one "
    "had by word but not what all were we when your can said there use an each which she do how their if "
    "will up other about out many then them these so some her would make like him into time has look two "
    "more write go see number no way could people my than first water been call who oil its now find long "
    "down day did get come made may part reasoning model token inference server latency throughput"
).split()

# Old, stable blocks only (assigned long before Unicode 14), so the Unicode
# tables of PCRE2, Oniguruma and Python agree on every character.
RANDOM_RANGES = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x250, 0x2FF), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
    (0x530, 0x58F), (0x5D0, 0x5EA), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x10A0, 0x10FF),
    (0x1100, 0x11FF), (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x2070, 0x209C), (0x20A0, 0x20B9),
    (0x2100, 0x214F), (0x2190, 0x23FF), (0x2460, 0x24FF), (0x2500, 0x27BF), (0x2E80, 0x2EF3),
    (0x3000, 0x303F), (0x3040, 0x309F), (0x30A0, 0x30FF), (0x3130, 0x318F), (0x4E00, 0x9FA5),
    (0xAC00, 0xD7A3), (0xF900, 0xFA2D), (0xFB00, 0xFB4F), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF),
    (0x10300, 0x1031E), (0x10330, 0x1034A), (0x1D400, 0x1D7FF), (0x1D100, 0x1D126),
    (0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6C5), (0x20000, 0x2A6D6), (0xE0020, 0xE007F),
]


def random_char(rng):
    import unicodedata
    while True:
        lo, hi = rng.choice(RANDOM_RANGES)
        cp = rng.randint(lo, hi)
        ch = chr(cp)
        if unicodedata.category(ch) in ("Cn", "Cs", "Co"):
            continue
        return ch


def random_number(rng, length):
    return "".join(rng.choice("0123456789") for _ in range(length))


def make_corpus():
    rng = random.Random(SEED)
    out = []
    out += PROSE + CHINESE + JAPANESE + KOREAN + CODE + SPECIALS + EMOJI + SPACES + COMBINING
    out += INVALID_LOOKING
    out.append("")
    # Numbers of every length, alone and in context.
    for n in range(1, 41):
        out.append(random_number(rng, n))
    for n in range(1, 25):
        num = random_number(rng, n)
        out.append(f"The total is {num} units, or {num}.{random_number(rng, 2)} per {num[::-1]}x.")
    out.append("1,234,567.89 -42 +7 3e-5 0x7fff 0b1010 1_000_000 ١٢٣٤٥ ०१२३ 一二三 ①②③ ½ ²³")
    out.append("year2024abc123def4567ghi 12ab34 a1b2c3")
    # Random English-ish sentences.
    for _ in range(60):
        words = [rng.choice(WORD_POOL) for _ in range(rng.randint(3, 25))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        sep = rng.choice([" ", " ", " ", "  ", "\t", "\n", " \n"])
        s = sep.join(words) + rng.choice([".", "!", "?", "", "...", ";", ":)"])
        if rng.random() < 0.2:
            s = s.upper()
        out.append(s)
    # Random mixtures of the hand-written pieces.
    pools = [PROSE, CHINESE, JAPANESE, KOREAN, CODE, SPECIALS, EMOJI, SPACES, COMBINING]
    for _ in range(120):
        parts = []
        for _ in range(rng.randint(2, 5)):
            pool = rng.choice(pools)
            p = rng.choice(pool)
            if len(p) > 8 and rng.random() < 0.5:
                a = rng.randint(0, len(p) - 1)
                b = rng.randint(a, len(p))
                p = p[a:b]
            parts.append(p)
        out.append(rng.choice(["", " ", "\n", "  ", "\t"]).join(parts))
    # Random Unicode strings.
    for _ in range(150):
        n = rng.randint(1, 40)
        out.append("".join(random_char(rng) for _ in range(n)))
    # Random ASCII with lots of punctuation and whitespace.
    ascii_pool = "abcXYZ019 '\"!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`\t\n\r"
    for _ in range(80):
        n = rng.randint(1, 60)
        out.append("".join(rng.choice(ascii_pool) for _ in range(n)))
    # Whitespace runs before words and at the end (the \s+(?!\S) rule).
    for n in range(1, 12):
        out.append(" " * n + "x" + " " * n + "y" + "\t" * n + "z" + " " * n)
        out.append("\n" * n + " " * n + "a" + " " * n + "\n" * n)
    # A few long strings.
    for _ in range(4):
        out.append(" ".join(rng.choice(PROSE + CHINESE + CODE) for _ in range(40)))
    out.append("a" * 5000)
    out.append("中" * 3000)
    out.append(" " * 2000 + "end")
    out.append("9" * 1000)
    out.append("😀" * 500)
    return out


def byte_level_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def make_flags_tokenizer():
    """A tiny byte-level BPE whose added tokens use every matching flag."""
    bl = byte_level_chars()
    vocab = {}
    for b in range(256):
        vocab[bl[b]] = len(vocab)
    def enc(s):
        return "".join(bl[b] for b in (s if isinstance(s, bytes) else s.encode("utf-8")))
    merges = []
    for a, b in [("t", "h"), ("h", "e"), ("th", "e"), (" ", "t"), (" t", "he"), ("i", "n"), ("in", "g"),
                 (" ", "w"), (" w", "o"), ("r", "d"), (" wo", "rd"), ("e", "r"), (b"\xc3", b"\xa9"), ("é", "s")]:
        ea, eb = enc(a), enc(b)
        merges.append([ea, eb])
        if ea + eb not in vocab:
            vocab[ea + eb] = len(vocab)
    def tok(i, content, special, lstrip=False, rstrip=False, single_word=False, normalized=False):
        return {"id": i, "content": content, "single_word": single_word, "lstrip": lstrip,
                "rstrip": rstrip, "normalized": normalized, "special": special}
    n = len(vocab)
    added = [
        tok(n + 0, "<s>", True),
        tok(n + 1, "</s>", True),
        tok(n + 2, "<L>", True, lstrip=True),
        tok(n + 3, "<R>", True, rstrip=True),
        tok(n + 4, "<LR>", False, lstrip=True, rstrip=True),
        tok(n + 5, "word", False, single_word=True),
        tok(n + 6, "café", False, normalized=True),
        tok(n + 7, "naïve", False, normalized=False),
        tok(n + 8, "<a>", True),
        tok(n + 9, "<a><b>", True),
        tok(n + 10, "ab", False, normalized=True, single_word=True),
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [n], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges},
    }


FLAGS_CORPUS = [
    "hello <L> world", "hello    <L>world", "<L>", "  <L>  ", "x<R>   y", "x <R>\n\n y", "<R>",
    "a <LR> b", "a\t<LR>\tb", "a<LR>b", "word", "a word here", "swordfish", "words", "word_x", "_word",
    "1word", "word1", "(word)", "cafe\u0301 time", "café time", "nai\u0308ve", "naïve", "<a><b>",
    "<a><a><b><b>", "<a>", "x<a>y", "ab", "ab cd", "abc", "xab", "ab!", "the thing", "the   word  <L> <R> end",
    "<s>inside</s>", " <s> ", "", "   ", "é́s", "wordword word",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                  "tokenizer"))
    args = ap.parse_args()
    os.makedirs(os.path.join(args.out, "flags"), exist_ok=True)
    corpus = make_corpus()
    assert len(corpus) >= 500, len(corpus)
    with open(os.path.join(args.out, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for s in corpus:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    with open(os.path.join(args.out, "flags", "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(make_flags_tokenizer(), f, ensure_ascii=False, indent=1)
    with open(os.path.join(args.out, "flags", "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>",
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=1)
    with open(os.path.join(args.out, "flags", "corpus.jsonl"), "w", encoding="utf-8") as f:
        for s in FLAGS_CORPUS:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    print(f"wrote {len(corpus)} corpus strings and the flags tokenizer to {args.out}")


if __name__ == "__main__":
    main()
