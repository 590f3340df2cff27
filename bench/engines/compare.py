"""The comparison table of alternate.sh's rounds: `python3 bench/engines/compare.py [OUT]`.

Per case and thread count: each engine's median over the rounds of its per-round median;
simdconv's likewise per layout; the speed-up is, per round, the fastest engine's median
over simdconv's median in that round (above 1x: simdconv faster), given as the median over
the rounds and their range.
"""
import glob
import re
import statistics as st
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "bench/engines/out"
ENGINES = ("ort", "ov", "ncnn", "xnn")
def rows(path):
    out = []
    for line in open(path):
        if line.startswith("| ") and not line.startswith("| case") and not line.startswith("|---"):
            out.append([c.strip() for c in line.strip().strip("|").split("|")])
    return out
def eng(t, r):
    d = {}
    for c in rows(f"{OUT}/eng_t{t}_r{r}.md"):
        if len(c) >= 4 and c[1] in ENGINES:
            d.setdefault(c[0], {})[c[1]] = (float(c[2]), float(c[3]))
    return d
def ours(t, r, lay):
    d = {}
    for c in rows(f"{OUT}/{lay}_t{t}_r{r}.md"):
        if len(c) > 8:
            d[c[0]] = (float(c[6]), float(c[7]), c[3])
    return d
names = {"ort": "ONNX Runtime", "ov": "OpenVINO", "ncnn": "ncnn", "xnn": "XNNPACK"}
rounds = sorted({int(m.group(1)) for p in glob.glob(f"{OUT}/nhwc_t2_r*.md") for m in [re.search(r"_r(\d+)\.md", p)]})
for t in (1, 2):
    print(f"\n### {t} thread{'s' if t > 1 else ''} (rounds {rounds}; ms are medians of the rounds' medians)\n")
    E = [eng(t, r) for r in rounds]; N = [ours(t, r, "nchw") for r in rounds]; H = [ours(t, r, "nhwc") for r in rounds]
    # Engines in every round of this thread count (older runs have no XNNPACK rows).
    have = [e for e in ENGINES if all(e in v for d in E for v in d.values())]
    print("| case | " + " | ".join(f"{names[e]} ms" for e in have) + " | best engine | simdconv NCHW ms | speed-up NCHW (rounds) | simdconv NHWC ms | speed-up NHWC (rounds) |")
    print("|---|" + "---:|" * len(have) + "---|---:|---|---:|---|")
    for case in E[0]:
        em = {e: st.median(E[i][case][e][0] for i in range(len(rounds))) for e in have}
        best = min(em, key=em.get)
        def sp(O):
            rs = [min(E[i][case][e][0] for e in have) / O[i][case][0] for i in range(len(rounds))]
            return st.median(O[i][case][0] for i in range(len(rounds))), st.median(rs), min(rs), max(rs)
        n = sp(N); h = sp(H)
        f = lambda v: f"{v:.4g}"
        print(f"| {case} | " + " | ".join(f(em[e]) for e in have) + f" | {names[best]} | {f(n[0])} | {n[1]:.2f}x ({n[2]:.2f}-{n[3]:.2f}) | {f(h[0])} | {h[1]:.2f}x ({h[2]:.2f}-{h[3]:.2f}) |")
