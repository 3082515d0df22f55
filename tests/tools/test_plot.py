"""`kiln plot`: Pareto fronts against brute force, the files written (HTML, SVG, PNG), the page
rendered by headless Chromium, sweep-bench runs in every shape, and bad input."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.cli import main
from kiln.tools.plot_chart import sweep_chart
from kiln.tools.plot_html import figure
from kiln.tools.plot_pareto import dominator, pareto_front
from kiln.tools.plot_png import HEADLESS_FLAGS, find_chromium, svg_to_png
from kiln.tools.plot_svg import linear_ticks, log_ticks
from kiln.tools.plot_sweep_data import read_sweep_file, read_sweep_files

SVG_NS = "{http://www.w3.org/2000/svg}"

# the seed community's shape; Q4_K_M, Q3_K_M and Q2_K are dominated, Q4_K_M has no url
QUANTS = [
    {"name": "Q8_0", "bpw": 8.50, "ppl": 3.2119, "size": 665.3, "url": "https://example.com/R1/Q8_0"},
    {"name": "IQ5_K", "bpw": 5.86, "ppl": 3.2226, "size": 458.9, "url": "https://example.com/R1/IQ5_K"},
    {"name": "Q4_K_M", "bpw": 4.85, "ppl": 3.2405, "size": 376.7},
    {"name": "IQ4_KS", "bpw": 4.25, "ppl": 3.2372, "size": 332.8, "url": "https://example.com/R1/IQ4_KS"},
    {"name": "IQ3_K", "bpw": 3.52, "ppl": 3.2730, "size": 275.6, "url": None},
    {"name": "Q3_K_M", "bpw": 3.89, "ppl": 3.3291, "size": 304.5},
    {"name": "IQ2_KS", "bpw": 2.56, "ppl": 3.6184, "size": 200.4, "url": "https://example.com/R1/IQ2_KS"},
    {"name": "Q2_K", "bpw": 2.63, "ppl": 3.8920, "size": 205.9},
    {"name": "IQ1_S", "bpw": 1.78, "ppl": 4.8831, "size": 139.3},
]
OTHER = [  # a second model: its Q4_0 would be dominated by the first model's IQ4_KS, but fronts are per model
    {"name": "Q4_0", "bpw": 4.5, "ppl": 3.30, "size": 10.0},
    {"name": "Q6_K", "bpw": 6.56, "ppl": 3.25, "size": 14.0},
]


def _brute_front(xs, ys):
    n = len(xs)
    return [not any(xs[j] <= xs[i] and ys[j] <= ys[i] and (xs[j] < xs[i] or ys[j] < ys[i]) for j in range(n)) for i in range(n)]


def _chromium() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("KILN_REQUIRE_CHROMIUM") == "1":
            pytest.fail("KILN_REQUIRE_CHROMIUM=1 but no Chromium on PATH (apt-get install chromium)")
        pytest.skip("no Chromium on PATH (apt-get install chromium; KILN_REQUIRE_CHROMIUM=1 makes this a failure)")
    return found


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _plot(capsys, *argv):
    code = main(["plot", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err.strip().splitlines()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --- Pareto front ---------------------------------------------------------------------------

points = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=0, max_size=25)  # small ranges: many ties


@settings(max_examples=300, deadline=None, database=None)
@given(points)
def test_pareto_front_matches_brute_force(pts):
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    front = pareto_front(xs, ys)
    assert front == _brute_front(xs, ys)
    for i, on in enumerate(front):
        j = dominator(xs, ys, i)
        assert (j is None) == on
        if j is not None:  # the named dominator does dominate, and is itself on the front
            assert xs[j] <= xs[i] and ys[j] <= ys[i] and (xs[j], ys[j]) != (xs[i], ys[i]) and front[j]


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.tuples(st.floats(0.5, 20, allow_nan=False), st.floats(1, 50, allow_nan=False)), max_size=40))
def test_pareto_front_matches_brute_force_floats(pts):
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    assert pareto_front(xs, ys) == _brute_front(xs, ys)


def test_identical_points_both_stay_on_the_front():
    assert pareto_front([2, 2, 3], [5, 5, 5]) == [True, True, False]


# --- ppl: HTML and SVG ------------------------------------------------------------------------


def test_ppl_html_and_svg(tmp_path, capsys):
    data = _write(tmp_path / "DeepSeek-R1.json", QUANTS)
    code, out, err = _plot(capsys, "ppl", data, "-o", tmp_path / "r1", "--format", "svg")
    assert code == 0, err
    page = (tmp_path / "r1.html").read_text()
    page = page.replace("\\u002f", "/").replace("\\u003c", "<").replace("\\u003e", ">")  # plotly's JSON escapes
    for q in QUANTS:
        assert json.dumps(q["name"]) in page
        if q.get("url"):
            assert json.dumps(q["url"]) in page
    assert "plotly_click" in page and "window.open" in page
    assert not re.search(r"<script[^>]+src=", page), "plotly.js must be embedded (offline), not loaded from a CDN"
    assert not (tmp_path / "r1.png").exists()

    root = ET.parse(tmp_path / "r1.svg").getroot()
    circles = root.findall(f".//{SVG_NS}circle[@class='point']")
    assert len(circles) == len(QUANTS)
    brute = _brute_front([q["bpw"] for q in QUANTS], [q["ppl"] for q in QUANTS])
    by_name = {c.find(f"{SVG_NS}title").text.splitlines()[0]: c for c in circles}
    for q, on in zip(QUANTS, brute, strict=True):
        assert (by_name[q["name"]].get("fill") == "#ffffff") == (not on), q["name"]
    links = {a.get("href") for a in root.iter(f"{SVG_NS}a")}
    assert links == {q["url"] for q in QUANTS if q.get("url")}
    assert "dominated: Q4_K_M by IQ4_KS, Q3_K_M by IQ3_K, Q2_K by IQ2_KS" in out


def test_ppl_several_models_each_get_their_own_front(tmp_path, capsys):
    # one file as {model: [...]}, one list whose entries carry "model", one named by --label
    (tmp_path / "a.json").write_text(json.dumps({"R1": QUANTS}))
    (tmp_path / "b.json").write_text(json.dumps([{**q, "model": "small"} for q in OTHER]))
    (tmp_path / "c.json").write_text(json.dumps(OTHER[:1]))
    code, out, err = _plot(capsys, "ppl", tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json", "--label", "R1", "--label", "small", "--label", "third", "-o", tmp_path / "m", "--format", "svg", "--x", "size", "--log-x")
    assert code == 0, err
    root = ET.parse(tmp_path / "m.svg").getroot()
    series = {g.get("data-name"): g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "series"}
    assert set(series) == {"R1", "small", "third"}
    assert len(series["small"].findall(f".//{SVG_NS}circle")) == 2
    assert all(c.get("fill") != "#ffffff" for c in series["small"].iter(f"{SVG_NS}circle"))  # Q4_0 not dominated by R1's points
    assert "small: Pareto front by size: Q4_0 (10, PPL 3.3), Q6_K (14, PPL 3.25)" in out


def test_ppl_log_axes_and_names(tmp_path, capsys):
    data = _write(tmp_path / "q.json", QUANTS)
    code, _, err = _plot(capsys, "ppl", data, "-o", tmp_path / "q.v2.html", "--format", "svg", "--log-x", "--log-y", "--show-names", "--title", "R1 <quants>")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.json", "q.v2.html", "q.v2.svg"]
    root = ET.parse(tmp_path / "q.v2.svg").getroot()
    labels = [t.text for t in root.iter(f"{SVG_NS}text") if t.get("class") == "label"]
    assert sorted(labels) == sorted(q["name"] for q in QUANTS)
    assert "R1 <quants>" in [t.text for t in root.iter(f"{SVG_NS}text")]
    page = (tmp_path / "q.v2.html").read_text()
    assert '"type":"log"' in page.replace(" ", "")


def test_ticks():
    for lo, hi in [(3.2, 4.9), (0.0, 1536.0), (-3.0, 7.5), (190.0, 700.0)]:
        ticks = linear_ticks(lo, hi)
        values = [v for v, _ in ticks]
        assert 3 <= len(values) <= 7 and lo <= values[0] and values[-1] <= hi * (1 + 1e-9)
        steps = {round(b - a, 9) for a, b in zip(values, values[1:], strict=False)}
        assert len(steps) == 1 and float(f"{steps.pop():.1e}".split("e")[0]) in (1.0, 2.0, 5.0)
    assert [label for _, label in log_ticks(0.8, 120)] == ["1", "2", "5", "10", "20", "50", "100"]
    assert [v for v, _ in log_ticks(3.1, 4.9)] == pytest.approx([3.5, 4.0, 4.5])


# --- ppl: PNG and the page in Chromium ---------------------------------------------------------


def test_ppl_png(tmp_path, capsys):
    _chromium()
    data = _write(tmp_path / "q.json", QUANTS)
    code, _, err = _plot(capsys, "ppl", data, "-o", tmp_path / "q", "--width", "800", "--height", "500", "--scale", "2")
    assert code == 0, err
    png = (tmp_path / "q.png").read_bytes()
    assert _png_size(png) == (1600, 1000)
    assert not (tmp_path / "q.svg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.html", "q.json", "q.png"]  # no temporary file or folder left


def test_png_pixels_show_the_markers():
    _chromium()
    # one red square on white: the PNG must have it where the SVG put it (decode with zlib: no image library)
    import zlib

    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="200"><rect width="200" height="200" fill="#fff"/><rect x="100" y="0" width="100" height="100" fill="#f00"/></svg>'
    png = svg_to_png(svg, 200, 200)
    w, h = _png_size(png)
    assert (w, h) == (200, 200)
    pos, idat = 8, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        if kind == b"IDAT":
            idat += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    bit_depth, color_type = png[24], png[25]
    channels = {2: 3, 6: 4}[color_type]
    assert bit_depth == 8
    raw = zlib.decompress(idat)
    stride = w * channels
    rows, prev = [], bytearray(stride)
    for y in range(h):  # undo the PNG row filters
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], (prev[i - channels] if i >= channels else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line

    def pixel(x, y):
        return tuple(rows[y][x * channels : x * channels + 3])

    assert pixel(150, 50) == (255, 0, 0) and pixel(50, 50) == (255, 255, 255) and pixel(150, 150) == (255, 255, 255)


@pytest.mark.slow
def test_page_in_chromium_has_one_point_per_quant(tmp_path, capsys):
    browser = _chromium()
    (tmp_path / "a.json").write_text(json.dumps({"R1": QUANTS, "small": OTHER}))
    code, _, err = _plot(capsys, "ppl", tmp_path / "a.json", "-o", tmp_path / "page", "--format", "svg")
    assert code == 0, err
    page = tmp_path / "page.html"
    done = subprocess.run(
        [browser, *HEADLESS_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=2000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    dom = done.stdout
    assert 'class="main-svg"' in dom, done.stderr[-2000:]  # plotly ran and drew
    points = re.findall(r'<path class="point[ "]', dom)
    assert len(points) == len(QUANTS) + len(OTHER)


def test_missing_chromium_is_a_clear_error_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KILN_CHROMIUM", str(tmp_path / "no-such-browser"))
    data = _write(tmp_path / "q.json", QUANTS)
    code, _, err = _plot(capsys, "ppl", data, "-o", tmp_path / "q", "--format", "both")
    assert code == 1 and len(err) == 1
    assert "needs Chromium" in err[0] and "apt-get install chromium" in err[0] and "--format svg" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.json"]


# --- sweep ---------------------------------------------------------------------------------------

ROWS = [
    {"pp": 512, "tg": 128, "n_kv": 0, "t_pp": 2.0, "speed_pp": 256.0, "t_tg": 6.4, "speed_tg": 20.0},
    {"pp": 512, "tg": 128, "n_kv": 512, "t_pp": 2.048, "speed_pp": 250.0, "t_tg": 6.5, "speed_tg": 19.69},
    {"pp": 512, "tg": 128, "n_kv": 1024, "t_pp": 2.2, "speed_pp": 232.73, "t_tg": 6.8, "speed_tg": 18.82},
]
HEADER = "|    PP |     TG |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |\n|-------|--------|--------|----------|----------|----------|----------|\n"


def _table(rows):
    return "main: n_kv_max = 2048, n_batch = 2048\n\n" + HEADER + "".join(
        f"| {r['pp']:5d} | {r['tg']:6d} | {r['n_kv']:6d} | {r['t_pp']:8.3f} | {r['speed_pp']:8.2f} | {r['t_tg']:8.3f} | {r['speed_tg']:8.2f} |\n" for r in rows
    )


def test_sweep_every_shape_reads_the_same(tmp_path):
    extra = {"n_kv_max": 2048, "n_batch": 2048, "n_ubatch": 512, "flash_attn": 1, "n_gpu_layers": 0, "n_threads": 2, "n_threads_batch": 2}
    shapes = {
        "list.json": json.dumps(ROWS),
        "rows.json": json.dumps({"rows": ROWS}),
        "lines.jsonl": "llama log line\n" + "".join(json.dumps({**extra, **r}) + "\n" for r in ROWS),
        "table.md": _table(ROWS),
    }
    runs = [read_sweep_file(_write(tmp_path / name, text)) for name, text in shapes.items()]
    for run in runs:
        assert run.n_kv == [0, 512, 1024]
        assert run.speed_pp == pytest.approx([r["speed_pp"] for r in ROWS], abs=0.006)
        assert run.speed_tg == pytest.approx([r["speed_tg"] for r in ROWS], abs=0.006)
    assert [r.label for r in runs] == ["list", "rows", "lines", "table"]


def test_sweep_repetitions_are_averaged_and_speed_computed_from_times(tmp_path):
    rows = ROWS + [{**ROWS[2], "speed_pp": 240.0, "speed_tg": 19.0}, {"n_kv": 1536, "pp": 512, "t_pp": 2.56, "tg": 128, "t_tg": 8.0}]
    run = read_sweep_file(_write(tmp_path / "r.json", rows))
    assert run.n_kv == [0, 512, 1024, 1536]
    assert run.speed_pp[2] == pytest.approx((232.73 + 240.0) / 2)
    assert run.speed_pp_std[2] == pytest.approx(abs(240.0 - 232.73) / 2**0.5)
    assert run.speed_pp[3] == pytest.approx(200.0) and run.speed_tg[3] == pytest.approx(16.0)
    assert run.speed_tg_std[0] == 0.0


def test_sweep_plot_traces(tmp_path, capsys):
    a = _write(tmp_path / "cpu.json", ROWS)
    b = _write(tmp_path / "gpu.md", _table([{**r, "speed_pp": r["speed_pp"] * 4} for r in ROWS[:2]]))
    runs = read_sweep_files([a, b], ["CPU", "GPU"])
    fig = figure(sweep_chart(runs, title=None, log_x=False, log_y=False, labels=False, width=1300, height=560))
    markers = [t for t in fig.data if t.mode == "markers"]
    assert [(t.name, t.xaxis) for t in markers] == [("CPU", "x"), ("GPU", "x"), ("CPU", "x2"), ("GPU", "x2")]
    assert list(markers[0].x) == [0, 512, 1024] and list(markers[0].y) == pytest.approx([256.0, 250.0, 232.73])
    assert list(markers[1].y) == pytest.approx([1024.0, 1000.0], abs=0.02)
    assert list(markers[2].y) == pytest.approx([20.0, 19.69, 18.82])
    log = figure(sweep_chart(runs, title=None, log_x=True, log_y=True, labels=False, width=1300, height=560))
    assert list(log.data[1].x) == [512, 1024] and log.layout.xaxis.type == "log"  # N_KV 0 has no place on a log axis

    code, out, err = _plot(capsys, "sweep", a, b, "--label", "CPU", "--label", "GPU", "-o", tmp_path / "s", "--format", "svg")
    assert code == 0, err
    root = ET.parse(tmp_path / "s.svg").getroot()
    assert len(root.findall(f".//{SVG_NS}circle[@class='point']")) == 2 * (3 + 2)
    assert "CPU: 3 rows, N_KV 0..1024" in out and (tmp_path / "s.html").exists()


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        ('[{"name": "Q8_0", "bpw": 8.5, "ppl": 3.2}', ["q.json: not valid JSON", "line 1"]),
        ('[{"name": "Q8_0", "bpw": 8.5, "ppl": 3.2},\n {"name": "Q4_0", "bpw": 4.5, "ppl": "3.3"}]', ["q.json: entry 2 (Q4_0)", '"ppl" is "3.3", expected a number']),
        ('[{"name": "Q8_0", "bpw": 8.5}]', ["q.json: entry 1 (Q8_0)", 'has no "ppl"']),
        ('[{"bpw": 8.5, "ppl": 3.2}]', ["q.json: entry 1", 'has no "name"']),
        ('[{"name": "Q8_0", "ppl": 3.2}]', ["entry 1 (Q8_0)", 'neither "bpw" nor "size"']),
        ('[{"name": "Q8_0", "bpw": true, "ppl": 3.2}]', ["entry 1 (Q8_0)", '"bpw" is true, expected a number']),
        ('[{"name": "Q8_0", "bpw": -1, "ppl": 3.2}]', ["entry 1 (Q8_0)", '"bpw" is -1, expected a number above 0']),
        ('[{"name": "Q8_0", "bpw": 8.5, "ppl": NaN}]', ["entry 1 (Q8_0)", '"ppl" is NaN, expected a finite number']),
        ('[{"name": "Q8_0", "bpw": 8.5, "ppl": 3.2, "url": "javascript:alert(1)"}]', ["entry 1 (Q8_0)", "not an http(s) link"]),
        ('[{"name": "Q8_0", "bpw": 8.5, "ppl": 3.2, "url": 5}]', ["entry 1 (Q8_0)", '"url" is 5, expected a string']),
        ("[3.2]", ["q.json: entry 1", "expected an object"]),
        ("[]", ["q.json: the list is empty"]),
        ('{"R1": 3}', ['q.json: model "R1" is 3', "expected a non-empty list"]),
        ('{"R1": [{"name": "Q8_0", "bpw": "8.5", "ppl": 3.2}]}', ['q.json: model "R1" entry 1 (Q8_0)', '"bpw" is "8.5"']),
        ('"quants"', ["q.json: is str, expected a list of quants"]),
        ('[{"name": "Q8_0", "bpw": 8.5, "ppl": 3.2}]', ['entry 1 (Q8_0): has no "size", which --x size plots', "--x bpw"]),
    ],
)
def test_ppl_bad_input(tmp_path, capsys, content, expected):
    data = _write(tmp_path / "q.json", content)
    extra = ["--x", "size"] if "--x size" in expected[0] else []
    code, _, err = _plot(capsys, "ppl", data, "-o", tmp_path / "out", "--format", "svg", *extra)
    assert code == 1 and len(err) == 1, err
    for part in expected:
        assert part in err[0], err[0]
    assert not list(tmp_path.glob("out*"))


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"n_kv": 0, "speed_pp": 1, "speed_tg": 2}\n{"n_kv": 512, "speed_pp": 1,\n', ["s.jsonl: line 2: not valid JSON"]),
        ('[{"n_kv": 0, "speed_pp": 100, "speed_tg": 10}, {"n_kv": 512, "speed_pp": 100}]', ['s.jsonl: row 2: has no "speed_tg" (nor "tg" and "t_tg")']),
        ('[{"speed_pp": 100, "speed_tg": 10}]', ['row 1: has no "n_kv"']),
        ('[{"n_kv": 1.5, "speed_pp": 100, "speed_tg": 10}]', ['row 1: "n_kv" is 1.5, expected a whole number']),
        ('[{"n_kv": 0, "speed_pp": "fast", "speed_tg": 10}]', ['row 1: "speed_pp" is "fast", expected a number']),
        (HEADER + "|   512 |    128 |      0 |    1.512 |   n/a |    5.100 |    25.10 |\n", ['s.jsonl: line 3: column "speed_pp" is "n/a"']),
        ("nothing here\n", ["s.jsonl: no sweep-bench rows found", "llama-sweep-bench --output-format jsonl"]),
    ],
)
def test_sweep_bad_input(tmp_path, capsys, content, expected):
    data = _write(tmp_path / "s.jsonl", content)
    code, _, err = _plot(capsys, "sweep", data, "-o", tmp_path / "out", "--format", "svg")
    assert code == 1 and len(err) == 1, err
    for part in expected:
        assert part in err[0], err[0]


def test_bad_flags_and_files(tmp_path, capsys):
    data = _write(tmp_path / "q.json", QUANTS)
    code, _, err = _plot(capsys, "ppl", data, "--label", "a", "--label", "b", "-o", tmp_path / "o", "--format", "svg")
    assert code == 1 and "2 --label for 1 files" in err[0]
    code, _, err = _plot(capsys, "ppl", tmp_path / "none.json", "-o", tmp_path / "o")
    assert code == 1 and "none.json: no such file" in err[0]
    code, _, err = _plot(capsys, "ppl", data, "-o", tmp_path / "no" / "dir" / "o")
    assert code == 1 and "does not exist" in err[0]
    with pytest.raises(SystemExit):  # argparse: unknown kind
        main(["plot", "pie", str(data)])
