from __future__ import annotations

import os

import pytest

from plaud.sandbox.audio import Analysis, Region, UndecodableAudio, analyse
from plaud.sandbox.state import Transcription
from plaud.sandbox.testaudio import make_recording, tag_text
from plaud.sandbox.transcripts import build_result, spread_words


@pytest.mark.parametrize("speakers, seed", [(1, 0), (2, 1), (3, 9)])
def test_vad_and_speakers_recover_the_generated_layout(tmp_path, speakers, seed):
    recording = make_recording(str(tmp_path / "a.mp3"), 25.0, speakers=speakers, seed=seed, text="hi")
    analysis = analyse(recording.path)
    assert analysis.duration_s == pytest.approx(25.0, abs=0.1)
    assert len(analysis.regions) == len(recording.regions)
    for found, planned in zip(analysis.regions, recording.regions, strict=False):
        assert found.start_s == pytest.approx(planned.start_s, abs=0.1)
        assert found.end_s == pytest.approx(planned.end_s, abs=0.1)
        assert found.speaker == planned.speaker
    assert len(analysis.speaker_pitches_hz) == speakers


def test_tag_text_and_language(tmp_path):
    path = str(tmp_path / "a.mp3")
    make_recording(path, 3.0)
    assert analyse(path).tag_text is None
    tag_text(path, "konnichiwa", language="jpn")
    analysis = analyse(path)
    assert (analysis.tag_text, analysis.tag_language) == ("konnichiwa", "ja")


def test_silent_audio_has_no_regions_and_an_empty_transcript(tmp_path):
    path = str(tmp_path / "silence.mp3")
    make_recording(path, 4.0, text="nobody speaks", regions=())
    analysis = analyse(path)
    assert analysis.regions == ()
    data = build_result(analysis, {}, "0" * 32)
    assert data["text"] == "" and data["results"] == []


@pytest.mark.parametrize("content", [b"", b"ID3 but nothing else", os.urandom(20000)])
def test_not_audio_is_undecodable(tmp_path, content):
    path = tmp_path / "x.mp3"
    path.write_bytes(content)
    with pytest.raises(UndecodableAudio, match="not audio"):
        analyse(str(path))


def test_spread_words_keeps_order_and_follows_region_length():
    regions = (Region(0, 1, 0), Region(2, 5, 0))
    assert spread_words("a b c d".split(), regions) == [["a"], ["b", "c", "d"]]
    assert spread_words([], regions) == [[], []]
    assert spread_words(["a"], ()) == []


def test_result_shape():
    analysis = Analysis(10.0, (Region(1, 3, 0), Region(4, 9, 1)), (140.0, 230.0), "one two three", "en")
    data = build_result(analysis, {"diarization": {"enabled": True, "return_embedding": True}}, "f" * 32)
    assert set(data) == {"text", "language", "duration", "results", "embeddings"}
    assert [s["speaker_id"] for s in data["results"]] == ["Speaker 1", "Speaker 2"]
    assert set(data["results"][0]) == {"start", "end", "text", "speaker_id", "language", "language_probability"}
    # return_embedding without diarization has no speakers to embed
    assert "embeddings" not in build_result(analysis, {"diarization": {"return_embedding": True}}, "f" * 32)


def test_status_timeline():
    analysis = Analysis(100.0, (Region(0, 100, 0),), (), "x", None)
    tx = Transcription("task_exec_1", "c", "http://h/a", {}, created_at=0.0, forced_failure=False,
                       md5_hex="0" * 32, analysis=analysis)
    # base 1 s + 0.1 * 100 s = 11 s of processing
    assert [tx.view(t, 1.0, 0.1)["status"] for t in (0.5, 1.5, 3.0, 10.9, 11.0)] == [
        "PENDING", "RECEIVED", "STARTED", "PROGRESS", "SUCCESS"]
    failing = Transcription("task_exec_2", "c", "http://h/a", {}, created_at=0.0, forced_failure=False,
                            error="audio could not be decoded: x")
    assert failing.view(0.05, 1.0, 0.1)["status"] == "PENDING"
    assert failing.view(1.0, 1.0, 0.1) == {"transcription_id": "task_exec_2", "status": "FAILURE", "data": {},
                                           "message": "audio could not be decoded: x"}
