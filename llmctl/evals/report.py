"""Eval reports: JSON (also the baseline format), JUnit XML, Markdown and a self-contained HTML page."""

from __future__ import annotations

import html
from xml.etree import ElementTree as ET

from llmctl.evals.runner import EvalResult
from llmctl.money import money


def unjudged(report: dict) -> bool:
    """No case of the run names expected sources: its retrieval means are of nothing."""
    return report.get("coverage", {}).get("judged_cases") == 0


def threshold_value(t: dict) -> str:
    return "-" if t["value"] is None else f"{t['value']:.3f}"


def threshold_result(t: dict) -> str:
    return f"skipped: {t['skipped']}" if t.get("skipped") else ("pass" if t["passed"] else "FAIL")


def to_dict(result: EvalResult, checks: list[dict], baseline: dict | None, passed: bool,
            answer_gate: dict | None = None) -> dict:
    agg = result.aggregate()
    if answer_gate is None:
        from llmctl.evals.gate import answer_gate as gate_of

        answer_gate = gate_of(result)
    out = {
        "suite": result.suite.name,
        "passed": passed,
        "final_stage": result.final_stage,
        "metrics": agg,
        "thresholds": checks,
        "answer_gate": answer_gate,  # mean pass rate vs min_pass_rate; flaky cases; errors
        "flaky": answer_gate["flaky"],
        "sequential": result.sequential,
        "baseline": baseline,
        "require_comparable_baseline": result.suite.require_comparable_baseline,
        "fingerprint": result.fingerprint,
        "extended_cases": result.extended_cases,
        "load_seconds": round(result.load_seconds, 3),  # model loading, not in the latencies
        "rerank": result.rerank,
        "latency_ms": result.latency(),
        "cost_usd": result.cost_usd,
        "answers": result.answers(),
        "coverage": result.coverage,
        "seconds": round(result.seconds, 2),
        "cases": [{
            "id": c.case.id, "query": c.case.query, "tags": c.case.tags, "passed": c.passed,
            "expected": sorted(c.qrels), "top": {s: r[:10] for s, r in c.ranked.items()},
            "metrics": c.metrics, "answer": c.answer, "answer_status": c.answer_status,
            "checks": c.checks, "error": c.error, "latency_ms": round(c.latency_ms, 1), "cost_usd": c.cost_usd,
            "group": c.case.group, "pass_rate": c.pass_rate, "repeats": len(c.runs), "flaky": c.flaky,
            "runs": [{"answer": r["answer"], "passed": r["passed"],
                      "failed": [x["check"] for x in r["checks"] if not x["passed"]]} for r in c.runs],
        } for c in result.cases],
    }
    out["warnings"] = notices(out)  # what the terminal warns about, for --json readers too
    return out


def test_text(t: dict) -> str:
    """A paired comparison in words: delta, 95% CI, p-value (one-sided, for a drop; Holm-adjusted),
    per-case wins/losses/ties."""
    lo, hi = t["ci95"]
    adj = f", Holm {t['p_adjusted']:.3g}" if "p_adjusted" in t else ""
    return (f"{t['delta']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}], p {t['p_value']:.3g}{adj}; "
            f"{t['wins']} better, {t['losses']} worse, {t['ties']} same")


def flaky_text(report: dict) -> str | None:
    """The cases that both passed and failed when asked several times, with their pass rates."""
    rate = {c["id"]: c for c in report["cases"]}
    if not report.get("flaky"):
        return None
    return "Flaky (passed and failed): " + ", ".join(
        f"{i} {sum(r['passed'] for r in rate[i]['runs'])}/{rate[i]['repeats']}" for i in report["flaky"])


def power_lines(power: dict | None, clusters: int | None = None) -> list[str]:
    """Per gated metric, the smallest drop detectable at 80% power; the warnings."""
    if not power or not power.get("metrics"):
        return []
    head = (f"Power: smallest drop detectable at 80% power (one-sided, alpha {power['alpha_per_test']:g} per "
            f"metric{f', {clusters} clusters' if clusters else ''}): ")
    return [head + ", ".join(f"{r['metric']} {r['mde']:.3f}" for r in power["metrics"])] + [
        f"warning: {w}" for w in power["warnings"]]


def gate_lines(report: dict) -> list[str]:
    """What the terminal adds after the tables: pass rate, flaky cases, clusters and power, stopping."""
    out = []
    a = report.get("answer_gate") or {}
    if a.get("cases"):
        out.append(f"Answers: pass rate {a['value']:.3f} over {a['cases']} case(s) x {a['repeats']} repeat(s) "
                   f"(min_pass_rate {a['min_pass_rate']}): {'pass' if a['passed'] else 'FAIL'}")
    if flaky_text(report):
        out.append(flaky_text(report))
    b = report.get("baseline") or {}
    if b.get("comparable"):
        out.append(f"Baseline test: {b.get('method')}, {b.get('clusters')} clusters (cases sharing an expected "
                   "document or group are resampled together)")
        out += power_lines(b.get("power"), None)
    ab = report.get("ab")
    if ab:
        out.append(ab_head(ab))
        out += [f"  {row}" for row in ab_rows(ab).values()]
    if ab and ab.get("power"):
        out.append(f"A/B test: clustered paired bootstrap, one-sided, Holm; {ab.get('clusters')} clusters")
        out += power_lines(ab.get("power"))
    s = report.get("sequential")
    if s:
        by = f" by {s['by']}" if s.get("by") else ""
        out.append(f"Stopped when decided ({s['rule']}): {s['decided'] or 'not decided'}{by} after "
                   f"{s['answered_cases']} of "
                   f"{s['of']} answered cases; {s['calls_saved']} of {s['calls_full_run']} answer calls saved")
    return out


def ab_head(ab: dict) -> str:
    a, b = ab["a"], ab["b"]

    def side(x: dict) -> str:
        return f"{x['config']} ({x['stage']}" + (f", cost {money(x['cost_usd'])})" if x.get("cost_usd") else ")")

    return f"A/B: A={side(a)}  B={side(b)}"


def ab_rows(ab: dict) -> dict[str, str]:
    """Per metric: A's mean vs B's, and the paired test (B minus A)."""
    out = {}
    for m, d in ab["delta"].items():
        t = ab["paired"].get(m)
        said = test_text(t) if t else f"{d:+.3f}"
        out[m] = f"{m}: {ab['a']['metrics'][m]:.3f} vs {ab['b']['metrics'][m]:.3f} ({said})"
    return out


def shared_cases_text(b: dict) -> str:
    c = b["cases"]
    return (f"{c['shared']} cases both runs scored ({c['only_this_run']} only in this run, "
            f"{c['only_baseline']} only in the baseline)")


def _case_failure(c) -> str | None:
    if c.error:
        return c.error
    if c.answer_status == "failed":
        return "; ".join(f"failed: {x['check']}" for x in c.checks if not x["passed"])
    return None


def notices(report: dict) -> list[str]:
    """What the run did not do, said the same way in every format (terminal, JUnit, Markdown,
    HTML): a green gate must not read as a full pass when checks were skipped."""
    out = []
    skipped = sum(1 for c in report["cases"] if c["answer_status"] == "skipped")
    if skipped:
        out.append(f"{skipped} answer check(s) skipped: {report['answers'].get('skip_reason')}")
    if any(t.get("skipped") for t in report["thresholds"]):
        out.append("no case in this run has expected sources: the retrieval thresholds are skipped, not passed")
    rr = report["rerank"]
    if rr.get("status") == "unavailable":
        out.append(f"reranker unavailable ({rr.get('reason')}): the final stage is hybrid")
    b = report.get("baseline")
    if b and not b["comparable"]:
        out.append(f"baseline {b['message']}; no regression check was made")
    return out


def junit(report: dict, result: EvalResult) -> str:
    cases = result.cases
    failures = sum(1 for t in report["thresholds"] if not t["passed"])
    suite = ET.Element("testsuite", name=f"llmctl eval: {report['suite']}",
                       tests=str(len(cases) + len(report["thresholds"])), failures=str(failures),
                       time=f"{report['seconds']:.2f}")
    for c in cases:
        tc = ET.SubElement(suite, "testcase", classname=report["suite"], name=c.case.id,
                           time=f"{c.latency_ms / 1000:.3f}")
        final = c.metrics.get(result.final_stage, {})
        ET.SubElement(tc, "system-out").text = (
            f"query: {c.case.query}\n" + " ".join(f"{k}={v:.3f}" for k, v in final.items()))
        if c.runs and len(c.runs) > 1:
            tc.find("system-out").text += (f"\npass rate {c.pass_rate:.3f} ({sum(r['passed'] for r in c.runs)}/"
                                           f"{len(c.runs)})" + (" FLAKY: passed and failed" if c.flaky else ""))
            if c.flaky:
                ET.SubElement(tc, "properties").append(ET.Element("property", name="flaky", value="true"))
        problem = _case_failure(c)
        if problem and c.error is None and (report.get("answer_gate") or {}).get("passed", False) and c.runs \
                and report["answer_gate"]["min_pass_rate"] < 1:
            problem = None  # within min_pass_rate: the gate passed (system-out keeps the pass rate)
        if c.flaky and problem and c.error is None:
            problem = f"flaky ({sum(r['passed'] for r in c.runs)}/{len(c.runs)} passed): {problem}"
        if problem:
            ET.SubElement(tc, "failure", message=problem[:500]).text = problem
            failures += 1
        elif c.answer_status == "skipped":
            ET.SubElement(tc, "skipped", message=f"answer checks skipped: {result.skip_reason}")
        elif c.answer_status == "stopped":
            ET.SubElement(tc, "skipped", message="answer not asked: --stop-when-decided had a verdict")
    for t in report["thresholds"]:
        tc = ET.SubElement(suite, "testcase", classname=f"{report['suite']}.thresholds",
                           name=f"{t['metric']} >= {t['threshold']}")
        if t.get("skipped"):
            ET.SubElement(tc, "skipped", message=t["skipped"])
        elif not t["passed"]:
            ET.SubElement(tc, "failure", message=f"{t['metric']} = {t['value']:.4f} < {t['threshold']}")
    b = report.get("baseline") or {}
    for r in b.get("metrics", []) if b.get("comparable") else []:
        tc = ET.SubElement(suite, "testcase", classname=f"{report['suite']}.baseline",
                           name=f"{r['metric']} vs baseline")
        ET.SubElement(tc, "system-out").text = f"{r['baseline']:.4f} -> {r['value']:.4f} ({test_text(r)})"
        if r["regressed"]:
            ET.SubElement(tc, "failure", message=f"{r['metric']} dropped {test_text(r)}")
            failures += 1
    ab = report.get("ab")
    for m, row in ab_rows(ab).items() if ab else ():  # a comparison, not a gate: recorded, never failed
        tc = ET.SubElement(suite, "testcase", classname=f"{report['suite']}.ab", name=f"{m} A/B")
        ET.SubElement(tc, "system-out").text = f"{ab_head(ab)}\n{row}"
    a = report.get("answer_gate") or {}
    if a.get("cases"):
        tc = ET.SubElement(suite, "testcase", classname=f"{report['suite']}.answers",
                           name=f"answer pass rate >= {a['min_pass_rate']}")
        ET.SubElement(tc, "system-out").text = "\n".join(gate_lines(report))
        if not a["passed"]:
            ET.SubElement(tc, "failure", message=f"answer pass rate {a['value']:.3f} < {a['min_pass_rate']}")
            failures += 1
    said = notices(report)
    if said:
        ET.SubElement(suite, "system-err").text = "\n".join(f"warning: {n}" for n in said)
    suite.set("tests", str(sum(1 for e in suite if e.tag == "testcase")))
    suite.set("failures", str(failures))
    return ET.tostring(suite, encoding="unicode")


def coverage_text(cov: dict) -> str:
    """What the suite leaves untested, in one sentence."""
    lexical = cov["bm25_only_cases"]
    shown = ", ".join(lexical[:10]) + (f" and {len(lexical) - 10} more" if len(lexical) > 10 else "")
    return (f"{cov['never_retrieved_count']} of {cov['documents']} documents are in no case's top "
            f"{cov['k']}; {len(lexical)} of {cov['judged_cases']} judged cases are found by BM25 alone"
            + (f" ({shown})" if lexical else ""))


def gate_failures(r: dict) -> list[str]:
    """Why the gate failed, one phrase per reason (the CLI's error line, the Markdown summary)."""
    parts = [f"{t['metric']} {t['value']:.3f} < {t['threshold']}" for t in r["thresholds"] if not t["passed"]]
    b = r.get("baseline")
    if b and not b.get("comparable") and r.get("require_comparable_baseline"):
        parts.append(f"baseline {b['message']} (require_comparable_baseline: true)")
    if b and b.get("comparable"):
        parts += [f"{m['metric']} dropped {m['delta']:+.3f} (allowed -{b['max_regression']}; p {m['p_value']:.3g}, "
                  f"Holm-adjusted {m['p_adjusted']:.3g})" for m in b["metrics"] if m["regressed"]]
    a = r["answer_gate"]
    if not a["passed"] and a["min_pass_rate"] < 1:
        parts.append(f"answer pass rate {a['value']:.3f} < {a['min_pass_rate']} (min_pass_rate)")
    failed = [c["id"] for c in r["cases"] if not c["passed"]]
    if failed and (not a["passed"] or a["errors"]):
        more = f" and {len(failed) - 5} more (see the report)" if len(failed) > 5 else ""
        parts.append(f"{len(failed)} case(s) failed: {', '.join(failed[:5])}{more}")
    return parts


def markdown(report: dict) -> str:
    icon = "✅" if report["passed"] else "❌"
    lines = [f"## {icon} llmctl eval: {report['suite']}", ""]
    if not report["passed"]:
        lines += [f"**Gate failed:** {'; '.join(gate_failures(report))}", ""]
    said = notices(report)
    if said:
        lines += [f"> ⚠️ {n}" for n in said] + [""]
    metrics = list(next(iter(report["metrics"].values()), {}).keys())
    lines += ["| stage | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for stage, vals in report["metrics"].items():
        mark = " (final)" if stage == report["final_stage"] else ""
        cells = ("-" if unjudged(report) else f"{vals[m]:.3f}" for m in metrics)
        lines.append(f"| {stage}{mark} | " + " | ".join(cells) + " |")
    if report["thresholds"]:
        lines += ["", "| threshold | value | result |", "|---|---|---|"]
        lines += [f"| {t['metric']} ≥ {t['threshold']} | {threshold_value(t)} | {threshold_result(t)} |"
                  for t in report["thresholds"]]
    b = report.get("baseline")
    if b:
        if not b["comparable"]:
            lines += ["", f"Baseline {b['message']}."]
        else:
            lines += ["", f"Baseline: compared on the {shared_cases_text(b)}."]
            lines += ["", "| metric | baseline | now | delta | 95% CI | p | better / worse / same |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {r['metric']} | {r['baseline']:.3f} | {r['value']:.3f} | {r['delta']:+.3f}"
                      f"{' ❌ REGRESSED' if r['regressed'] else ''} | [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | "
                      f"{r['p_value']:.3g} (Holm {r.get('p_adjusted', r['p_value']):.3g}) | "
                      f"{r['wins']} / {r['losses']} / {r['ties']} |" for r in b["metrics"]]
    extra = gate_lines(report)
    if extra:
        lines += [""] + [f"- {x}" for x in extra]
    failed = [c for c in report["cases"] if not c["passed"]]
    if failed:
        lines += ["", "Failed cases:"]
        lines += [f"- `{c['id']}`: {c['error'] or '; '.join(x['check'] for x in c['checks'] if not x['passed'])}"
                  for c in failed]
    lines += ["", f"Coverage: {coverage_text(report['coverage'])}."]
    lat = report["latency_ms"]
    lines += ["", f"{len(report['cases'])} cases, latency p50 {lat['p50']} ms / p95 {lat['p95']} ms, "
                  f"cost {money(report['cost_usd'])}, {report['seconds']} s."]
    return "\n".join(lines) + "\n"


def html_page(report: dict) -> str:
    """One file, no external assets: metric bars per stage (inline SVG) and a per-case table."""
    e = html.escape
    stages = list(report["metrics"])
    metrics = list(next(iter(report["metrics"].values()), {}).keys())
    colours = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"]
    bar_w, gap, height = 18, 14, 160
    width = len(metrics) * (len(stages) * bar_w + gap) + 40
    bars = []
    for mi, m in enumerate(metrics):
        x0 = 30 + mi * (len(stages) * bar_w + gap)
        for si, s in enumerate(stages):
            v = report["metrics"][s][m]
            h = v * height
            bars.append(f'<rect x="{x0 + si * bar_w}" y="{10 + height - h:.1f}" width="{bar_w - 2}" '
                        f'height="{h:.1f}" fill="{colours[si % len(colours)]}"><title>{e(s)} {e(m)} '
                        f'{v:.3f}</title></rect>')
        bars.append(f'<text x="{x0}" y="{height + 28}" font-size="11">{e(m)}</text>')
    legend = " ".join(f'<span style="color:{colours[i % len(colours)]}">■ {e(s)}</span>'
                      for i, s in enumerate(stages))
    rows = []
    for c in report["cases"]:
        final = c["metrics"].get(report["final_stage"], {})
        status = "pass" if c["passed"] else "FAIL"
        rows.append(
            f"<tr class='{status.lower()}'><td>{e(c['id'])}</td><td>{e(c['query'])}</td>"
            + "".join(f"<td>{final.get(m, 0):.2f}</td>" for m in metrics)
            + f"<td>{e(c['answer_status'])}{' (flaky)' if c.get('flaky') else ''}"
            + (f" {c['pass_rate']:.2f}" if c.get("pass_rate") is not None and c.get("repeats", 0) > 1 else "")
            + f"</td><td>{status}</td></tr>")
    thresholds = "".join(f"<li>{e(t['metric'])} ≥ {t['threshold']}: {threshold_value(t)} "
                         f"<b>{e(threshold_result(t))}</b></li>" for t in report["thresholds"])
    b = report.get("baseline")
    if not b:
        baseline = "<p>none</p>"
    elif not b["comparable"]:
        baseline = f"<p>{e(b['message'])}</p>"
    else:
        baseline = f"<p>compared on the {e(shared_cases_text(b))}</p><ul>" + "".join(
            f"<li>{e(r['metric'])}: {r['baseline']:.3f} → {r['value']:.3f} ({e(test_text(r))})"
            f"{' <b>REGRESSED</b>' if r['regressed'] else ''}</li>" for r in b["metrics"]) + "</ul>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>llmctl eval: {e(report['suite'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 7px;font-size:13px}}tr.fail td{{background:#fde2e2}}</style></head>
<body><h1>{'✅' if report['passed'] else '❌'} {e(report['suite'])}</h1>
{''.join(f'<p><b>⚠️ {e(n)}</b></p>' for n in notices(report))}
<p>final stage: <b>{e(report['final_stage'])}</b>; {len(report['cases'])} cases; latency p50
{report['latency_ms']['p50']} ms, p95 {report['latency_ms']['p95']} ms; cost {money(report['cost_usd'])}</p>
<h2>Metrics per stage</h2><p>{legend}</p>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}">
<line x1="28" y1="{10 + height}" x2="{width}" y2="{10 + height}" stroke="#999"/>{''.join(bars)}</svg>
<h2>Thresholds</h2><ul>{thresholds or '<li>none</li>'}</ul>
<h2>Against the baseline</h2>{baseline}
<h2>Gate</h2><ul>{''.join(f'<li>{e(x)}</li>' for x in gate_lines(report)) or '<li>thresholds only</li>'}</ul>
<h2>Coverage</h2><p>{e(coverage_text(report['coverage']))}</p>
<h2>Cases</h2><table><tr><th>id</th><th>query</th>{''.join(f'<th>{e(m)}</th>' for m in metrics)}
<th>answer</th><th>result</th></tr>{''.join(rows)}</table></body></html>
"""


def plan_text(plan: dict) -> str:
    """``eval --plan`` in words: what the suite can see before any paid call."""
    lines = [f"Plan for '{plan['suite']}': {plan['cases']} cases in {plan['clusters']} clusters; "
             f"{plan['answer_cases']} answered x {plan['repeats']} repeat(s) = {plan['answer_calls']} model calls; "
             f"max_regression {plan['max_regression']}, significance {plan['significance']}."]
    lines += [f"  {r['metric']}: smallest drop detectable at 80% power {r['mde']:.3f} "
              f"(variance from {r['variance_from']})" for r in plan["metrics"]]
    lines += [f"warning: {w}" for w in plan["warnings"]]
    return "\n".join(lines)
