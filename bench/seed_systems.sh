#!/usr/bin/env bash
# The real-data runs behind BENCHMARKS.md's "Seed systems on CUHK01" tables (issues 18 and 19), one after
# the other, each resumable: a killed or timed-out run continues where it stopped when this is run again
# (every stage is cached; the GAN and re-ID trainings resume from their last checkpoint).
#
#   OMP_NUM_THREADS=2 bash bench/seed_systems.sh                 # all of them, in the order below
#   OMP_NUM_THREADS=2 bash bench/seed_systems.sh fusion transfer # some of them
#   DRY=1 bash bench/seed_systems.sh                             # only `reidaug status` of each: what is left
#   UNTIL="syn-raw-s0 real-re-e18-s0" bash bench/seed_systems.sh transfer   # those stages (and what they
#                                                                # need), in that order; then the table so far
#
# Records: after each step the measuring stages' reports (metrics, run config, log; no weights) are kept by
# `reidaug archive` in bench/results/records (or $RECORDS), keyed like the cache, and the tables read stages
# missing from this machine's cache from there (`compare --records`). Commit the records: a campaign longer
# than one machine's life (the cache is lost with it) continues on the next one. An UNTIL target that has a
# record is skipped (a plain run without UNTIL runs the whole config, recorded stages included); what a
# missing target needs is retrained. The re-ID trainer gave the same digits on two VMs; a CycleGAN retrained
# on another VM came out another model: put all the arms of one GAN (and its score stage) in one UNTIL list.
#
# Needs ../shared/data/cuhk01 and ../shared/models (MoveNet, the judge) beside the repository, as the configs
# say. CPU budget measured on the 2-core VMs (2026-12-06/07; the second VM ran about 2.3x slower):
#   fusion    configs/real/cuhk01_posegan.yaml -> evaluate-posefusion: PG2 5,000 steps, a real-only re-ID model,
#             1 + 8 views of 1,944 test images (~1.5-2 h on the slower VM)
#   transfer  configs/real/synthetic_to_cuhk01.yaml: three CycleGANs and 24 re-ID arms (~4 h fast, ~9 h slow)
#   dgnet     configs/real/cuhk01_dgnet.yaml: DG-Net 3,000 steps and 9 re-ID arms (~2-3 h fast)
#   lsro      configs/real/cuhk01_lsro.yaml (already measured; with its cache in place the run only checks it)
#   pnfusion  configs/real/cuhk01_posegan.yaml -> evaluate-pnfusion: PN-GAN's two models (8 x 1,940 canonical
#             fakes, a re-ID model on them, the 1 + 8 views of 1,944 test images again; ~1 h fast)
# Tables: bench/results/{posefusion,transfer,dgnet,lsro,pnfusion}_cuhk01.json (`reidaug compare`; the fusion
# stage's metrics.json) and {transfer,dgnet,lsro}_scores_cuhk01.json (the generation scores), or under $RESULTS.
# Needs bash 4 (associative arrays).
set -euo pipefail
cd "$(dirname "$0")/.."
REIDAUG=${REIDAUG:-.venv/bin/reidaug}
RESULTS=${RESULTS:-bench/results}
RECORDS=${RECORDS:-bench/results/records}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

declare -A CONFIG=([fusion]=configs/real/cuhk01_posegan.yaml [transfer]=configs/real/synthetic_to_cuhk01.yaml
                   [dgnet]=configs/real/cuhk01_dgnet.yaml [lsro]=configs/real/cuhk01_lsro.yaml
                   [pnfusion]=configs/real/cuhk01_posegan.yaml)
# the fusion runs: one evaluate-posefusion stage each, whose metrics.json is the table
declare -A STAGE=([fusion]=evaluate-posefusion [pnfusion]=evaluate-pnfusion)
declare -A TABLE=([fusion]=posefusion_cuhk01.json [pnfusion]=pnfusion_cuhk01.json)
# the generation scores of a run, written beside its re-ID table as <run>_scores_cuhk01.json
declare -A SCORES=([transfer]="score-cyclegan score-ptgan score-spgan" [dgnet]="score-dgnet-heldout score-swaps"
                   [lsro]="score-lsro")
declare -A BASELINE=([transfer]=syn-raw [dgnet]=real-re-e18 [lsro]=reid-real-e18)
RUNS=("$@")
[[ ${#RUNS[@]} -gt 0 ]] || RUNS=(fusion transfer dgnet lsro pnfusion)
for name in "${RUNS[@]}"; do
  if [[ -z $name || -z "${CONFIG[$name]:-}" ]]; then
    echo "unknown run '$name': expected one of ${!CONFIG[*]}" >&2
    exit 2
  fi
done
if [[ -n "${UNTIL:-}" && ( ${#RUNS[@]} -ne 1 || -n "${STAGE[${RUNS[0]}]:-}" ) ]]; then
  echo "UNTIL names stages of one table run (transfer, dgnet or lsro); got runs: ${RUNS[*]}" >&2
  exit 2
fi

# key_of STAGE: the stage's whole key in $table (`reidaug status --full-keys`: "<stage>  <key>  <state> ...")
key_of() { awk -v s="$1" '$1 == s {print $2}' <<<"$table"; }

# recorded KEY: the record of KEY under $RECORDS (a run on another machine, or before a cache gc), if any
recorded() {
  local d found=""
  for d in "$RECORDS"/*/"$1"; do [[ -n $1 && -f $d/meta.json ]] && found=$d; done
  echo "$found"
}

# entry STAGE: the finished cache entry of STAGE of $config (never a .partial), else its record, else exit 1
# saying why
entry() {  # reads $table, the run's `reidaug status --full-keys` (and its "workspace: <dir>")
  local stage=$1 key ws d found=""
  key=$(key_of "$stage")
  ws=$(sed -n 's/^workspace: //p' <<<"$table")
  # entries live under the stage kind's folder (evaluate-posefusion, score-fakes), whatever the instance is called
  if [[ $(awk -v s="$stage" '$1 == s {print $3}' <<<"$table") == cached ]]; then  # not partial, not damaged
    for d in "$ws"/cache/*/"${key:0:2}"/"$key"; do
      [[ -n $key && -f $d/meta.json ]] && found=$d
    done
  fi
  [[ -n $found ]] || found=$(recorded "$key")
  if [[ -z $found ]]; then
    echo "no finished $stage entry of $config in '${ws}' nor record in '${RECORDS}' (key '${key}'); reidaug status says:" >&2
    echo "$table" >&2
    exit 1
  fi
  echo "$found"
}

for name in "${RUNS[@]}"; do
  config=${CONFIG[$name]}
  echo "== $(date -u +%FT%TZ) $name: $config"
  if [[ -n "${DRY:-}" ]]; then
    "$REIDAUG" status "$config"
    continue
  fi
  if [[ -n "${STAGE[$name]:-}" ]]; then  # the PG2 config has other stages; the fusion table needs only its own
    "$REIDAUG" run "$config" --until "${STAGE[$name]}"
    "$REIDAUG" archive "$config" --to "$RECORDS"
    table=$("$REIDAUG" status "$config" --full-keys)
    found=$(entry "${STAGE[$name]}")
    cp "$found/metrics.json" "$RESULTS/${TABLE[$name]}"
    cat "$found/metrics.md"
  else
    if [[ -n "${UNTIL:-}" ]]; then
      table=$("$REIDAUG" status "$config" --full-keys)  # the keys; running a target changes none of them
      for target in $UNTIL; do
        rec=$(recorded "$(key_of "$target")")
        if [[ -n $rec ]]; then  # measured before (this key): its record stands, nothing is retrained for it
          echo "-- $target: recorded ($rec), skipped"
          continue
        fi
        echo "-- $(date -u +%FT%TZ) until $target"
        "$REIDAUG" run "$config" --until "$target"
        "$REIDAUG" archive "$config" --to "$RECORDS"
      done
    else
      "$REIDAUG" run "$config"
      "$REIDAUG" archive "$config" --to "$RECORDS"
    fi
    "$REIDAUG" compare "$config" --records "$RECORDS" -b "${BASELINE[$name]}" --format json -o "$RESULTS/${name}_cuhk01.json"
    "$REIDAUG" compare "$config" --records "$RECORDS" -b "${BASELINE[$name]}"
    if [[ -n "${SCORES[$name]:-}" ]]; then  # the generation scores beside the re-ID table: {stage: metrics.json}
      stages=(${SCORES[$name]})
      table=$("$REIDAUG" status "$config" --full-keys)
      entries=() notyet=()
      for stage in "${stages[@]}"; do  # all found before anything is written
        if e=$(entry "$stage" 2>/dev/null); then entries+=("$e"); else notyet+=("$stage"); fi
      done
      if [[ ${#notyet[@]} -gt 0 ]]; then
        if [[ -n "${UNTIL:-}" ]]; then  # a partial run: the scores file waits until every score stage is measured
          echo "-- ${name}_scores_cuhk01.json not written: ${notyet[*]} neither finished nor recorded yet"
          continue
        fi
        entry "${notyet[0]}" >/dev/null  # says which and why, and exits 1
      fi
      out="$RESULTS/${name}_scores_cuhk01.json"
      sep=""
      {
        printf '{'
        for i in "${!stages[@]}"; do
          printf '%s\n"%s": ' "$sep" "${stages[$i]}"
          cat "${entries[$i]}/metrics.json"
          sep=","
        done
        printf '\n}\n'
      } > "$out.tmp"
      mv "$out.tmp" "$out"
      for i in "${!stages[@]}"; do
        echo "-- ${stages[$i]}"
        table="${entries[$i]}/metrics.md"  # score-dgnet writes no table: its JSON then
        if [[ -f $table ]]; then cat "$table"; else cat "${entries[$i]}/metrics.json"; echo; fi
      done
    fi
  fi
done
