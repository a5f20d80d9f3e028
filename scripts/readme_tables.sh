#!/usr/bin/env bash
# Regenerate README's result tables: every command its blocks name, then the splice into README.md.
#
#   bash scripts/readme_tables.sh                      # every section (about an hour on 2 CPU cores)
#   bash scripts/readme_tables.sh real clicks          # only these sections
#   KEEP_OLD=1 bash scripts/readme_tables.sh           # after shipping a new default: re-run `default`
#                                                      # only, reusing the earlier defaults' run folders
#
# Sections: results real real-all clicks box noc propagation performance. The shipped models are
# `default` (the one each block is about) and the earlier defaults beside it. Every command re-runs,
# except that under KEEP_OLD an earlier default's run folder that already holds its result is reused.
# Run from the repository root in the test environment (PYTHON, default python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OLD=(fast-2026c fast-2026b lite0-2026 tiny-2025)  # the earlier defaults, newest first
NO_BOX=tiny-2025  # a study-family model: it takes no box
SETS_CLICKS=("coco-mini 15" "dsb2018-nuclei 40" "nuclei-histology 30" "em-isbi2012 25")
SETS_BOX=(coco-mini dsb2018-nuclei nuclei-histology)
SECTIONS=("$@")
[ ${#SECTIONS[@]} -eq 0 ] && SECTIONS=(results real real-all clicks box noc propagation performance)

suffix() { [ "$1" = default ] && echo "" || echo "-$1"; }

# Whether model $1 must be evaluated to write $2: always for `default`; an earlier default's
# existing result is reused under KEEP_OLD (its weights, and so its numbers, have not changed).
needs_run() { [ "$1" = default ] || [ -z "${KEEP_OLD:-}" ] || [ ! -f "$2" ]; }

results() {
    local force=(--force)
    [ -n "${KEEP_OLD:-}" ] && { rm -rf runs/report/default; force=(); }
    $PY -m training.report --models "default,$(IFS=,; echo "${OLD[*]}")" --max-objects 100 --readme "${force[@]}"
}

real() {  # $1: real or real-all
    local files=()
    for m in default "${OLD[@]}"; do
        local out="runs/$1$(suffix "$m")" grid=(--grid 0)
        [ "$m" = default ] && grid=(--grid 6 --grid-out "docs/$1-strokes.png")
        needs_run "$m" "$out/results.json" && $PY -m training.evaluate --model "$m" --dataset acdc-scribbles \
            --split val --protocol "$1" --max-objects 200 --device cpu "${grid[@]}" --out "$out"
        files+=("$out/results.json")
    done
    $PY -m training.report "--$1" "${files[@]}"
}

clicks() {
    local files=()
    for entry in "${SETS_CLICKS[@]}"; do
        read -r set n <<<"$entry"
        for m in default "${OLD[@]}"; do
            local out="runs/clicks$(suffix "$m")/$set"
            needs_run "$m" "$out/noc.json" && $PY -m training.noc --model "$m" --dataset "$set" --split val \
                --protocol clicks --rounds 20 --max-objects "$n" --device cpu --out "$out"
            files+=("$out/noc.json")
        done
    done
    $PY -m training.report --clicks "${files[@]}"
}

box() {
    local files=()
    for set in "${SETS_BOX[@]}"; do
        for m in default "${OLD[@]}"; do
            [ "$m" = "$NO_BOX" ] && continue
            local out="runs/box$(suffix "$m")/$set"
            needs_run "$m" "$out/results.json" && $PY -m training.evaluate --model "$m" --dataset "$set" --split val \
                --protocol box --max-objects 100 --device cpu --out "$out"
            files+=("$out/results.json")
        done
    done
    $PY -m training.report --box "${files[@]}"
}

noc() {
    for set in coco-mini dsb2018-nuclei; do
        $PY -m training.noc --model default --dataset "$set" --split val --max-objects 40 --protocol scribble \
            --rounds 10 --targets 0.85,0.90 --device cpu --out "runs/noc/$set"
    done
    $PY -m training.report --noc runs/noc/coco-mini/noc.md runs/noc/dsb2018-nuclei/noc.md
}

propagation() {
    $PY -m training.propagation --model default --strip-out docs/propagation_strip.png
    $PY -m training.propagation --model default --adapt 30 --out runs/propagation-adapt
    $PY -m training.report --propagation runs/propagation/results.json runs/propagation-adapt/results.json
}

performance() {
    $PY -m benchmarks.run_all
    $PY -m training.report --performance benchmarks/results/performance.md
}

for section in "${SECTIONS[@]}"; do
    echo "== $section"
    case "$section" in
        results | clicks | box | noc | propagation | performance) "$section" ;;
        real | real-all) real "$section" ;;
        *) echo "unknown section '$section'" >&2; exit 2 ;;
    esac
done
