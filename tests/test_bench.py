"""Every benchmark scenario runs, briefly, with the limits bench/ states: all answers 200 and
the report written. Never a timing: speed is what bench/ measures, not what tests assert."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import render_readme  # noqa: E402
from common import NotAllOK, require_all_200  # noqa: E402

pytestmark = pytest.mark.integration


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=BENCH.parent
    )


# About 130 s on 2 idle cores: thirty-eight rows, each a server started and warmed. The run's own
# subprocess limit is 600 s; the suite-wide 240 s would cut it on a busy machine.
@pytest.mark.timeout(600)
def test_every_benchmark_scenario_answers_200_and_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "latest"
    done = _run(
        [str(BENCH / "run.py"), "--duration", "1", "--concurrency", "5", "--memory", "100",
         "--rounds", "2", "--servers", "granian,hypercorn,uvicorn", "--out", str(out)],
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    names = [row["name"] for row in report["rows"]]
    servers = report["meta"]["servers"]
    assert servers == ["granian", "hypercorn", "uvicorn"]  # run.py's default comparison
    # The canned ceiling and the snippet once; per server the bare ceiling twice (before and
    # after its bridge rows), the bridge's hot and refresh paths on memory and on Redis.
    assert len(names) == 2 + 6 * len(servers)
    for server in servers:
        for row in (
            "(a) bare Quart JSON",
            "(c) bridge hot path",
            "(c) bridge refresh path",
            "(d) bridge hot path on Redis",
            "(d) bridge refresh path on Redis",
        ):
            assert f"{row}, {server}" in names
        assert f"(a) bare Quart JSON, {server}, again after (c)" in names
    for row in report["rows"]:
        assert row["errors"] == 0 and set(row["statuses"]) == {"200"}, row
        if not row["name"].startswith(("load generator", "(b)")):
            # Each server's rows, run in both rounds: a row is their mean.
            assert len(row["rounds_rps"]) == 2, row
            assert row["rps"] == sum(row["rounds_rps"]) / 2, row
    for side in ("bridge", "snippet"):
        assert report["upstream"][side]["errors"] == 0
    assert report["meta"]["limits"] == {"per_session": "off"}
    text = out.with_suffix(".md").read_text()
    rows_per_path = 2 * len(servers)  # hot and refresh, per server
    assert text.count("| (c) bridge") == rows_per_path
    assert text.count("| (d) bridge") == rows_per_path
    assert all(r["redis_commands_per_request"] > 0 for r in report["rows"] if "(d)" in r["name"])
    assert {m["store"] for m in report["memory"]} == {"memory", "redis"}
    # Every checkpoint is measured and reported. With 100 sessions the serving process may
    # grow by no whole page on Redis (its records live in Redis), so its RSS can read 0; and
    # Redis's used_memory may even shrink (client buffers of the warm-up's burst released),
    # but the keys and values it holds for them (its dataset) cannot.
    for point in report["memory"]:
        assert point["sessions"] == 100 and isinstance(point["rss_bytes_per_session"], int), point
        if point["store"] == "memory":
            assert point["rss_bytes_per_session"] > 0, point
        else:
            assert isinstance(point["redis_bytes_per_session"], int), point
            assert point["redis_dataset_bytes_per_session"] > 0, point
    assert out.with_suffix(".png").stat().st_size > 0
    # The README's section renders from the report, between its markers only.
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\nafter\n")
    assert render_readme.main(["--results", str(out.with_suffix(".json")), "--readme",
                               str(readme)]) == 0  # fmt: skip
    section = readme.read_text()
    assert section.startswith("intro\n") and section.endswith("after\n") and "old" not in section
    assert report["meta"]["commit"] in section and "(d) bridge hot path on Redis" in section
    assert render_readme.main(["--results", str(out.with_suffix(".json")), "--readme",
                               str(readme), "--check"]) == 0  # fmt: skip


def test_the_soak_answers_200_and_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    done = _run(
        [str(BENCH / "soak.py"), "--minutes", "0.03", "--rate", "50", "--out", str(out)],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert [set(r["statuses"]) for r in report["results"]] == [{"200"}, {"200"}]
    assert out.with_suffix(".md").exists()


def test_two_instances_on_every_topology_answer_200_and_are_reported(tmp_path: Path) -> None:
    out = tmp_path / "topologies"
    done = _run(
        [str(BENCH / "topologies.py"), "--duration", "1", "--concurrency", "4", "--out", str(out)],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {(row["topology"], row["path"]): row for row in report["rows"]}
    topologies, paths = ("single", "sentinel", "cluster"), ("hot", "refresh")
    assert set(rows) == {(t, p) for t in topologies for p in paths}
    for row in rows.values():
        assert row["errors"] == 0 and row["requests"] > 0, row
        assert 0 < row["commands_per_request"] < 7, row  # no lock on the hot path
    assert "| Cluster, 3 masters" in out.with_suffix(".md").read_text()


def test_the_in_process_memory_measure_reads_a_stored_record() -> None:
    done = _run([str(BENCH / "memory.py"), "--sessions", "50"], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["sessions"] == 50 and report["record_json_bytes"] > 200, report


def test_the_in_app_measure_runs_on_every_path() -> None:
    done = _run([str(BENCH / "micro.py"), "--requests", "100"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]  # it stops at any answer but 200
    assert set(json.loads(done.stdout)) == {"ceiling_cpu_us", "hot_cpu_us", "refresh_cpu_us"}


@pytest.mark.parametrize(
    "result",
    [
        {"requests": 10, "errors": 1, "statuses": {"200": 9, "429": 1}},
        {"requests": 10, "errors": 0, "statuses": {"200": 9, "503": 1}},
        {"error": "warm-up failed: status 429", "warmup_errors": 1},
    ],
)
def test_a_run_with_any_answer_but_200_is_not_reported(result: dict[str, object]) -> None:
    with pytest.raises(NotAllOK):
        require_all_200("scenario", result)


@pytest.mark.timeout(300)
def test_page_views_from_outside_with_wrk_answer_2xx_and_are_reported(tmp_path: Path) -> None:
    out = tmp_path / "wrk_outside"
    done = _run(
        [str(BENCH / "wrk_outside.py"), "--duration", "1", "--rounds", "1", "--sessions", "1000",
         "--out", str(out)],
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert set(rows) == {
        "bare Quart, granian",
        "bare Quart, hypercorn",
        "bare Quart, uvicorn",
        "bridge page views, memory store",
        "bridge page views, redis store",
        "documented Flask snippet, gunicorn",
    }
    for row in rows.values():
        assert row["requests"] > 0 and len(row["rounds_rps"]) == 1, row
    assert 0 < rows["bridge page views, redis store"]["redis_commands_per_request"] < 7
    assert [t["target"] for t in report["targets"]] == [
        "page views / ceiling",
        "page views p99 / ceiling p99",
        "page views / Flask snippet",
        "Redis page views / memory store",
        "Redis commands per page view",
    ]
    assert report["meta"]["sessions"] == 1000
    assert "| bridge page views, memory store |" in out.with_suffix(".md").read_text()


WRK_REPORT = """Running 1s test @ http://127.0.0.1:8000/request_tokens
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    16.93ms    3.02ms  48.11ms   91.20%
    Req/Sec     2.95k   120.11     3.11k    80.00%
  Latency Distribution
     50%   16.50ms
     75%   17.80ms
     90%   19.20ms
     99%    1.02s
  2950 requests in 1.00s, 2.10MB read
{extra}Requests/sec:   2949.51
Transfer/sec:      2.10MB
"""


def test_wrk_reports_are_read_and_a_run_with_failures_is_refused() -> None:
    import wrk_outside

    clean = wrk_outside.parse_wrk(WRK_REPORT.format(extra=""))
    assert clean == {"rps": 2949.51, "requests": 2950, "p50_ms": 16.5, "p99_ms": 1020.0,
                     "non_2xx": 0, "socket_errors": 0}  # fmt: skip
    assert wrk_outside.require_clean("row", clean) is clean
    for extra in (
        "  Non-2xx or 3xx responses: 3\n",
        "  Socket errors: connect 0, read 2, write 0, timeout 1\n",
    ):
        with pytest.raises(NotAllOK):
            wrk_outside.require_clean("row", wrk_outside.parse_wrk(WRK_REPORT.format(extra=extra)))
