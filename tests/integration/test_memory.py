"""Pulling a large layer streams it to disk: the module's memory does not grow with the layer."""

from __future__ import annotations

from support.process import run_module_process


def test_a_64_mib_layer_is_pulled_without_holding_it_in_memory(registry, big_image, store, tmp_path):
    layer = big_image.layers[0]
    result, peak = run_module_process("image_pull", {"name": [f"{registry.host}/team/big:1"], "store_path": store}, tmp_path)
    assert result["downloaded_bytes"] == layer.size > 64 * 1024 * 1024
    print(f"peak RSS {peak / 2**20:.1f} MiB")
    assert peak < layer.size, f"peak RSS {peak / 2**20:.0f} MiB while pulling a {layer.size / 2**20:.0f} MiB layer"
