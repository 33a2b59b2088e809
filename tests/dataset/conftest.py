"""Shared fixtures: the shipped tokenizer and a private token cache per test."""
import pytest

from mindformers.tokenization import LlamaTokenizer


@pytest.fixture(scope="session")
def tok():
    return LlamaTokenizer(vocab_file="mindformers/assets/tiny_corpus/tokenizer.model")


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Keep token caches out of ~/.cache, also for module-scoped fixtures that build loaders."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MF_CACHE_DIR", str(tmp_path_factory.mktemp("mf_cache")))
        yield


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """An empty cache directory of the test's own."""
    cache = tmp_path / "mf_cache"
    monkeypatch.setenv("MF_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def write_docs(tmp_path):
    """Writes a text file (under tmp_path) with one document per blank-line-separated block."""
    def write(name, docs):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
        return path
    return write
