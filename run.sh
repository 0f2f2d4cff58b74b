#!/usr/bin/env bash
# The SSG pipeline for one source -> target pair: source training, SSG self-training, SSG++ semi-training,
# then the report of target mAP and CMC before adaptation, after SSG and after SSG++ (python -m reid.report).
#
# Edit the pair below or override it from the environment:
#   SRC=dukemtmc TGT=market1501 DATA_DIR=/data/reid GPUS=0,1 ./run.sh
#   SOURCE_MODEL=models/dukemtmc_trained.pth.tar SRC=dukemtmc TGT=market1501 ./run.sh   # skip source training
#   SEED=2 ./run.sh                                              # another seed, logged under logs/...-seed2
#   TGT=folder:/data/my_crops IMAGES_PER_IDENTITY=17 SRC=market1501 ./run.sh   # your own crops (docs/own-data.md)
# With no edit it runs the embedded synthetic pair (synth_a -> synth_b) on a CPU-sized profile
# (profiles/synthetic.sh, for a synthetic source); any real source runs the paper's setting (profiles/paper.sh).
set -euo pipefail
cd "$(dirname "$0")"

SRC=${SRC:-synth_a}
TGT=${TGT:-synth_b}
DATA_DIR=${DATA_DIR:-data}
SEED=${SEED:-1}               # every stage's seed: source initialisation and sampling, adaptation, SSG++'s draw
TARGET_NAME=$TGT
[[ $TGT == folder:* || $TGT == list:* ]] && TARGET_NAME=$(basename "${TGT#*:}")   # your own crops
DEFAULT_LOGS_DIR=logs/${SRC}-${TARGET_NAME}
[[ $SEED == 1 ]] || DEFAULT_LOGS_DIR+=-seed$SEED
LOGS_DIR=${LOGS_DIR:-$DEFAULT_LOGS_DIR}
GPUS=${GPUS:-}                # comma-separated GPU ids; empty = every visible GPU, CPU when there is none
SOURCE_MODEL=${SOURCE_MODEL:-} # a trained source model (ours or the authors' .pth.tar, or a logs dir): no step 1
IMAGES_PER_IDENTITY=${IMAGES_PER_IDENTITY:-} # images of each person the target holds: rho by the paper's rule
TEST_DIR=${TEST_DIR:-}        # a labelled test set (Market-1501 layout) for a folder: or list: target
PYTHON=${PYTHON:-python}

# The options of each stage: the synthetic source's CPU-sized profile, or the paper's setting for a named source.
if [[ $SRC == synth_* ]]; then
    source profiles/synthetic.sh
else
    source profiles/paper.sh
fi
RUN=(--seed "$SEED")          # SSG++ draws its labelled set with SEED - 1: the release's 0 at SEED=1
[[ -n $GPUS ]] && RUN+=(--gpu-devices "$GPUS")
TARGET=()
[[ -n $TEST_DIR ]] && TARGET+=(--test-dir "$TEST_DIR")
if [[ -n $IMAGES_PER_IDENTITY ]]; then   # rho by the rule instead of the profile's own
    KEPT=()
    for ((i = 0; i < ${#ADAPT[@]}; i++)); do
        if [[ ${ADAPT[i]} == --rho ]]; then i=$((i + 1)); else KEPT+=("${ADAPT[i]}"); fi
    done
    ADAPT=("${KEPT[@]}")
    TARGET+=(--images-per-identity "$IMAGES_PER_IDENTITY")
fi
TESTS=(--test-datasets "$TGT")      # direct transfer to a named target; your own crops have no test split
[[ $TGT == folder:* || $TGT == list:* ]] && TESTS=()

if [[ -n $SOURCE_MODEL ]]; then
    echo "source model: $SOURCE_MODEL (source training skipped)"
else
    "$PYTHON" source_train.py --dataset "$SRC" "${TESTS[@]}" --data_dir "$DATA_DIR" \
        --logs_dir "$LOGS_DIR/source" "${MODEL[@]}" "${SOURCE[@]}" "${RUN[@]}"
    SOURCE_MODEL=$LOGS_DIR/source
fi

"$PYTHON" selftraining.py --src_dataset "$SRC" --tgt_dataset "$TGT" --resume "$SOURCE_MODEL" \
    --data_dir "$DATA_DIR" --logs_dir "$LOGS_DIR/ssg" --num-split 2 "${MODEL[@]}" "${ADAPT[@]}" "${TARGET[@]}" \
    "${RUN[@]}"

"$PYTHON" semitraining.py --src_dataset "$SRC" --tgt_dataset "$TGT" --resume "$SOURCE_MODEL" \
    --data_dir "$DATA_DIR" --logs_dir "$LOGS_DIR/ssgpp" --num-split 2 --sample cluster \
    "${MODEL[@]}" "${ADAPT[@]}" "${SEMI[@]}" "${TARGET[@]}" "${RUN[@]}"

"$PYTHON" -m reid.report "$LOGS_DIR"
