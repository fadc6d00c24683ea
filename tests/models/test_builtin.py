"""The built-in default model: the project's own weights, small enough to commit, accuracy as documented."""

from edgeclip.models.factory import BUILTIN_DIR


def test_weights_are_small_fp16():
    f = BUILTIN_DIR / "open_clip_model.safetensors"
    assert f.stat().st_size <= 16 * 2**20
    from safetensors import safe_open

    with safe_open(str(f), "pt") as s:
        assert {s.get_slice(k).get_dtype() for k in s.keys()} == {"F16"}


# The documented accuracy is measured through the *installed wheel* in tests/test_packaging.py (the check a user's
# install depends on): eager on the first 2,000 test images against metrics.json's top1_first2000 / top5_first2000,
# the int8 file on all 10,000 against README's table (the output of command (1)).
