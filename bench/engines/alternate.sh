#!/bin/sh
# Same-machine comparison: the engines of run.py and simdconv's convbench, alternated in
# ROUNDS rounds (default 3) at 1 and 2 threads, each round writing its Markdown tables to
# OUT (default bench/engines/out); then `python3 bench/engines/compare.py OUT` prints the
# comparison. Needs `bench/engines/setup.sh` once, and a convbench built with rayon:
#   cargo build --release -p simdconv-bench --features rayon --bin convbench
# Run from the repository root; nothing else should run meanwhile (2 threads use both cores).
set -e
OUT=${OUT:-bench/engines/out}
ROUNDS=${ROUNDS:-3}
MIN=${MIN_TIME:-0.5}
CB=${CONVBENCH:-target/release/convbench}
mkdir -p "$OUT"
CASES=""
for c in alexnet_conv1 vgg_conv1_2 vgg_conv3_2 vgg_conv5_2 resnet_conv1 resnet_1x1_reduce \
    resnet_1x1_expand googlenet_1x1 dilated_3x3_d2 soumith_l5 depthwise_3x3 conv_bias_relu \
    maxpool_2x2_s2 maxpool_3x3_s2 avgpool_2x2_s2 global_avgpool; do
    CASES="$CASES --case $c"
done
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for t in 1 2; do
        date -u
        python3 bench/engines/run.py --threads "$t" --min-time "$MIN" --wait-idle 10 --no-details \
            --markdown "$OUT/eng_t${t}_r$r.md" > "$OUT/eng_t${t}_r$r.log" 2>&1
        for layout in nchw nhwc; do
            # shellcheck disable=SC2086
            "$CB" $CASES --threads "$t" --min-time "$MIN" --layout "$layout" \
                --markdown "$OUT/${layout}_t${t}_r$r.md" > "$OUT/${layout}_t${t}_r$r.log" 2>&1
        done
    done
    r=$((r + 1))
done
date -u
