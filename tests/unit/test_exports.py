"""Exports from the delivered result, checked by parsing them back with subtitle libraries."""

from __future__ import annotations

import io
import json

import pytest
import srt
import webvtt

from plaud.exports import export, timestamp

RESULT = {
    "recording_id": "r1", "transcription_id": "task_exec_1", "text": "Hello there. General Kenobi. Silence.",
    "language": "en", "duration": 12500.0, "metadata": {"k": 1},
    "segments": [
        {"start_s": 0.48, "end_s": 2.5, "text": "Hello there.", "speaker": "Speaker 1"},
        {"start_s": 2.5, "end_s": 3.0, "text": "", "speaker": None},  # decoded silence
        {"start_s": 3.14, "end_s": 5.47, "text": "General Kenobi.", "speaker": "Speaker 2"},
        {"start_s": 12299.999, "end_s": 12301.5, "text": "Silence.", "speaker": "Speaker 2"},
    ],
}
PLAIN = {**RESULT, "segments": [{**s, "speaker": None} for s in RESULT["segments"]]}
EMPTY = {"recording_id": "r2", "text": "", "language": "en", "duration": 4.0, "segments": []}


@pytest.mark.parametrize("seconds, srt_text, vtt_text", [
    (0, "00:00:00,000", "00:00:00.000"), (3.14159, "00:00:03,142", "00:00:03.142"),
    (3599.9996, "01:00:00,000", "01:00:00.000"), (12299.999, "03:24:59,999", "03:24:59.999"),
    (360000.5, "100:00:00,500", "100:00:00.500"),
])
def test_timestamps_across_hours(seconds, srt_text, vtt_text):
    assert timestamp(seconds, separator=",") == srt_text and timestamp(seconds, separator=".") == vtt_text


def test_srt_round_trip_with_speakers():
    parsed = list(srt.parse(export(RESULT, "srt")))
    assert [s.content for s in parsed] == ["Speaker 1: Hello there.", "Speaker 2: General Kenobi.",
                                           "Speaker 2: Silence."]
    assert parsed[0].start.total_seconds() == pytest.approx(0.48)
    assert parsed[2].start.total_seconds() == pytest.approx(12299.999)
    assert parsed[2].end.total_seconds() == pytest.approx(12301.5)


def test_vtt_round_trip_with_voices():
    captions = webvtt.from_buffer(io.StringIO(export(RESULT, "vtt")))
    assert [c.text for c in captions] == ["Hello there.", "General Kenobi.", "Silence."]
    assert [c.voice for c in captions] == ["Speaker 1", "Speaker 2", "Speaker 2"]
    assert captions[2].start == "03:24:59.999" and captions[2].end == "03:25:01.500"


def test_txt_groups_speakers_and_falls_back_to_text():
    assert export(RESULT, "txt") == "Speaker 1: Hello there.\n\nSpeaker 2: General Kenobi. Silence.\n"
    assert export(PLAIN, "txt") == "Hello there. General Kenobi. Silence.\n"


def test_json_is_the_result():
    assert json.loads(export(RESULT, "json")) == RESULT


def test_an_empty_transcript_exports_to_valid_empty_files():
    assert export(EMPTY, "txt") == ""
    assert list(srt.parse(export(EMPTY, "srt"))) == []
    assert list(webvtt.from_buffer(io.StringIO(export(EMPTY, "vtt")))) == []
    assert json.loads(export(EMPTY, "json"))["segments"] == []


def test_plain_subtitles_have_no_speaker_prefix():
    assert list(srt.parse(export(PLAIN, "srt")))[0].content == "Hello there."


def test_unknown_format():
    with pytest.raises(ValueError, match="use one of json, txt, srt, vtt"):
        export(RESULT, "docx")
