"""GGUF conversion reads the file's metadata once: the parser and gguf's tensor-name map are memoized
while transformers loads one file, and restored afterwards."""

import gguf
import numpy as np

from suture.editor.gguf import _gguf_parsed_once


def _write_gguf(path):
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_one_parse_and_one_name_map_per_file_while_converting(tmp_path):
    path = tmp_path / "tiny.gguf"
    _write_gguf(path)
    original_reader, original_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # same file, another spelling of its path: parsed once
        assert first.tensors[0].name == "token_embd.weight"
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    assert gguf.GGUFReader is original_reader and gguf.get_tensor_name_map is original_name_map
    assert gguf.GGUFReader(path) is not first
