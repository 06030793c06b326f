"""How the synthetic languages sound and are written: the phoneme inventory, the ten
scripts that render phonemes (two Latin variants with disjoint letters, Cyrillic, Greek,
Armenian, Georgian, Hebrew and Arabic written as alphabets, Devanagari and Thai as
abugidas), each family's proto-phonology and the sound changes that turn a family's
proto-lexicon into its members' words. Used by :mod:`xelm.data.synthetic` (``SCRIPTS`` is
importable from there too)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CONSONANTS = "ptkbdgmnszfvlrhjwx"
VOWELS = "aeiouy"


@dataclass(frozen=True)
class Script:
    """How phonemes are written: one glyph string per phoneme, or an abugida."""

    name: str
    glyphs: tuple[str, ...]
    cased: bool = True
    stop: str = "."
    comma: str = ","
    vowel_signs: tuple[str, ...] | None = None
    virama: str = ""

    def render(self, phonemes: str) -> str:
        if self.vowel_signs is None:
            return phonemes.translate(glyph_table(self))
        return render_abugida(self, phonemes)


def script(name: str, glyphs: str, signs: str | None = None, **kw) -> Script:
    signs_tuple = tuple("" if s == "0" else s for s in signs.split()) if signs else None
    return Script(name, tuple(glyphs.split()), vowel_signs=signs_tuple, **kw)


SCRIPTS = {s.name: s for s in (
    script("latin", "p t k b d g m n s z f v l r h j w sh a e i o u ë"),
    script("latin-ext", "ƥ ť ķ ƀ ď ģ ḿ ň ś ž ƒ ʋ ľ ř ħ ĵ ŵ š ā ē ī ō ū ə"),
    script("cyrillic", "п т к б д г м н с з ф в л р х й ў ш а е и о у ы"),
    script("greek", "π τ κ β δ γ μ ν σ ζ φ ϝ λ ρ χ ϳ θ ξ α ε ι ο υ η"),
    script("armenian", "պ տ կ բ դ գ մ ն ս զ ֆ վ լ ր հ յ ւ շ ա ե ի ո ու ը", stop="։"),
    script("georgian", "პ ტ კ ბ დ გ მ ნ ს ზ ფ ვ ლ რ ჰ ჲ ჳ შ ა ე ი ო უ ჷ", cased=False),
    script("hebrew", "פ ת ק ב ד ג מ נ ס ז ף צ ל ר ח ײ װ ש א ע י ו וּ ה", cased=False),
    script("arabic", "پ ت ك ب د گ م ن س ز ف ڤ ل ر ه ي و ش ا ى ئ ۆ ۇ ە",
            cased=False, comma="،"),
    script("devanagari", "प त क ब द ग म न स ज फ व ल र ह य ळ श आ ए इ ओ उ अ",
            signs="ा े ि ो ु 0", virama="्", cased=False, stop="।"),
    script("thai", "ป ต ก บ ด ค ม น ส ซ ฟ ว ล ร ห ย ญ ช อา อี อิ อื อุ อึ",
            signs="า ี ิ ื ุ ึ", cased=False),
)}


@lru_cache(maxsize=None)
def glyph_table(script: Script) -> dict[int, str]:
    return {ord(p): g for p, g in zip(CONSONANTS + VOWELS, script.glyphs)}


def render_abugida(script: Script, phonemes: str) -> str:
    glyph, out, i = glyph_table(script), [], 0
    while i < len(phonemes):
        ph = phonemes[i]
        nxt = phonemes[i + 1] if i + 1 < len(phonemes) else ""
        if ph in CONSONANTS and nxt and nxt in VOWELS:
            out += [glyph[ord(ph)], script.vowel_signs[VOWELS.index(nxt)]]
            i += 2
            continue
        out.append(glyph.get(ord(ph), ph) + (script.virama if ph in CONSONANTS else ""))
        i += 1
    return "".join(out)


def sound_changes(cons: str, vows: str, rng: np.random.Generator) -> tuple[str, ...]:
    changed = rng.choice(list(cons), size=int(rng.integers(1, 4)), replace=False).tolist()
    n_vowel_changes = int(rng.integers(0, 2)) if len(vows) > 3 else 0
    changed += rng.choice(list(vows), size=n_vowel_changes, replace=False).tolist()
    rules = []
    for ph in changed:
        targets = [p for p in (CONSONANTS if ph in CONSONANTS else VOWELS) if p != ph]
        rules.append(f"{ph}>{targets[int(rng.integers(len(targets)))]}")
    return tuple(rules)


def apply_changes(changes: tuple[str, ...], text: str) -> str:
    return text.translate({ord(r[0]): r[2] for r in changes})


@lru_cache(maxsize=64)
def family_phonology(seed: int, family_index: int) -> tuple[str, str, str]:
    """Proto-consonants, proto-vowels and syllable shape ('CV' or 'CVC') of a family."""
    rng = np.random.default_rng([seed, 1, family_index])
    cons = rng.choice(list(CONSONANTS), size=int(rng.integers(11, 17)), replace=False)
    vows = rng.choice(list(VOWELS), size=int(rng.integers(3, 7)), replace=False)
    syllable = "CVC" if rng.random() < 0.5 else "CV"
    return "".join(sorted(cons)), "".join(sorted(vows)), syllable
