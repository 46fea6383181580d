"""The model-sampled statistics corpus: cached under a name that says how it was sampled, and reused."""

from tiny import tiny_model

from suture.editor import Editor
from suture.editor.kv.corpus import SAMPLER, CorpusSpec, load_corpus
from suture.editor.paths import cache_dir


def test_sampled_corpus_is_cached_under_the_sampler_and_spec():
    model, tok = tiny_model("llama")
    handle = Editor.from_model(model, tok).handle
    spec = CorpusSpec(n_samples=5, max_tokens=8, seed=3)
    texts = load_corpus(handle, spec)
    assert len(texts) == 5
    names = [p.name for p in cache_dir("corpora").iterdir() if p.name.startswith(handle.cache_key[:16])]
    assert f"{handle.cache_key[:16]}-{SAMPLER}-n5-t8-s3.json" in names
    assert load_corpus(handle, spec) == texts  # read back, not sampled again
