"""French emotion detection by lexicon: stems and idioms per Ekman class, with negation.

No French emotion corpus ships with the project, so French texts are not sent through the English
model (character n-grams barely transfer). Instead a hand-written lexicon of word stems and common
idioms votes for the Ekman classes; a negation word just before a cue cancels it (and turns joy
into sadness, "pas content"). Confidence is deliberately modest (capped at 0.7): the measured
accuracy on tests/data/emotion_fr_eval.tsv is in docs/emotion-model.md.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from jeffrey_core.contract import EKMAN_LABELS
from jeffrey_worker.emotion.model import EKMAN_GROUPS, EmotionResult

VERSION = "fr-lexicon-1"
MAX_CONFIDENCE = 0.7
NEUTRAL_PRIOR = 0.8  # evidence a text needs to beat before it is called emotional
_NEGATIONS = frozenset({"pas", "jamais", "plus", "aucun", "aucune", "ni", "sans", "guere"})

# (stem, fine label). A stem matches any word that starts with it (accents folded).
_STEMS: dict[str, list[tuple[str, str]]] = {
    "joy": [
        ("heureu", "joy"), ("bonheur", "joy"), ("joie", "joy"), ("joyeu", "joy"), ("content", "joy"),
        ("ravi", "joy"), ("enchant", "joy"), ("gai", "joy"), ("super", "excitement"), ("genial", "excitement"),
        ("formidable", "admiration"), ("magnifique", "admiration"), ("merveill", "admiration"),
        ("bravo", "admiration"), ("excell", "admiration"), ("parfait", "approval"), ("adore", "love"),
        ("aime", "love"), ("amour", "love"), ("amoureu", "love"), ("merci", "gratitude"),
        ("reconnaiss", "gratitude"), ("remerci", "gratitude"), ("fier", "pride"), ("fiere", "pride"),
        ("fierte", "pride"), ("soulag", "relief"), ("enfin", "relief"), ("espoir", "optimism"),
        ("espere", "optimism"), ("optimis", "optimism"), ("hate", "excitement"), ("impatien", "excitement"),
        ("excit", "excitement"), ("rire", "amusement"), ("rigol", "amusement"), ("drole", "amusement"),
        ("marrant", "amusement"), ("mdr", "amusement"), ("ptdr", "amusement"), ("lol", "amusement"),
        ("kiff", "joy"), ("cool", "approval"), ("chouette", "joy"), ("plaisir", "joy"), ("sourire", "joy"),
        ("souri", "joy"), ("celebr", "joy"), ("feter", "joy"), ("fete", "joy"), ("gagne", "joy"),
        ("reussi", "pride"), ("felicit", "admiration"), ("bienveill", "caring"), ("envie de", "desire"),
        ("reve", "desire"), ("epanoui", "joy"), ("serein", "relief"), ("apais", "relief"),
        ("emerveill", "admiration"), ("comble", "joy"), ("aux anges", "joy"),
    ],
    "sadness": [
        ("triste", "sadness"), ("tristesse", "sadness"), ("chagrin", "sadness"), ("pleur", "sadness"),
        ("larme", "sadness"), ("malheur", "sadness"), ("deprim", "sadness"), ("deprime", "sadness"),
        ("cafard", "sadness"), ("seul", "sadness"), ("solitude", "sadness"), ("melancol", "sadness"),
        ("nostalg", "sadness"), ("manque", "sadness"), ("vide", "sadness"), ("abattu", "sadness"),
        ("desol", "remorse"), ("regret", "remorse"), ("pardon", "remorse"), ("coupable", "remorse"),
        ("decu", "disappointment"), ("decue", "disappointment"), ("decept", "disappointment"),
        ("dommage", "disappointment"), ("rate", "disappointment"), ("echou", "disappointment"),
        ("echec", "disappointment"), ("honte", "embarrassment"), ("gene", "embarrassment"),
        ("genee", "embarrassment"), ("rougi", "embarrassment"), ("ridicule", "embarrassment"),
        ("deuil", "grief"), ("decede", "grief"), ("deces", "grief"), ("mort", "grief"),
        ("enterrement", "grief"), ("obseques", "grief"), ("disparu", "grief"), ("perdu", "sadness"),
        ("coeur brise", "sadness"), ("le moral", "sadness"), ("cafard", "sadness"), ("epuise", "sadness"),
        ("quitte", "sadness"), ("rupture", "sadness"), ("separ", "sadness"), ("divorc", "sadness"),
    ],
    "anger": [
        ("colere", "anger"), ("furieu", "anger"), ("furax", "anger"), ("rage", "anger"), ("enrag", "anger"),
        ("enerv", "annoyance"), ("agac", "annoyance"), ("irrit", "annoyance"), ("marre", "annoyance"),
        ("ras le bol", "annoyance"), ("ras-le-bol", "annoyance"), ("saoul", "annoyance"), ("gonfl", "annoyance"),
        ("insupport", "annoyance"), ("supporte plus", "annoyance"), ("exasper", "annoyance"),
        ("hors de moi", "anger"), ("en rogne", "anger"), ("rogne", "anger"), ("dingue", "annoyance"),
        ("bouillon", "anger"), ("hurl", "anger"), ("cri", "anger"), ("claque", "anger"), ("injust", "anger"),
        ("scandal", "anger"), ("inadmissible", "disapproval"), ("inacceptable", "disapproval"),
        ("honteu", "disapproval"), ("desapprouv", "disapproval"), ("n'importe quoi", "disapproval"),
        ("se fout", "anger"), ("fout de", "anger"), ("pris pour", "anger"), ("idiot", "anger"),
        ("con", "anger"), ("putain", "anger"), ("merde", "annoyance"), ("fache", "anger"),
        ("vexe", "annoyance"), ("rancune", "anger"), ("deteste", "anger"), ("haine", "anger"),
        ("ca commence a bien faire", "annoyance"), ("raccroch", "annoyance"), ("pourri", "annoyance"),
    ],
    "fear": [
        ("peur", "fear"), ("effray", "fear"), ("terrifi", "fear"), ("terreur", "fear"), ("panique", "fear"),
        ("angoiss", "nervousness"), ("anxi", "nervousness"), ("inquiet", "nervousness"),
        ("inquiete", "nervousness"), ("stress", "nervousness"), ("nerveu", "nervousness"),
        ("trac", "nervousness"), ("crain", "fear"), ("redout", "fear"), ("tremb", "fear"),
        ("pas rassur", "fear"), ("cauchemar", "fear"), ("danger", "fear"), ("menace", "fear"),
        ("frousse", "fear"), ("flipp", "fear"), ("trouille", "fear"), ("epouvant", "fear"),
        ("sueur froide", "fear"), ("glace le sang", "fear"), ("boule au ventre", "nervousness"),
        ("noue", "nervousness"), ("tendu", "nervousness"), ("alarm", "fear"), ("urgence", "fear"),
    ],
    "disgust": [
        ("degout", "disgust"), ("degoutant", "disgust"), ("ecoeur", "disgust"), ("repugn", "disgust"),
        ("repoussant", "disgust"), ("beurk", "disgust"), ("berk", "disgust"), ("immonde", "disgust"),
        ("ignoble", "disgust"), ("infect", "disgust"), ("nause", "disgust"), ("vomi", "disgust"),
        ("gerb", "disgust"), ("crade", "disgust"), ("sale", "disgust"), ("puant", "disgust"),
        ("pue", "disgust"), ("odeur", "disgust"), ("pourri", "disgust"), ("moisi", "disgust"),
        ("asticot", "disgust"), ("cafard", "disgust"), ("abject", "disgust"), ("odieu", "disgust"),
        ("repuls", "disgust"), ("dégueu", "disgust"), ("degueu", "disgust"), ("crasse", "disgust"),
        ("gluant", "disgust"), ("visqueu", "disgust"), ("ecoeurant", "disgust"),
    ],
    "surprise": [
        ("surpri", "surprise"), ("surprend", "surprise"), ("etonn", "surprise"), ("stupef", "surprise"),
        ("incroyable", "surprise"), ("inattendu", "surprise"), ("inimaginable", "surprise"),
        ("wow", "surprise"), ("waouh", "surprise"), ("ouah", "surprise"), ("hallucin", "surprise"),
        ("choqu", "surprise"), ("sidér", "surprise"), ("sider", "surprise"), ("bouche bee", "surprise"),
        ("n'en revenais pas", "surprise"), ("n'en reviens pas", "surprise"), ("pas croire", "surprise"),
        ("je ne m'attendais", "surprise"), ("m'attendais pas", "surprise"), ("sans prevenir", "surprise"),
        ("tombe des nues", "surprise"), ("coup de theatre", "surprise"), ("dingue", "surprise"),
        ("curieu", "curiosity"), ("me demande", "curiosity"), ("pourquoi", "curiosity"),
        ("comprends pas", "confusion"), ("confus", "confusion"), ("perplexe", "confusion"),
        ("realise", "realization"), ("compris que", "realization"), ("decouvert", "realization"),
        ("en fait", "realization"), ("quelle surprise", "surprise"), ("jamais vu", "surprise"),
    ],
}  # fmt: skip


def fold(text: str) -> str:
    """Lowercase without accents, apostrophes normalised: 'Écœuré’' → 'ecoeure''."""
    text = text.lower().replace("’", "'").replace("œ", "oe").replace("æ", "ae")
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


@dataclass(frozen=True)
class _Cue:
    label: str
    fine: str
    words: tuple[str, ...]  # folded stem, split into words for multiword idioms


_CUES = [
    _Cue(label, fine, tuple(fold(stem).split())) for label, stems in _STEMS.items() for stem, fine in stems
]
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)?|'")


def _tokens(text: str) -> list[str]:
    # "j'ai" → ["j'ai"], keep elided forms as one token; also split them for matching "n'en".
    return _TOKEN.findall(fold(text))


@dataclass(frozen=True)
class CueIndex:
    """The cues keyed by what the token where they start must be, so matching is linear in the text.

    A one-word cue is a stem: it matches a token that starts with it, so a token is looked up by its
    prefixes of the stems' lengths (at most `len(stem_lengths)` lookups). A multiword idiom matches
    its first word exactly, then the following tokens. Work per token is bounded by the lexicon, not
    by the text; matches come back in lexicon order, as scanning every cue at every token gave them.
    """

    cues: tuple[_Cue, ...]
    by_stem: dict[str, tuple[int, ...]]  # one-word stem → positions in `cues`
    by_first_word: dict[str, tuple[int, ...]]  # an idiom's first word → positions in `cues`
    stem_lengths: tuple[int, ...]  # ascending

    @classmethod
    def build(cls, cues: list[_Cue]) -> CueIndex:
        by_stem: dict[str, list[int]] = {}
        by_first_word: dict[str, list[int]] = {}
        for position, cue in enumerate(cues):
            index = by_stem if len(cue.words) == 1 else by_first_word
            index.setdefault(cue.words[0], []).append(position)
        return cls(
            cues=tuple(cues),
            by_stem={k: tuple(v) for k, v in by_stem.items()},
            by_first_word={k: tuple(v) for k, v in by_first_word.items()},
            stem_lengths=tuple(sorted({len(stem) for stem in by_stem})),
        )

    def matches_at(self, tokens: list[str], i: int) -> list[_Cue]:
        """The cues that match `tokens` starting at position `i`, in lexicon order."""
        token = tokens[i]
        found: list[int] = []
        for length in self.stem_lengths:
            if length > len(token):
                break
            found.extend(self.by_stem.get(token[:length], ()))
        for position in self.by_first_word.get(token, ()):
            words = self.cues[position].words
            rest = tokens[i + 1 : i + len(words)]
            if (
                len(rest) == len(words) - 1
                and rest[:-1] == list(words[1:-1])
                and rest[-1].startswith(words[-1])
            ):
                found.append(position)
        found.sort()
        return [self.cues[position] for position in found]


INDEX = CueIndex.build(_CUES)


class FrenchLexiconModel:
    """Scores the Ekman classes by lexicon cues; returns the same shape as the English model."""

    version = VERSION

    def predict(self, texts: list[str]) -> list[EmotionResult]:
        return [self._predict_one(text) for text in texts]

    def _predict_one(self, text: str) -> EmotionResult:
        tokens = _tokens(text)
        evidence = dict.fromkeys(EKMAN_LABELS, 0.0)
        fine_evidence: dict[str, float] = {}
        for i in range(len(tokens)):
            for cue in INDEX.matches_at(tokens, i):
                negated = any(t in _NEGATIONS or t.startswith("n'") for t in tokens[max(0, i - 3) : i])
                label, fine = cue.label, cue.fine
                if negated and label == "joy":
                    label, fine = "sadness", "disappointment"
                elif negated and label not in ("surprise",):
                    continue
                evidence[label] += 1.0
                fine_evidence[fine] = fine_evidence.get(fine, 0.0) + 1.0
        evidence["neutral"] = NEUTRAL_PRIOR
        total = sum(evidence.values())
        scores = {k: round(min(MAX_CONFIDENCE, v / total), 4) for k, v in evidence.items()}
        label = max(EKMAN_LABELS, key=lambda k: (evidence[k], k == "neutral"))
        group = EKMAN_GROUPS[label]
        fine_label = max(group, key=lambda f: fine_evidence.get(f, 0.0)) if label != "neutral" else "neutral"
        fine_total = sum(fine_evidence.values()) or 1.0
        fine_scores = {f: round(v / fine_total * scores[label], 4) for f, v in fine_evidence.items()}
        return EmotionResult(
            label=label,
            fine_label=fine_label,
            confidence=scores[label],
            scores=scores,
            fine_scores=fine_scores,
            labels=[k for k in EKMAN_LABELS if evidence[k] > 0 and k != "neutral"] or ["neutral"],
            method="fr-lexicon",
            model_version=VERSION,
            lang="fr",
        )
