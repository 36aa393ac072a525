"""A small, dependency-free language guess between French and English (the companion's two languages).

Function words and French diacritics vote; a text with no evidence is "und" (undetermined) and is
treated as English by the classifier. Good enough for routing between two languages, not a general
language identifier.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-zàâäçéèêëîïôöùûüÿœæ']+")
FRENCH = frozenset(
    """le la les un une des du de et est je tu il elle nous vous ils elles ce cet cette ces mais ou donc
    pas ne très avec pour dans sur au aux mon ma mes ton ta tes son sa ses notre nos votre vos leur leurs
    qui que quoi suis es sommes êtes sont été avoir être ai as avons avez ont était étais c'est j'ai
    n'est n'ai j'étais aujourd'hui hier demain moi toi lui y en ça cela tout tous toute trop bien
    encore aussi quand comme parce chez sans vraiment beaucoup peu plus rien jamais toujours déjà""".split()
)
ENGLISH = frozenset(
    """the a an and is are was were i you he she it we they this that these those but or so not no very
    with for in on at my your his her its our their who what which am been be have has had do does did
    it's i'm i've don't didn't can't today yesterday tomorrow me him them all too well still also when
    like because without really much little more nothing never always already just there here""".split()
)
_FRENCH_CHARS = re.compile(r"[àâçéèêëîïôûùœ]")


def detect_language(text: str) -> str:
    """'fr', 'en' or 'und'."""
    words = _WORD.findall(text.lower().replace("’", "'"))
    french = sum(w in FRENCH for w in words) + 0.5 * len(_FRENCH_CHARS.findall(text.lower()))
    english = sum(w in ENGLISH for w in words)
    if french == english == 0:
        return "und"
    return "fr" if french > english else "en"
