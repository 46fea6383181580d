"""The model-sampled statistics corpus: cached under a name that says how it was sampled, and reused."""

import pytest
from tiny import tiny_model

from suture.editor import Editor
from suture.editor.errors import SutureError
from suture.editor.kv.corpus import SAMPLER, CorpusSpec, load_corpus, read_text_file
from suture.editor.kv.stats import second_moment
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


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("bad.json", b'["a",\n"b"', "not valid JSON"),
    ("objects.json", b'[{"text": "a"}, {"body": "b"}]', "item 1: expected a string or an object with a string"),
    ("numbers.json", b'["a", 3]', "item 1"),
    ("latin1.txt", "caf\u00e9".encode("latin-1"), "not UTF-8"),
])
def test_a_corpus_file_that_cannot_be_read_is_named_with_the_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SutureError, match=reason):
        read_text_file(path)


def test_a_corpus_too_small_for_the_keys_is_refused(tmp_path):
    """Fewer tokens than the keys have dimensions give a singular C: refused, not solved against silently."""
    model, tok = tiny_model("llama")
    handle = Editor.from_model(model, tok).handle
    (tmp_path / "one.txt").write_text("Only a few words of text.")
    with pytest.raises(SutureError, match=r"corpus: \d+ token\(s\) of text give key statistics of rank at most"):
        second_moment(handle, [1], CorpusSpec(source=str(tmp_path / "one.txt")))
