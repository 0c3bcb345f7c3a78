import numpy as np

from pipeline.runtime.audio import fit_to_length


def test_short_clips_are_centred_and_long_ones_keep_their_loudest_second():
    short = np.ones(600, np.float32)
    out = fit_to_length(short, 1000)
    assert out.shape == (1000,) and out[:200].sum() == 0 and out[800:].sum() == 0
    assert out[200:800].all()
    long = np.zeros(5000, np.float32)
    long[3000:3500] = 1
    kept = fit_to_length(long, 1000)
    assert kept.shape == (1000,) and kept.sum() == 500
