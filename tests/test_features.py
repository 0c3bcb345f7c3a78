import librosa
import numpy as np
import pytest

from models.logmel import BlockedLogMel, LogMel, mel_blocks, mel_matrix
from pipeline.runtime.params import FrontEnd

# The tf.signal front end must equal librosa's mel spectrogram computed on the same
# frames; measured max |difference| of log-mel is about 1e-6, the stated bound 1e-4.
LOG_TOLERANCE = 1e-4


def _speech(fe: FrontEnd) -> np.ndarray:
    import soundfile as sf

    from tests.conftest import DEMO

    audio, rate = sf.read(sorted((DEMO / "yes").glob("*.wav"))[0], dtype="float32")
    assert rate == fe.sample_rate
    return np.pad(audio, (0, fe.clip_samples - len(audio)))


def _librosa_logmel(audio: np.ndarray, fe: FrontEnd) -> np.ndarray:
    # librosa centres a win_length window inside each n_fft frame; shift by the difference
    # so frame i covers the same samples as the causal tf.signal frame i.
    off = (fe.fft_length - fe.window_samples) // 2
    padded = np.pad(audio, (fe.context_samples + off, off))
    mel = librosa.feature.melspectrogram(
        y=padded,
        sr=fe.sample_rate,
        n_fft=fe.fft_length,
        hop_length=fe.hop_samples,
        win_length=fe.window_samples,
        window="hann",
        center=False,
        power=2.0,
        n_mels=fe.n_mels,
        fmin=fe.fmin,
        fmax=fe.fmax,
    )
    return np.log(mel.T + fe.log_floor)


@pytest.mark.parametrize(
    "fe", [FrontEnd(), FrontEnd(sample_rate=8000, n_mels=32, fmax=3800, window_ms=25, hop_ms=10)]
)
def test_logmel_matches_librosa(fe):
    audio = (
        _speech(fe)
        if fe.sample_rate == 16000
        else np.random.default_rng(0).normal(0, 0.1, fe.clip_samples).astype(np.float32)
    )
    ours = LogMel(fe.to_dict())(audio[None]).numpy()[0]
    ref = _librosa_logmel(audio, fe)
    assert ours.shape == ref.shape == (fe.n_frames, fe.n_mels)
    assert np.abs(ours - ref).max() < LOG_TOLERANCE


def test_mfcc_option_matches_dct_of_logmel():
    fe = FrontEnd(n_mfcc=13)
    audio = _speech(fe)
    mfcc = LogMel(fe.to_dict())(audio[None]).numpy()[0]
    logmel = _librosa_logmel(audio, FrontEnd())
    # tf.signal's MFCCs are the orthonormal DCT-II of log-mel with the first coefficient
    # scaled by sqrt(2) (its DCT uses the unnormalised DC term)
    ref = librosa.feature.mfcc(S=logmel.T, n_mfcc=13, dct_type=2, norm="ortho").T
    ref[:, 0] *= np.sqrt(2)
    assert mfcc.shape == (fe.n_frames, 13)
    np.testing.assert_allclose(mfcc, ref, rtol=1e-4, atol=1e-3)


def test_logmel_keeps_its_saved_name_and_blocked_product_equals_it():
    """model.keras files name the layer 'kws>LogMel'; the export twins' block-sparse mel
    product gives the same features."""
    import keras

    assert keras.saving.get_registered_name(LogMel) == "kws>LogMel"
    audio = _speech(FrontEnd())[None]
    for fe in (FrontEnd(), FrontEnd(n_mfcc=13)):
        for causal in (True, False):
            expected = LogMel(fe.to_dict(), causal=causal)(audio).numpy()
            got = BlockedLogMel(fe.to_dict(), causal=causal)(audio).numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)


def test_mel_blocks_cover_the_filterbank_exactly():
    for fe in (FrontEnd(), FrontEnd(n_mels=64, window_ms=25)):
        mel = mel_matrix(fe)
        blocks = mel_blocks(mel)
        covered = np.zeros_like(mel, bool)
        for lo, hi, a, b in blocks:
            assert (hi - lo) * (b - a) < 1024
            covered[lo:hi, a:b] = True
        assert covered[mel != 0].all()
        assert [a for _, _, a, _ in blocks] == [0] + [b for _, _, _, b in blocks[:-1]]
        assert blocks[-1][3] == fe.n_mels


def test_front_end_rejects_inconsistent_parameters():
    with pytest.raises(ValueError, match="whole number of steps"):
        FrontEnd(stack=3)
    with pytest.raises(ValueError, match="fmax"):
        FrontEnd(fmax=9000)
    with pytest.raises(ValueError, match="unknown front-end keys"):
        FrontEnd.from_dict({"n_mel": 40})
    with pytest.raises(ValueError, match="normalize must be"):
        FrontEnd(normalize="pcen")
    with pytest.raises(ValueError, match="norm_seconds"):
        FrontEnd(normalize="running", norm_seconds=0)


def test_front_end_round_trips_and_derives_sizes():
    fe = FrontEnd(stack=2)
    assert FrontEnd.from_dict(fe.to_dict()) == fe
    assert (fe.window_samples, fe.hop_samples, fe.fft_length) == (480, 160, 512)
    assert (fe.n_frames, fe.n_steps, fe.step_samples, fe.context_samples) == (100, 50, 320, 320)


def test_spec_augment_masks_only_in_training():
    from models.specaugment import SpecAugment

    x = np.random.default_rng(0).normal(size=(8, 100, 40)).astype(np.float32)
    layer = SpecAugment(time_masks=2, time_width=10, freq_masks=2, freq_width=5)
    assert np.array_equal(layer(x, training=False).numpy(), x)
    masked = layer(x, training=True).numpy()
    changed = (masked != x).mean(axis=0)
    assert 0 < (masked != x).mean() < 0.5
    assert changed.max() < 1  # never the whole spectrogram


def test_running_normalisation_removes_a_fixed_gain_and_channel():
    """Louder through a cheap microphone (x3 and a first-order tilt, 9 dB across the band):
    a near-constant offset per log-mel band, which the running mean removes within a few
    time constants. The mean starts from a speech level (norm_start), not from zero."""
    import dataclasses

    from models.logmel import norm_start
    from tests.conftest import demo_clips

    fe = FrontEnd(normalize="running", norm_seconds=0.5)
    rng = np.random.default_rng(0)
    audio = demo_clips(8).reshape(-1)  # 8 s of words and pauses
    audio = (audio + rng.normal(0, 10 ** (-50 / 20), audio.shape)).astype(np.float32)
    heard = 3 * np.convolve(audio, [1.0, 0.6])[: len(audio)].astype(np.float32)
    both = np.stack([audio, heard])
    plain = LogMel(dataclasses.replace(fe, normalize="none").to_dict())(both).numpy()
    running = LogMel(fe.to_dict())(both).numpy()
    late = slice(round(5 * fe.norm_seconds * 1000 / fe.hop_ms), None)  # after 5 constants
    assert (np.abs(plain[0] - plain[1])[late].mean(axis=0) > 0.5).all()
    assert np.abs(running[0] - running[1])[:10].mean() > 1.5
    assert np.abs(running[0] - running[1])[late].mean() < 0.05
    assert np.abs((running[0] - running[1])[late].mean(axis=0)).max() < 0.02
    mean = (plain - running)[0, late].mean(axis=0)  # the running mean itself, settled
    assert np.abs(mean - norm_start(fe)).max() < 3 < 5 < np.abs(mean).min()
