import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from preferthinker.similarity import (  # noqa: E402
    TextEmbedder,
    clean_profile_text,
    exact_element_matches,
    get_default_embedder,
    profile_text_similarity,
)

PROFILE = {
    "Art Styles": "Pixel Art, Watercolor",
    "Color": "Warm Tones",
    "Artistic Medium": "Digital Painting",
    "Saturation": "High",
    "Detail": "Highly Detailed",
}


@pytest.fixture(scope="module")
def embedder():
    return get_default_embedder()


def test_clean_profile_text_dict_and_string():
    assert clean_profile_text(PROFILE) == (
        "art styles: pixel art, watercolor, color: warm tones, artistic medium: digital painting, "
        "saturation: high, detail: highly detailed"
    )
    # newline folding, trailing dot, quotes, whitespace collapse, lower-case
    assert clean_profile_text('  Art Styles: "Cubism",\n Color:   Pastel.  ') == "art styles: cubism, color: pastel"
    # key spellings are canonicalised before stringification
    alias = {"ArtisticMedium": "Oil", "Art Style": "Baroque", "Colour": "Red", "Saturation": "Low", "Details": "Minimal"}
    assert clean_profile_text(alias) == "art styles: baroque, color: red, artistic medium: oil, saturation: low, detail: minimal"
    with pytest.raises(TypeError):
        clean_profile_text(42)


def test_embedder_normalised_and_cached(embedder):
    texts = ["a watercolor painting", "a pixel-art sprite", "a watercolor painting"]
    before = len(embedder)
    emb = embedder.embed(texts)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[2])
    assert len(embedder) == before + 2  # the repeated string was embedded once
    embedder.embed(texts)
    assert len(embedder) == before + 2
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embedder.embed("not a list")


def test_batching_does_not_change_embeddings(embedder):
    small = TextEmbedder(batch_size=2)
    texts = [f"profile number {i} with some colour" for i in range(5)]
    np.testing.assert_allclose(small.embed(texts), embedder.embed(texts), atol=1e-5)


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        TextEmbedder(tmp_path / "nope")


def test_default_embedder_is_a_singleton():
    assert get_default_embedder() is get_default_embedder()


def test_similarity_identical_vs_unrelated(embedder):
    unrelated = "The quarterly earnings report shows revenue growth in the banking sector"
    reworded = dict(PROFILE, **{"Art Styles": "Watercolor, Pixel Art"})
    sims = profile_text_similarity(embedder, [PROFILE, dict(PROFILE), unrelated, None, reworded],
                                   [PROFILE, profile_string(), PROFILE, PROFILE, PROFILE])
    assert sims[0] == pytest.approx(1.0, abs=1e-4)
    assert sims[1] == pytest.approx(1.0, abs=1e-4)  # dict vs its official string form
    assert sims[2] < 0.3
    assert sims[3] is None
    assert sims[2] < sims[4] < 1.0 and sims[4] > 0.9
    with pytest.raises(ValueError, match="differ in length"):
        profile_text_similarity(embedder, [PROFILE], [])


def profile_string():
    return "Art Styles: Pixel Art, Watercolor, Color: Warm Tones, Artistic Medium: Digital Painting, Saturation: High, Detail: Highly Detailed."


def test_exact_element_matches_multi_term_and_case():
    pred = {
        "art styles": "watercolor ,  PIXEL ART",   # same term set, other order/case/spacing
        "Colour": "warm  tones",
        "ArtisticMedium": "Digital Painting, Ink",  # superset: no match
        "Saturation": "Low",
        # Detail missing
    }
    m = exact_element_matches(pred, PROFILE)
    assert m == {"Art Styles": True, "Color": True, "Artistic Medium": False, "Saturation": False, "Detail": False}
    assert all(exact_element_matches(PROFILE, profile_string()).values())
    assert exact_element_matches("Art Styles: Watercolor", PROFILE)["Art Styles"] is False  # subset
    assert not any(exact_element_matches(None, PROFILE).values())
    # space-insensitive within a term
    assert exact_element_matches({"Art Styles": "PixelArt, Water color"}, PROFILE)["Art Styles"] is True
    with pytest.raises(ValueError):
        exact_element_matches(PROFILE, {"Art Styles": "x"})  # truth must be complete


def test_embedder_cache_is_bounded_lru():
    from preferthinker.similarity import TextEmbedder

    small = TextEmbedder(cache_size=3)
    small.embed(["a", "b", "c"])
    small.embed(["a", "d"])  # "a" becomes most recent; "b" is the least recently used and goes
    assert len(small) == 3 and set(small._cache) == {"c", "a", "d"}
