#!/usr/bin/env python3
"""IFEval checker fixtures: what the pinned reference decides on a response corpus this script
writes, so tests/ifeval_checkers.rs can hold steptune's checkers to it boolean for boolean.

    PY=$(scripts/ifeval-env.sh | tail -n1)
    $PY scripts/make_ifeval_fixtures.py          # writes tests/fixtures/ifeval/{checkers.json,
                                                 #   responses.jsonl, scores.json}

The reference: lm-eval 0.4.9.1's `ifeval` task (google-research's instruction_following_eval
checkers) through scripts/ifeval_ref.py, langdetect seeded with 0, letter_frequency literal.

The corpus (seeded, deterministic):
- `cases`: single instructions, each with the kwargs of a real IFEval prompt, on hand-written
  edge cases per checker and on responses a fragment generator assembles (titles, highlights,
  bullets, sections, dividers, P.S., JSON, quotes, case, commas, keywords, other languages, a
  chatty first or last line that only the loose reading drops, blank and near-blank texts);
- `responses.jsonl`: one generated response for each of the 541 prompts, with the reference's
  per-prompt booleans and its four accuracies in `scores.json`;
- `languages`: langdetect's answer on texts in 30 languages and on featureless texts.
The script fails unless every instruction type is both followed and not followed, strictly and
loosely, and the corpus holds at least 400 responses.
"""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ifeval_ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "ifeval")

# Short passages in the languages IFEval asks for, and a few more.
LANG_TEXT = {
    "en": "The library opens at nine in the morning. Please bring your card, and return books on time.",
    "de": "Die Bibliothek öffnet um neun Uhr morgens. Bitte bringen Sie Ihren Ausweis mit und geben Sie die Bücher pünktlich zurück.",
    "fr": "La bibliothèque ouvre à neuf heures du matin. Apportez votre carte et rendez les livres à temps, s'il vous plaît.",
    "es": "La biblioteca abre a las nueve de la mañana. Por favor, traiga su tarjeta y devuelva los libros a tiempo.",
    "it": "La biblioteca apre alle nove del mattino. Per favore portate la tessera e restituite i libri in tempo.",
    "pt": "A biblioteca abre às nove horas da manhã. Por favor, traga o seu cartão e devolva os livros no prazo.",
    "nl": "De bibliotheek gaat om negen uur 's ochtends open. Neem uw pas mee en lever de boeken op tijd in.",
    "sv": "Biblioteket öppnar klockan nio på morgonen. Ta med ditt kort och lämna tillbaka böckerna i tid.",
    "fi": "Kirjasto aukeaa aamulla kello yhdeksän. Ota korttisi mukaan ja palauta kirjat ajallaan.",
    "pl": "Biblioteka jest otwarta od dziewiątej rano. Proszę zabrać kartę i oddawać książki na czas.",
    "ru": "Библиотека открывается в девять часов утра. Пожалуйста, возьмите с собой читательский билет и возвращайте книги вовремя.",
    "bg": "Библиотеката отваря в девет часа сутринта. Моля, носете картата си и връщайте книгите навреме.",
    "uk": "Бібліотека відчиняється о дев'ятій ранку. Будь ласка, беріть із собою квиток і повертайте книжки вчасно.",
    "ar": "تفتح المكتبة في الساعة التاسعة صباحا. يرجى إحضار بطاقتك وإعادة الكتب في الوقت المحدد.",
    "fa": "کتابخانه ساعت نه صبح باز می شود. لطفا کارت خود را همراه داشته باشید و کتاب ها را به موقع برگردانید.",
    "ur": "لائبریری صبح نو بجے کھلتی ہے۔ براہ کرم اپنا کارڈ ساتھ لائیں اور کتابیں وقت پر واپس کریں۔",
    "hi": "पुस्तकालय सुबह नौ बजे खुलता है। कृपया अपना कार्ड साथ लाएँ और किताबें समय पर लौटाएँ।",
    "mr": "ग्रंथालय सकाळी नऊ वाजता उघडते. कृपया तुमचे कार्ड सोबत आणा आणि पुस्तके वेळेवर परत करा.",
    "ne": "पुस्तकालय बिहान नौ बजे खुल्छ। कृपया आफ्नो कार्ड ल्याउनुहोस् र किताबहरू समयमै फिर्ता गर्नुहोस्।",
    "bn": "গ্রন্থাগার সকাল নয়টায় খোলে। অনুগ্রহ করে আপনার কার্ড সঙ্গে আনুন এবং সময়মতো বই ফেরত দিন।",
    "gu": "પુસ્તકાલય સવારે નવ વાગ્યે ખુલે છે. કૃપા કરીને તમારું કાર્ડ સાથે લાવો અને પુસ્તકો સમયસર પરત કરો.",
    "pa": "ਲਾਇਬ੍ਰੇਰੀ ਸਵੇਰੇ ਨੌਂ ਵਜੇ ਖੁੱਲ੍ਹਦੀ ਹੈ। ਕਿਰਪਾ ਕਰਕੇ ਆਪਣਾ ਕਾਰਡ ਨਾਲ ਲਿਆਓ ਅਤੇ ਕਿਤਾਬਾਂ ਸਮੇਂ ਸਿਰ ਵਾਪਸ ਕਰੋ।",
    "ta": "நூலகம் காலை ஒன்பது மணிக்கு திறக்கும். தயவுசெய்து உங்கள் அட்டையை கொண்டு வாருங்கள், புத்தகங்களை நேரத்தில் திருப்பி கொடுங்கள்.",
    "te": "గ్రంథాలయం ఉదయం తొమ్మిది గంటలకు తెరుచుకుంటుంది. దయచేసి మీ కార్డు తీసుకురండి మరియు పుస్తకాలను సమయానికి తిరిగి ఇవ్వండి.",
    "kn": "ಗ್ರಂಥಾಲಯವು ಬೆಳಿಗ್ಗೆ ಒಂಬತ್ತು ಗಂಟೆಗೆ ತೆರೆಯುತ್ತದೆ. ದಯವಿಟ್ಟು ನಿಮ್ಮ ಕಾರ್ಡ್ ತನ್ನಿ ಮತ್ತು ಪುಸ್ತಕಗಳನ್ನು ಸಮಯಕ್ಕೆ ಹಿಂತಿರುಗಿಸಿ.",
    "th": "ห้องสมุดเปิดเวลาเก้าโมงเช้า กรุณานำบัตรของคุณมาด้วยและคืนหนังสือตรงเวลา",
    "vi": "Thư viện mở cửa lúc chín giờ sáng. Vui lòng mang theo thẻ của bạn và trả sách đúng hạn.",
    "ko": "도서관은 오전 아홉 시에 문을 엽니다. 카드를 가져오시고 책은 제때 반납해 주세요.",
    "ja": "図書館は朝九時に開きます。カードを持って来て、本は期限までに返してください。",
    "zh": "图书馆早上九点开门。请带上您的借书证，并按时归还图书。",
    "sw": "Maktaba hufunguliwa saa tatu asubuhi. Tafadhali leta kadi yako na urudishe vitabu kwa wakati.",
    "tr": "Kütüphane sabah dokuzda açılır. Lütfen kartınızı getirin ve kitapları zamanında iade edin.",
}

WORDS = ("river stone light garden window paper engine market winter music signal bridge forest "
         "letter summer harbor silver number planet coffee travel school doctor family").split()
OPENERS = ["Sure, here is my answer:", "Here you go!", "**Answer**", "Of course.", "Certainly! Below is the response."]
CLOSERS = ["Let me know if you need anything else.", "Hope this helps!", "***", "Is there anything else I can help with?"]


def sentence(rng, extra=()):
    n = rng.randint(3, 12)
    ws = [rng.choice(WORDS + list(extra)) for _ in range(n)]
    ws[0] = ws[0].capitalize()
    s = " ".join(ws)
    if rng.random() < 0.3:
        s = s.replace(" ", ", ", 1)
    return s + rng.choice([".", ".", ".", "!", "?", "...", ""])


def paragraph(rng, extra=()):
    return " ".join(sentence(rng, extra) for _ in range(rng.randint(1, 4)))


def kw_words(kwargs):
    out = []
    for k in ("keywords", "forbidden_words"):
        out += kwargs.get(k, [])
    for k in ("keyword", "first_word", "end_phrase"):
        if k in kwargs:
            out.append(kwargs[k])
    return [w for w in out if isinstance(w, str)]


def synth(rng, inst_ids, kwargs_list, prompt, comply):
    """A response that tries (comply) or does not try to follow the instructions, with noise."""
    kwargs = {}
    for k in kwargs_list:
        kwargs.update(k)
    extra = kw_words(kwargs)
    want = lambda: rng.random() < (0.8 if comply else 0.25)
    parts = []
    ids = set(inst_ids)
    lang = kwargs.get("language")
    if lang and want():
        body = [LANG_TEXT.get(lang, LANG_TEXT["de"]) for _ in range(rng.randint(1, 2))]
    else:
        body = [paragraph(rng, extra) for _ in range(rng.randint(1, 5))]
    if "length_constraints:nth_paragraph_first_word" in ids and want():
        n = kwargs["num_paragraphs"] + rng.choice([0, 0, 0, 1, -1])
        body = [paragraph(rng, extra) for _ in range(max(n, 1))]
        i = kwargs["nth_paragraph"] - 1
        if i < len(body):
            fw = kwargs["first_word"]
            fw = rng.choice([fw, fw.capitalize(), fw.upper(), f'"{fw}', f"'{fw},", fw + "."])
            body[i] = fw + " " + body[i]
    if "length_constraints:number_paragraphs" in ids and want():
        n = kwargs["num_paragraphs"] + rng.choice([0, 0, 0, 1, -1])
        body = [paragraph(rng, extra) for _ in range(max(n, 1))]
        sep = rng.choice(["\n***\n", " *** ", "\n\n***\n\n", "***"])
        text = sep.join(body)
        if rng.random() < 0.2:
            text = "***\n" + text
        body = [text]
    if "length_constraints:number_words" in ids and want():
        n = kwargs["num_words"] + rng.choice([-3, -1, 0, 1, 5, 40, -40])
        ws = [rng.choice(WORDS) for _ in range(max(n, 1))]
        body = [" ".join(ws) + "."]
    if "length_constraints:number_sentences" in ids and want():
        n = max(kwargs["num_sentences"] + rng.choice([-1, 0, 0, 1, 2]), 1)
        body = [" ".join(sentence(rng, extra).rstrip(".!?") + rng.choice([".", "!", "?"]) for _ in range(n))]
    sep = rng.choice(["\n\n", "\n", "\n\n", " "])
    text = sep.join(body)
    if "detectable_format:multiple_sections" in ids and want():
        sp = kwargs["section_spliter"]
        n = max(kwargs["num_sections"] + rng.choice([0, 0, 1, -1]), 1)
        text = "\n".join(f"{rng.choice([sp, sp.upper(), sp + ':'])} {i + 1}\n{paragraph(rng, extra)}" for i in range(n))
    if "detectable_format:number_bullet_lists" in ids and want():
        n = max(kwargs["num_bullets"] + rng.choice([0, 0, 1, -1]), 0)
        text += "\n" + "\n".join(rng.choice(["* ", "- ", "  * ", "*"]) + sentence(rng, extra) for _ in range(n))
    if "detectable_format:number_highlighted_sections" in ids and want():
        n = max(kwargs["num_highlights"] + rng.choice([0, 0, 1, -1]), 0)
        for _ in range(n):
            h = rng.choice(["*{}*", "**{}**", "* {} *", "*{}*"]).format(rng.choice(WORDS))
            text = text.replace(" ", " " + h + " ", 1) if rng.random() < 0.5 else text + "\n" + h
    if "detectable_content:number_placeholders" in ids and want():
        n = max(kwargs["num_placeholders"] + rng.choice([0, 0, 1, -1]), 0)
        text += " " + " ".join(rng.choice(["[name]", "[address]", "[ ]", "[date of birth]"]) for _ in range(n))
    if "keywords:existence" in ids and want():
        for k in kwargs["keywords"]:
            if rng.random() < 0.85:
                text += " " + rng.choice([k, k.upper(), k.capitalize(), k + "s", "un" + k])
    if "keywords:frequency" in ids and want():
        n = max(kwargs["frequency"] + rng.choice([0, 0, 1, -1, 2]), 0)
        text += " " + " ".join(rng.choice([kwargs["keyword"], kwargs["keyword"].upper()]) for _ in range(n))
    if "keywords:forbidden_words" in ids:
        if not want():
            w = rng.choice(kwargs["forbidden_words"])
            text += " " + rng.choice([w, w.upper(), w + "ing", "(" + w + ")"])
    if "keywords:letter_frequency" in ids and want():
        n = max(kwargs["let_frequency"] + rng.choice([0, 0, 1, -1]), 0)
        text += " " + rng.choice([kwargs["letter"], kwargs["letter"].upper()]) * n
    if "change_case:capital_word_frequency" in ids and want():
        n = max(kwargs["capital_frequency"] + rng.choice([0, 1, -1, 3]), 0)
        text += " " + " ".join(rng.choice(WORDS).upper() for _ in range(n)) + "."
    if "punctuation:no_comma" in ids and want():
        text = text.replace(",", "")
    if "detectable_format:title" in ids and want():
        text = rng.choice(["<<{}>>", "<< {} >>", "<<{}>"]).format(rng.choice(WORDS).title()) + "\n" + text
    if "combination:two_responses" in ids and want():
        other = paragraph(rng, extra) if rng.random() < 0.85 else text
        text = text + rng.choice(["\n******\n", "******", "\n\n******\n\n"]) + other
    if "detectable_content:postscript" in ids and want():
        m = kwargs["postscript_marker"]
        text += "\n\n" + rng.choice([m, m.lower(), m.replace(".", ". "), "P.S", "PS"]) + " " + sentence(rng, extra)
    if "startend:end_checker" in ids and want():
        text += " " + rng.choice([kwargs["end_phrase"], kwargs["end_phrase"].lower(), kwargs["end_phrase"] + '"', kwargs["end_phrase"] + " Thanks."])
    if "change_case:english_capital" in ids and want():
        text = text.upper()
    if "change_case:english_lowercase" in ids and want():
        text = text.lower()
    if "detectable_format:json_format" in ids and want():
        obj = {"answer": text[:200], "n": rng.randint(0, 9)}
        js = json.dumps(obj, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))
        if rng.random() < 0.15:
            js = js[:-1] + ",}"  # a trailing comma: not JSON
        text = rng.choice(["```json\n{}\n```", "{}", "```\n{}\n```", "```JSON\n{}```", "Here is the JSON:\n{}"]).format(js)
    if "combination:repeat_prompt" in ids and want():
        p = kwargs["prompt_to_repeat"]
        text = rng.choice([p, p.lower(), p.upper(), p[: max(len(p) - 3, 1)], " " + p]) + "\n" + text
    if "detectable_format:constrained_response" in ids and want():
        text = rng.choice(["My answer is yes.", "My answer is no.", "My answer is maybe.", "My answer is Yes.", "my answer is no"])
    if "startend:quotation" in ids and want():
        text = rng.choice(['"{}"', '"{}', '  "{}"  ', "“{}”"]).format(text)
    if rng.random() < 0.25:
        text = rng.choice(OPENERS) + "\n" + text
    if rng.random() < 0.25:
        text = text + "\n" + rng.choice(CLOSERS)
    if rng.random() < 0.05:
        text = rng.choice(["", " ", "\n", "*", "**", "\n\n"])
    return text


def hand_cases():
    """Edge cases per checker: (instruction_id, kwargs, response)."""
    c = []
    add = lambda i, k, *rs: c.extend((i, k, r) for r in rs)
    add("keywords:existence", {"keywords": ["river", "stone"]},
        "The river and the stone.", "The RIVER, the Stone", "riverstone", "The river only.", "", "   ")
    add("keywords:frequency", {"keyword": "light", "frequency": 3, "relation": "at least"},
        "light light light", "Light, LIGHT and lighting", "light light", "delight highlight light")
    add("keywords:frequency", {"keyword": "light", "frequency": 2, "relation": "less than"},
        "light", "no match here", "light light", "lightlight")
    add("keywords:forbidden_words", {"forbidden_words": ["cat", "dog"]},
        "A concatenation of words.", "The cat sat.", "CAT!", "dogs are fine", "hot-dog stand", "cat_dog", "gato perro")
    add("keywords:letter_frequency", {"letter": "e", "let_frequency": 5, "let_relation": "at least"},
        "eeeee", "EEEEe", "eeee", "Très élégant, èe e e")
    add("keywords:letter_frequency", {"letter": "#", "let_frequency": 2, "let_relation": "less than"},
        "# one", "## two", "none at all")
    add("keywords:letter_frequency", {"letter": "!", "let_frequency": 3, "let_relation": "at least"},
        "Wow!!!", "Hi!", "!!!!!!")
    for lang in ("de", "hi", "ar", "ko", "ru", "th", "sw"):
        add("language:response_language", {"language": lang}, LANG_TEXT[lang], LANG_TEXT["en"], "12345 67 89", "!!!", ":)")
    add("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
        "One. Two.", "One. Two. Three.", "Mr. Smith went to Washington. He arrived at 3 p.m. on Jan. 5.",
        "What? Really! Yes.", "No terminal punctuation at all", "e.g. this one. And i.e. that one.")
    add("length_constraints:number_sentences", {"num_sentences": 4, "relation": "at least"},
        "A. B. C. D.", "First line\nSecond line\nThird line\nFourth line", "1. Open the app.\n2. Tap Settings.\n3. Tap Reset.\n4. Confirm.",
        "He said \"Stop.\" Then he left. It rained... Later it cleared.")
    add("length_constraints:number_paragraphs", {"num_paragraphs": 3},
        "a\n***\nb\n***\nc", "***\na *** b *** c\n***", "a *** *** c", "a***b***c", "one paragraph", "a\n\n***\n\nb\n\n***\n\nc", "a * * * b")
    add("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
        "one two three four", "one two three four five", "it's a well-known fact", "naïve café déjà vu", "x_y z 3.14")
    add("length_constraints:number_words", {"num_words": 3, "relation": "at least"},
        "١٢٣ ४५६ word", "東京 大阪 京都", "a b", "e\u0301t\u00e9 done ok")
    add("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "summary"},
        "Intro.\n\nSummary of things.\n\nEnd.", "Intro.\n\n\"Summary,\" he said.\n\nEnd.", "Intro.\n\n'summary' here.\n\nEnd.",
        "Intro.\n\nSummary\n\nEnd.\n\nExtra.", "Intro.\n\n\n\nSummary here.\n\nEnd.", "Intro.\n\nSummarY!\n\nEnd.",
        "\n\nIntro.\n\nSummary x.\n\nEnd.", "Intro.\n\nsummary.word\n\nEnd.")
    add("detectable_content:number_placeholders", {"num_placeholders": 2},
        "[a] [b]", "[a][b]", "[a] [", "[[nested]]", "[\n]", "[]  []")
    add("detectable_content:postscript", {"postscript_marker": "P.S."},
        "Body.\nP.S. more", "Body.\np.s. more", "Body. P. S. more", "Body.\nPS more", "Body.\nP.S more")
    add("detectable_content:postscript", {"postscript_marker": "P.P.S"},
        "Body.\nP.P.S more", "Body.\np. p. s more", "Body.\nP.S. only")
    add("detectable_content:postscript", {"postscript_marker": "Note"}, "Body.\nNOTE: x", "No n-o-t-e here")
    add("detectable_format:number_bullet_lists", {"num_bullets": 2},
        "* a\n* b", "- a\n- b", "* a\n- b", "**bold**\n* a\n* b", "* a\n* b\n* c", "  * a\n\t- b", "*\n* a", "---\n* a")
    add("detectable_format:constrained_response", {},
        "My answer is yes.", "  My answer is no.  ", "I think My answer is maybe. ok", "My answer is Yes.", "my answer is yes.")
    add("detectable_format:number_highlighted_sections", {"num_highlights": 2},
        "*a* and *b*", "**a** and **b**", "*a* **b**", "* * and *b*", "*a\nb*", "**** *x*", "*a*b*c*")
    add("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nx\nSection 2\ny", "SECTION 1 x SECTION 2 y", "Section 1\nx", "Section1 x Section 2 y", "Section one x Section two")
    add("detectable_format:multiple_sections", {"section_spliter": "Day", "num_sections": 3},
        "Day 1: a\nDay 2: b\nDay 3: c", "Day 1 Day 2", "Today 1 Day 2 Day 3")
    add("detectable_format:json_format", {},
        '{"a": 1}', '```json\n{"a": [1, 2.5, -3e2]}\n```', "```\n[]\n```", '{"a": NaN, "b": Infinity, "c": -Infinity}',
        '{"a": 1,}', "{'a': 1}", '{"a": 1} extra', "```Json\n\"text\"\n```", "1.", "01", "-0", "1e", "null", "true",
        '"\\ud800"', '"tab\there"', '"bad \\x escape"', "```json\n{\"a\": 1}", '{"a":\n 1}\n```', "\ufeff{}", "[1, 2", "   ")
    add("detectable_format:title", {},
        "<<Title>>\nbody", "<< >>", "<<>>", "<<a\nb>>", "<<<x>>>", "no title", "<< Title >> and <<Other>>")
    add("combination:two_responses", {},
        "A\n******\nB", "A******A", "******\nA\n******\nB\n******", "A\n******\n\n******\nB", "A ****** B ****** C", "A *****B")
    add("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem about cats."},
        "Write a poem about cats.\nCats are nice.", "  write a POEM about cats. ok", "Write a poem about dogs.", "Sure. Write a poem about cats.")
    add("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"},
        "Done. Is there anything else I can help with?", "Done. is there anything else i can help with?\"",
        "Done. Is there anything else I can help with? Thanks", "Is there anything else I can help with?\n\n")
    add("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "at least"},
        "THE BIG DOG", "The BIG dog RUNS FAST.", "U.S.A. IS HERE", "I AM OK", "don't CAN'T WON'T", "A-B C-D E-F")
    add("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
        "ONE", "ONE TWO", "none")
    add("change_case:english_capital", {},
        "THIS IS ALL CAPITAL LETTERS IN ENGLISH.", "THIS IS mostly CAPITAL.", "DIES IST EIN DEUTSCHER SATZ MIT GROSSBUCHSTABEN.", "123 456", "ǅ")
    add("change_case:english_lowercase", {},
        "this is all lowercase english text.", "this is Not lowercase.", "dies ist ein deutscher satz in kleinbuchstaben.", "123", "ß and ǆ")
    add("punctuation:no_comma", {}, "No commas here.", "One, two.", "Fullwidth，comma", "")
    add("startend:quotation", {}, '"Quoted."', '  "Quoted."  ', '"', '""', "“Curly.”", '"open only')
    return c


def main():
    ifeval_ref.check_pins(sys.argv[0])
    registry, _, _ = ifeval_ref.reference()
    import langdetect

    rng = random.Random(20261130)
    with open(os.path.join(ROOT, "data", "ifeval", "input_data.jsonl"), encoding="utf-8") as f:
        prompts = [json.loads(line) for line in f]
    ids = list(registry.INSTRUCTION_DICT)

    cases = []

    def case(iid, kwargs, prompt, response, source):
        strict, loose = ifeval_ref.follows(registry, iid, kwargs, prompt, response)
        cases.append({"instruction_id": iid, "kwargs": kwargs, "prompt": prompt, "response": response,
                      "strict": strict, "loose": loose, "source": source})

    for iid, kwargs, response in hand_cases():
        case(iid, kwargs, "", response, "hand")
        # The loose reading drops a first/last line and asterisks: the same case wrapped.
        case(iid, kwargs, "", "Sure, here it is:\n" + response + "\n*Hope this helps!*", "hand+wrapped")
    # Every real (instruction, kwargs) once, on a response made to follow it and one that is not.
    for p in prompts:
        for iid, kwargs in zip(p["instruction_id_list"], p["kwargs"]):
            for comply in (True, False):
                r = synth(rng, [iid], [kwargs], p["prompt"], comply)
                case(iid, kwargs, p["prompt"], r, "synth")

    # Whole prompts: one response each, scored as the reference's evaluation_lib does.
    rows, lines = [], []
    for p in prompts:
        r = synth(rng, p["instruction_id_list"], p["kwargs"], p["prompt"], rng.random() < 0.6)
        strict, loose = [], []
        for iid, kwargs in zip(p["instruction_id_list"], p["kwargs"]):
            s, l = ifeval_ref.follows(registry, iid, kwargs, p["prompt"], r)
            strict.append(s)
            loose.append(l)
        rows.append({"key": p["key"], "instruction_id_list": p["instruction_id_list"], "strict": strict, "loose": loose})
        lines.append(json.dumps({"prompt": p["prompt"], "response": r}, ensure_ascii=False))
    n_inst = sum(len(r["strict"]) for r in rows)
    scores = {
        "strict_prompt": sum(all(r["strict"]) for r in rows) / len(rows),
        "strict_instruction": sum(sum(r["strict"]) for r in rows) / n_inst,
        "loose_prompt": sum(all(r["loose"]) for r in rows) / len(rows),
        "loose_instruction": sum(sum(r["loose"]) for r in rows) / n_inst,
        "rows": rows,
    }

    languages = []
    texts = list(LANG_TEXT.values()) + [t.upper() for t in LANG_TEXT.values()][:10] + [
        "", "12345", "!!!", ":-)", "https://example.com/a/b", "OK", "ok ok ok", "Ça va? Sí. Ja.", "a", "\n\n"]
    texts += [c["response"] for c in cases if c["instruction_id"].startswith(("language:", "change_case:english"))]
    for t in texts:
        try:
            lang = langdetect.detect(t)
        except langdetect.LangDetectException:
            lang = None
        languages.append({"text": t, "lang": lang})

    # Coverage: every type followed and not followed, strictly and loosely.
    for iid in ids:
        for reading in ("strict", "loose"):
            seen = {c[reading] for c in cases if c["instruction_id"] == iid}
            if seen != {True, False}:
                sys.exit(f"coverage: {iid} is only ever {reading} {seen}; add cases")
    n_responses = len(cases) + len(lines)
    if n_responses < 400:
        sys.exit(f"only {n_responses} responses")

    os.makedirs(OUT, exist_ok=True)
    meta = {"generator": "scripts/make_ifeval_fixtures.py", "pins": ifeval_ref.PINS, "python": sys.version.split()[0],
            "langdetect_seed": 0, "langdetect_profile_order": ifeval_ref.langdetect_profile_order()}
    with open(os.path.join(OUT, "checkers.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "cases": cases, "languages": languages}, f, ensure_ascii=False, indent=0)
    with open(os.path.join(OUT, "responses.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "scores.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, **scores}, f, ensure_ascii=False, indent=0)
    by = {}
    for c in cases:
        s = by.setdefault(c["instruction_id"], [0, 0, 0])
        s[0] += 1
        s[1] += c["strict"]
        s[2] += c["loose"]
    for iid in ids:
        n, s, l = by[iid]
        print(f"{iid:48s} {n:4d} cases  strict {s:4d}  loose {l:4d}")
    print(f"{len(cases)} single-instruction cases, {len(lines)} whole responses, {len(languages)} language texts")
    print(f"whole responses: strict prompt {scores['strict_prompt']:.4f} instruction {scores['strict_instruction']:.4f}, "
          f"loose prompt {scores['loose_prompt']:.4f} instruction {scores['loose_instruction']:.4f}")


if __name__ == "__main__":
    main()
