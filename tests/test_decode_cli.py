"""`qrgate decode IMAGE...`: one JSON line per image, errors reported and counted in the exit status."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.cli import main
from tests.qrimages import write_blank_png, write_code_png


def run_decode(capsys, *args: str) -> tuple[int, list[dict]]:
    status = main(["decode", *args])
    out = capsys.readouterr().out
    return status, [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("backend", ["zxing", "zbar"])
def test_decode_prints_text_and_bytes_of_each_code(tmp_path, capsys, backend):
    image = write_code_png(tmp_path / "pass.png", "QG1:HELLO")
    status, lines = run_decode(capsys, "--backend", backend, str(image))
    assert status == 0
    assert len(lines) == 1
    line = lines[0]
    assert set(line) == {"file", "codes", "ms"}
    assert line["file"] == str(image)
    assert line["codes"] == [{"text": "QG1:HELLO", "bytes_b64": base64.b64encode(b"QG1:HELLO").decode(),
                              "pass": backend}]
    assert line["ms"] >= 0


def test_binary_payload_has_null_text_and_exact_bytes(tmp_path, capsys):
    raw = b"\xff\x00\xfe binary"
    image = write_code_png(tmp_path / "bin.png", raw)
    status, lines = run_decode(capsys, str(image))
    assert status == 0
    assert lines[0]["codes"] == [{"text": None, "bytes_b64": base64.b64encode(raw).decode(), "pass": "zxing"}]


def test_an_image_without_a_code_gives_an_empty_list(tmp_path, capsys):
    image = write_blank_png(tmp_path / "blank.png")
    status, lines = run_decode(capsys, str(image))
    assert (status, lines[0]["codes"]) == (0, [])


def test_an_unreadable_image_gives_an_error_line_and_exit_1_after_the_others(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    good = write_code_png(tmp_path / "good.png", "QG1:OK")
    status, lines = run_decode(capsys, str(broken), str(tmp_path / "missing.png"), str(good))
    assert status == 1
    assert [line["file"] for line in lines] == [str(broken), str(tmp_path / "missing.png"), str(good)]
    assert "cannot read image" in lines[0]["error"] and "codes" not in lines[0]
    assert "cannot read image" in lines[1]["error"]
    assert lines[2]["codes"][0]["text"] == "QG1:OK"


def test_a_folder_is_expanded_to_its_images_in_name_order(tmp_path, capsys):
    write_code_png(tmp_path / "b.png", "B")
    write_code_png(tmp_path / "a.png", "A")
    (tmp_path / "a.txt").write_text("A")
    status, lines = run_decode(capsys, str(tmp_path))
    assert status == 0
    got = [(Path(line["file"]).name, line["codes"][0]["text"]) for line in lines]
    assert got == [("a.png", "A"), ("b.png", "B")]


def test_the_console_script_decodes_a_sample_photo(samples_dir):
    image = samples_dir / "qrcode-1" / "1.webp"
    want = image.with_suffix(".txt").read_bytes().decode("utf-8")
    qrgate = Path(sys.executable).parent / "qrgate"
    assert qrgate.exists(), f"{qrgate} is missing; install the package with `pip install -e .` in the venv"
    done = subprocess.run([str(qrgate), "decode", str(image)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert [code["text"] for code in line["codes"]] == [want]


def test_json_reports_the_retry_pass_that_read_a_code_zxing_located_but_could_not_read(capsys, samples_dir):
    # qrcode-4/09: zxing-cpp's LocalAverage pass locates the symbol but fails its checksum
    image = samples_dir / "qrcode-4" / "09.webp"
    want = image.with_suffix(".txt").read_bytes().decode("utf-8")
    status, lines = run_decode(capsys, "--json", str(image))
    assert status == 0
    assert [(code["text"], code["pass"]) for code in lines[0]["codes"]] == [(want, "retry-global-histogram")]
    status, lines = run_decode(capsys, "--json", "--no-retry", str(image))
    assert (status, lines[0]["codes"]) == (0, [])


def test_json_names_the_first_pass_zxing_for_a_plain_read(capsys, samples_dir):
    image = samples_dir / "qrcode-1" / "1.webp"
    status, lines = run_decode(capsys, "--json", str(image))
    assert status == 0 and [code["pass"] for code in lines[0]["codes"]] == ["zxing"]
