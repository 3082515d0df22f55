"""What `kiln perplexity` prints: the KL-divergence chunk table and summary in
llama-perplexity's layout, and the same figures as JSON."""

from __future__ import annotations

import math
import sys

from .perplexity_stats import KLDAccumulator, PerplexityAccumulator, median, percentile

KLD_CHUNK_HEADER = ("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence"
                    "              Δp RMS            Same top p")
KLD_PERCENTILES = [("Maximum", 1.0), ("99.9%", 0.999), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.9),
                   ("Median", None), ("10.0%", 0.1), (" 5.0%", 0.05), (" 1.0%", 0.01), (" 0.1%", 0.001),
                   ("Minimum", 0.0)]
P_DIFF_PERCENTILES = [("Maximum", 1.0), ("99.9%", 0.999), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.9),
                      ("75.0%", 0.75), ("Median", None), ("25.0%", 0.25), ("10.0%", 0.1), (" 5.0%", 0.05),
                      (" 1.0%", 0.01), (" 0.1%", 0.001), ("Minimum", 0.0)]


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def mean_nll(acc: PerplexityAccumulator) -> tuple[float, float]:
    """Mean nll and its uncertainty (llama-perplexity's --ppl-output-type 1 columns)."""
    mean = acc.nll / acc.count
    var = acc.nll2 / acc.count - mean * mean
    return mean, (math.sqrt(var / (acc.count - 1)) if var > 0 and acc.count > 1 else var)


def _ppl(acc: KLDAccumulator) -> tuple[float, float]:
    log_ppl, dlog = acc.log_ppl()
    return math.exp(log_ppl), math.exp(log_ppl) * dlog


def kld_chunk_line(chunk: int, acc: KLDAccumulator) -> str:
    ppl, dppl = _ppl(acc)
    ratio, dratio = acc.log_ppl_ratio()
    kld, dkld = acc.kld()
    rms, drms = acc.p_diff_rms()
    top, dtop = acc.same_top()
    return (f"{chunk:4d}    {ppl:9.4f} ± {dppl:9.4f}    {ratio:10.5f} ± {dratio:10.5f}    {kld:10.5f} ± {dkld:10.5f}"
            f"    {100 * rms:6.3f} ± {100 * drms:6.3f} %    {100 * top:6.3f} ± {100 * dtop:6.3f} %")


def _percentile(values, fraction) -> float:
    return median(values) if fraction is None else percentile(values, fraction)


def kld_summary(acc: KLDAccumulator) -> str:
    """The three statistics blocks llama-perplexity prints at the end of a KL-divergence run."""
    lines = ["====== Perplexity statistics ======"]
    ppl, dppl = _ppl(acc)
    log_base, dlog_base = acc.log_ppl_base()
    ppl_base, dppl_base = math.exp(log_base), math.exp(log_base) * dlog_base
    lines.append(f"Mean PPL(Q)                   : {ppl:10.6f} ± {dppl:10.6f}")
    lines.append(f"Mean PPL(base)                : {ppl_base:10.6f} ± {dppl_base:10.6f}")
    cov = acc.log_ppl_cov()
    dlog = acc.log_ppl()[1]
    cor = cov / (dlog * dlog_base) if dlog * dlog_base > 0 else float("nan")
    lines.append(f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * cor:6.2f}%")
    ratio, dratio = acc.log_ppl_ratio()
    lines.append(f"Mean ln(PPL(Q)/PPL(base))     : {ratio:10.6f} ± {dratio:10.6f}")
    lines.append(f"Mean PPL(Q)/PPL(base)         : {math.exp(ratio):10.6f} ± {math.exp(ratio) * dratio:10.6f}")
    ppl_cov = ppl * ppl_base * cov
    ddiff = math.sqrt(max(dppl * dppl + dppl_base * dppl_base - 2.0 * ppl_cov, 0.0))
    lines.append(f"Mean PPL(Q)-PPL(base)         : {ppl - ppl_base:10.6f} ± {ddiff:10.6f}")
    lines.append("")
    lines.append("====== KL divergence statistics ======")
    kld, dkld = acc.kld()
    lines.append(f"Mean    KLD: {kld:10.6f} ± {dkld:10.6f}")
    klds = acc.sorted_kld()
    for label, fraction in KLD_PERCENTILES:
        lines.append(f"{label:<7} KLD: {_percentile(klds, fraction):10.6f}")
    lines.append("")
    lines.append("====== Token probability statistics ======")
    diffs = acc.sorted_p_diff()
    mean_diff = acc.sum_p_diff / acc.count
    dmean = math.sqrt(max(acc.sum_p_diff2 / acc.count - mean_diff**2, 0.0) / (acc.count - 1))
    lines.append(f"Mean    Δp: {100 * mean_diff:6.3f} ± {100 * dmean:5.3f} %")
    for label, fraction in P_DIFF_PERCENTILES:
        lines.append(f"{label:<7} Δp: {100 * _percentile(diffs, fraction):6.3f}%")
    rms, drms = acc.p_diff_rms()
    lines.append(f"RMS Δp    : {100 * rms:6.3f} ± {100 * drms:5.3f} %")
    top, dtop = acc.same_top()
    lines.append(f"Same top p: {100 * top:6.3f} ± {100 * dtop:5.3f} %")
    return "\n".join(lines)


def kld_json(acc: KLDAccumulator, n_ctx: int, n_chunk: int) -> dict:
    ppl, dppl = _ppl(acc)
    log_base, dlog_base = acc.log_ppl_base()
    ratio, dratio = acc.log_ppl_ratio()
    kld, dkld = acc.kld()
    rms, drms = acc.p_diff_rms()
    top, dtop = acc.same_top()
    klds, diffs = acc.sorted_kld(), acc.sorted_p_diff()
    return {
        "n_ctx": n_ctx,
        "n_chunk": n_chunk,
        "n_tokens_scored": acc.count,
        "ppl": ppl,
        "ppl_err": dppl,
        "ppl_base": math.exp(log_base),
        "ppl_base_err": math.exp(log_base) * dlog_base,
        "ln_ppl_ratio": ratio,
        "ln_ppl_ratio_err": dratio,
        "kld": {"mean": kld, "err": dkld, **{lbl.strip(): _percentile(klds, f) for lbl, f in KLD_PERCENTILES}},
        "p_diff": {"mean": float(diffs.mean()), "rms": rms, "rms_err": drms,
                   **{lbl.strip(): _percentile(diffs, f) for lbl, f in P_DIFF_PERCENTILES}},
        "same_top": top,
        "same_top_err": dtop,
    }
