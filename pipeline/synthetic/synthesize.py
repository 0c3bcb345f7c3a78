"""Synthetic keyword clips from offline TTS engines, and a training folder mixing them in.

Each engine is a command-line program run through subprocess, so none of them is a Python
dependency: whatever is installed is used, whatever is missing is skipped. Clips are named
OUT/<word>/tts-<engine>-<voice>_<variant>_nohash_<n>.wav; the "tts-" speaker prefix can
never appear in the real validation/testing lists, so a merged folder puts every
synthetic clip in the training split.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.runtime.audio import resample
from pipeline.runtime.files import atomic_write

SAMPLE_RATE = 16000
MAX_SAMPLES = SAMPLE_RATE  # the classifier sees one second
PREFIX = "tts"
MERGE_MARKER = ".synthetic_merge"

AUX_WORDS = [
    "backward",
    "bed",
    "bird",
    "cat",
    "dog",
    "eight",
    "five",
    "follow",
    "forward",
    "four",
    "happy",
    "house",
    "learn",
    "marvin",
    "nine",
    "one",
    "seven",
    "sheila",
    "six",
    "three",
    "tree",
    "two",
    "visual",
    "wow",
    "zero",
]
# Extra _unknown_ words; homophones of the commands (know, write, ...) are left out on purpose.
COMMON_WORDS = [
    "about",
    "after",
    "again",
    "always",
    "because",
    "before",
    "black",
    "book",
    "bright",
    "call",
    "come",
    "day",
    "door",
    "drop",
    "every",
    "find",
    "first",
    "gone",
    "good",
    "great",
    "hand",
    "help",
    "here",
    "home",
    "just",
    "keep",
    "lift",
    "light",
    "little",
    "look",
    "make",
    "money",
    "morning",
    "music",
    "never",
    "night",
    "open",
    "people",
    "place",
    "play",
    "please",
    "small",
    "start",
    "table",
    "thank",
    "there",
    "think",
    "today",
    "top",
    "town",
    "under",
    "water",
    "where",
    "window",
    "world",
    "yellow",
    "yet",
]
# Hard negatives for the ten commands, for _unknown_: single real words that sound like a
# command but differ from it in a sound or two. Left out on purpose: homophones (know for
# no, write/rite/wright for right), which are the command as far as a listener can tell,
# and longer words holding a whole command as a syllable (ago, upon, often, downtown),
# where the command really is spoken.
CONFUSABLE_WORDS = {
    "yes": ["yet", "yeah", "yell", "guess", "less", "mess"],
    "no": ["now", "nope", "note", "nose", "snow", "low"],
    "up": ["pup", "cup", "cut", "hub", "us"],
    "down": ["town", "clown", "brown", "crown", "gown", "noun", "dawn"],
    "left": ["lift", "loft", "theft", "lend", "lest"],
    "right": ["light", "bright", "fight", "night", "ride", "white", "ripe"],
    "on": ["con", "don", "own", "an", "in"],
    "off": ["of", "cough", "scoff", "soft"],
    "stop": ["stock", "shop", "top", "step", "stomp", "spot"],
    "go": ["goat", "show", "grow", "goal", "glow", "dough"],
}
# The first half of each command, spelled for the engines (on and off share theirs): what a
# streaming detector hears before the word is whole, so it learns to wait for the rest.
COMMAND_FRAGMENTS = {
    "yes": "ye",
    "no": "nuh",
    "up": "uh",
    "down": "dow",
    "left": "lef",
    "right": "rai",
    "on": "aw",
    "off": "aw",
    "stop": "staw",
    "go": "guh",
}


def confusables(commands: list[str]) -> list[str]:
    """The sound-alikes and first-half fragments of those of commands that have them, each
    once, never a command itself."""
    words: list[str] = []
    for c in commands:
        words += CONFUSABLE_WORDS.get(c, [])
        if c in COMMAND_FRAGMENTS:
            words.append(COMMAND_FRAGMENTS[c])
    return [w for w in dict.fromkeys(words) if w not in commands]


# espeak-ng variants that are effects rather than voices
_ESPEAK_DENY = re.compile(r"robo|demonic|half-life|fast_test", re.I)


class SynthesisError(Exception):
    """One clip that could not be made; str() is one line."""


class NoEngineError(Exception):
    """No TTS engine can be used here; str() is the one line to show."""


@dataclass(frozen=True)
class Variant:
    """speed/pitch go to the engine (1 = its default); stretch resamples afterwards
    (>1 is faster and higher), which also varies engines without a pitch control."""

    speed: float
    pitch: float
    stretch: float

    @property
    def tag(self) -> str:
        return f"s{self.speed * 100:.0f}p{self.pitch * 100:.0f}r{self.stretch * 100:.0f}"


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str

    @property
    def tag(self) -> str:
        return f"{PREFIX}-{self.engine}-{re.sub(r'[^A-Za-z0-9]+', '-', self.name).strip('-')}"


@dataclass(frozen=True)
class Job:
    """One clip of word (its folder); text is what the engine says, the word when None."""

    word: str
    index: int
    voice: Voice
    variant: Variant
    peak_db: float
    text: str | None = None


def _lines(cmd: list[str]) -> list[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout.splitlines()


class Engine:
    """A TTS program: how to list its English voices and how to say one word into a WAV."""

    name = ""
    binary = ""
    install = ""

    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    def voices(self) -> list[str]:
        raise NotImplementedError

    def command(self, voice: str, text: str, wav: Path, v: Variant) -> list[str]:
        raise NotImplementedError

    def probe_key(self, voice: str) -> str:
        """Voices sharing a key work or fail together, so only one of them is tried."""
        return voice

    def garbled(self, stderr: str) -> bool:
        """Whether the engine reported that the audio it still wrote is not the word."""
        return False


class Espeak(Engine):
    name, binary, install = "espeak-ng", "espeak-ng", "espeak-ng"

    def _english(self) -> list[str]:
        rows = [l.split() for l in _lines([self.binary, "--voices=en"])[1:]]
        return [Path(r[4]).name for r in rows if len(r) > 4 and r[1].startswith("en")]

    def voices(self) -> list[str]:
        bases = [v for v in self._english() if not v.startswith("mb-")]
        rows = [l.split() for l in _lines([self.binary, "--voices=variant"])[1:]]
        variants = [Path(r[4]).name for r in rows if len(r) > 4]
        variants = [v for v in variants if not _ESPEAK_DENY.search(v)]
        return bases + [f"{b}+{v}" for b in bases for v in variants]

    def probe_key(self, voice: str) -> str:
        return voice.split("+")[0]

    def command(self, voice: str, text: str, wav: Path, v: Variant) -> list[str]:
        pitch = min(99, max(0, round(50 + 80 * math.log2(v.pitch))))
        return [
            self.binary,
            "-v",
            voice,
            "-s",
            str(round(175 * v.speed)),
            "-p",
            str(pitch),
            "-w",
            str(wav),
            text,
        ]


class Mbrola(Espeak):
    """MBROLA diphone voices driven by espeak-ng (its mb-* voices)."""

    name, install = "mbrola", "espeak-ng mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1"

    def voices(self) -> list[str]:
        return [v for v in self._english() if v.startswith("mb-")]

    def probe_key(self, voice: str) -> str:
        return voice

    def garbled(self, stderr: str) -> bool:
        # a voice lacking one of espeak-ng's phonemes puts silence in its place
        return "unknown, replaced with" in stderr


class Flite(Engine):
    name, binary, install = "flite", "flite", "flite"

    def voices(self) -> list[str]:
        out = " ".join(_lines([self.binary, "-lv"]))
        # awb_time is a limited-domain voice that can only tell the time
        return [v for v in out.split(":", 1)[-1].split() if v != "awb_time"]

    def command(self, voice: str, text: str, wav: Path, v: Variant) -> list[str]:
        return [
            self.binary,
            "-voice",
            voice,
            "--setf",
            f"duration_stretch={1 / v.speed:.3f}",
            "-t",
            text,
            "-o",
            str(wav),
        ]


class Festival(Engine):
    name, binary = "festival", "text2wave"
    install = "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"

    def available(self) -> bool:
        return super().available() and shutil.which("festival") is not None

    def voices(self) -> list[str]:
        out = " ".join(_lines(["festival", "-b", "(print (voice.list))"]))
        return re.findall(r"[\w-]+", out)

    def command(self, voice: str, text: str, wav: Path, v: Variant) -> list[str]:
        txt = wav.with_suffix(".txt")
        txt.write_text(text + "\n")
        return [
            self.binary,
            "-o",
            str(wav),
            "-eval",
            f"(voice_{voice})",
            "-eval",
            f"(Parameter.set 'Duration_Stretch {1 / v.speed:.3f})",
            str(txt),
        ]


class Pico(Engine):
    name, binary, install = "pico", "pico2wave", "libttspico-utils"

    def voices(self) -> list[str]:
        return ["en-US", "en-GB"]

    def command(self, voice: str, text: str, wav: Path, v: Variant) -> list[str]:
        markup = (
            f'<speed level="{v.speed * 100:.0f}"><pitch level="{v.pitch * 100:.0f}">'
            f"{text}</pitch></speed>"
        )
        return [self.binary, "-l", voice, "-w", str(wav), markup]


ENGINES: dict[str, Engine] = {e.name: e for e in (Espeak(), Mbrola(), Flite(), Festival(), Pico())}


def finish(
    audio: np.ndarray, rate: float, stretch: float, peak_db: float, range_db: float = 60.0
) -> np.ndarray:
    """Engine output to a training clip: 16 kHz, silence trimmed, peak at peak_db dBFS.

    Resampling from rate * stretch applies the speed perturbation in the same step. Trimming
    keeps the 10 ms frames within range_db of the loudest and 10 dB above the floor (the
    quietest tenth of frames): synthetic fricatives can sit 45 dB down, and some engines
    add a noise floor. The result may be longer than one second; the caller decides."""
    clip = resample(np.asarray(audio, np.float32), rate * stretch, SAMPLE_RATE)
    frame = SAMPLE_RATE // 100
    n = len(clip) // frame
    rms = np.sqrt((clip[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(axis=1))
    if n == 0 or rms.max() <= 1e-6:
        raise ValueError("no sound in the engine's output")
    db = 20 * np.log10(np.maximum(rms, 1e-9))
    loud = np.flatnonzero(db >= max(db.max() - range_db, np.percentile(db, 10) + 10))
    start, end = max(0, loud[0] - 1) * frame, min(len(clip), (loud[-1] + 2) * frame)
    clip = clip[start:end]
    return (clip * (10 ** (peak_db / 20) / np.abs(clip).max())).astype(np.float32)


def write_clip(path: Path, clip: np.ndarray) -> None:
    atomic_write(path, lambda tmp: sf.write(tmp, clip, SAMPLE_RATE, subtype="PCM_16"))


def clip_path(out: Path, word: str, voice: Voice, variant: Variant, index: int) -> Path:
    return out / word / f"{voice.tag}_{variant.tag}_nohash_{index}.wav"


def installed(names: list[str]) -> list[Engine]:
    """The engines of names that are installed here; none is an error naming a package."""
    engines = [ENGINES[n] for n in names]
    present = [e for e in engines if e.available()]
    if not present:
        raise NoEngineError(
            f"no TTS engine found (looked for {', '.join(names)}); install "
            f"one, e.g. `apt-get install {engines[0].install}`"
        )
    return present


def usable_voices(engines: list[Engine], workers: int = 2) -> dict[str, list[Voice]]:
    """working_voices, or an error when no voice of any engine makes a sound."""
    voices = working_voices(engines, workers)
    if not any(voices.values()):
        raise NoEngineError("the installed TTS engines produced no sound for any voice")
    return voices


def working_voices(engines: list[Engine], workers: int = 2) -> dict[str, list[Voice]]:
    """Each engine's voices that really produce sound (a listed voice may lack its data)."""
    candidates = {e.name: [Voice(e.name, v) for v in e.voices()] for e in engines}
    probes = {
        (v.engine, ENGINES[v.engine].probe_key(v.name)): v for vs in candidates.values() for v in vs
    }
    test = Variant(1.0, 1.0, 1.0)

    def works(voice: Voice) -> bool:
        try:
            _synthesize(ENGINES[voice.engine], voice.name, "test", test, -6.0)
            return True
        except (SynthesisError, ValueError):
            return False

    with ThreadPoolExecutor(workers) as pool:
        ok = dict(zip(probes, pool.map(works, probes.values())))
    return {
        name: [v for v in vs if ok[(name, ENGINES[name].probe_key(v.name))]]
        for name, vs in candidates.items()
    }


def plan(
    counts: dict[str, int],
    voices: dict[str, list[Voice]],
    seed: int,
    perturb: float = 0.1,
    speed: tuple[float, float] = (0.6, 1.1),
    pitch: tuple[float, float] = (0.8, 1.25),
    peak_db: tuple[float, float] = (-20.0, -1.0),
) -> list[Job]:
    """Draw engine, voice, variant and level for every clip.

    Engines are weighted by log(1 + voices): espeak-ng's hundreds of variant combinations
    get the largest share without drowning the few voices of the more natural engines.
    Engines read a lone word faster than Speech Commands speakers say it, hence a default
    speed range mostly below 1. The default level range is roughly the 5th-95th percentile
    of Speech Commands peaks."""
    rng = random.Random(seed)
    names = [n for n in sorted(voices) if voices[n]]
    weights = [math.log1p(len(voices[n])) for n in names]

    def log_uniform(lo: float, hi: float) -> float:
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))

    jobs = []
    for word, n in counts.items():
        for index in range(n):
            engine = rng.choices(names, weights)[0]
            variant = Variant(
                log_uniform(*speed), log_uniform(*pitch), rng.uniform(1 - perturb, 1 + perturb)
            )
            jobs.append(
                Job(word, index, rng.choice(voices[engine]), variant, rng.uniform(*peak_db))
            )
    return jobs


def _synthesize(
    engine: Engine, voice: str, text: str, variant: Variant, peak_db: float
) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        raw = Path(tmp) / "raw.wav"
        try:
            proc = subprocess.run(
                engine.command(voice, text, raw, variant),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SynthesisError(f"{engine.name} {voice}: timed out") from None
        if not raw.exists() or raw.stat().st_size <= 44:
            why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise SynthesisError(f"{engine.name} {voice}: {why}")
        if engine.garbled(proc.stderr):
            raise SynthesisError(f"{engine.name} {voice}: cannot say '{text}' properly")
        audio, rate = sf.read(str(raw), dtype="float32", always_2d=True)
    return finish(audio.mean(axis=1), rate, variant.stretch, peak_db)


def run_job(job: Job, out: Path, tries: int = 3) -> Path:
    """Make one clip; a take longer than a second is redone faster."""
    variant, text = job.variant, job.text or job.word
    for _ in range(tries):
        try:
            clip = _synthesize(
                ENGINES[job.voice.engine], job.voice.name, text, variant, job.peak_db
            )
        except ValueError as exc:
            raise SynthesisError(f"{job.voice.engine} {job.voice.name} '{text}': {exc}") from None
        if len(clip) <= MAX_SAMPLES:
            path = clip_path(out, job.word, job.voice, variant, job.index)
            write_clip(path, clip)
            return path
        variant = replace(variant, speed=variant.speed * 1.2, stretch=variant.stretch * 1.05)
    raise SynthesisError(f"{job.voice.engine} {job.voice.name} '{text}': longer than 1 s")


def run_jobs(
    jobs: list[Job], out: Path, workers: int = 2, report: Callable[[str], None] = print
) -> tuple[list[Path], list[str]]:
    """Run jobs on a thread pool (the work is in the engine subprocesses)."""
    written, failed = [], []
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run_job, job, out) for job in jobs]
        for i, fut in enumerate(as_completed(futures), 1):
            try:
                written.append(fut.result())
            except SynthesisError as exc:
                failed.append(str(exc))
                report(f"warning: {exc}")
            if i % 500 == 0 or i == len(jobs):
                report(f"{i}/{len(jobs)} clips ({len(failed)} failed)")
    return written, failed


def merge(real: Path, synthetic: Path, dest: Path) -> Counter:
    """Build dest = real data + synthetic clips, as symlinks, for the trainer's one --data.

    Every real entry (word folders, _background_noise_, list files) is mirrored with real
    folders holding file symlinks, since the data loader does not descend into linked
    folders. A dest left by an earlier merge is replaced; any other non-empty dest is an
    error. Returns synthetic clips per word folder."""
    real, synthetic, dest = real.resolve(), synthetic.resolve(), Path(dest).absolute()
    if not real.is_dir():
        raise FileNotFoundError(f"{real}: real data folder not found")
    if dest.exists() and any(dest.iterdir()) and not (dest / MERGE_MARKER).exists():
        raise FileExistsError(f"{dest}: exists and is not an earlier merge; pick another folder")
    tmp = dest.with_name(f".{dest.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    for folder, _dirs, files in os.walk(real, followlinks=True):
        here = tmp / Path(folder).relative_to(real)
        here.mkdir(parents=True, exist_ok=True)
        for f in files:
            (here / f).symlink_to(Path(folder, f).resolve())
    added: Counter = Counter()
    for wav in sorted(synthetic.glob("*/*.wav")):
        if not wav.name.startswith(f"{PREFIX}-"):
            raise ValueError(f"{wav}: synthetic clip names must start with '{PREFIX}-'")
        link = tmp / wav.parent.name / wav.name
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(wav)
        added[wav.parent.name] += 1
    (tmp / MERGE_MARKER).write_text(f"{real}\n{synthetic}\n")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return added
