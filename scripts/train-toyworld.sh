#!/usr/bin/env bash
# Trains the built-in toy-world model from nothing on this machine's CPU and
# writes it into internal/builtin/toyworld, where `go build` embeds it:
#
#   make && scripts/train-toyworld.sh [WORK_DIR]
#
# Every stage is seeded, and each is an ordinary lcpdiff command that can be
# run, stopped (Ctrl-C checkpoints) and resumed on its own (each passes
# --resume latest, which starts afresh while a stage has no checkpoint):
#   1. the toy world: 800 training clips and 400 images of 64x64 (seed 0;
#      RECOLOUR=P draws that share of its training subjects in random
#      palettes, `data toyworld --recolour`: an experiment, the built-in
#      model's recipe is 0);
#   2. a freshly initialised model folder (configs/toyworld-model.yaml, seed 0);
#   3. its VAE, trained on the training frames;
#   4. on one core its decoder alone further (the latents, and so every
#      stage after, do not change), and on the other the base UNet from
#      scratch with its grounding (configs/toyworld-base.yaml);
#   5. the LCP adapter, and the UNet further, with the paper's conditioner
#      (configs/toyworld-lcp.yaml);
#   6. both further, in batches of 8, as a two-process data-parallel job on
#      127.0.0.1 (configs/toyworld-polish.yaml), then twice more with a
#      fresh cosine (configs/toyworld-polish2.yaml, then
#      configs/toyworld-polish3.yaml, whose dropped samples see the zero
#      image's tokens as guidance's unconditional rows do);
#   7. from that result in half precision, twice more on toy worlds whose
#      training subjects partly wear random palettes, with subjects often
#      named by their category alone, so that their look must come from
#      the reference images (three quarters recoloured,
#      configs/toyworld-polish4.yaml, then half, toyworld-polish5.yaml);
#   8. from that result in half precision, once more on the half-recoloured
#      world drawn with the held-out identities' shapes and textures in
#      training too, always in palettes not their own (`data toyworld
#      --hold-out palette`, configs/toyworld-polish6.yaml);
#   9. the result, in half precision, into internal/builtin/toyworld.
# One libtorch thread a process (OpenBLAS's pool follows it): on two cores
# the tiny networks gain little from a second (the VAE stage 2.19 vs 1.86
# steps/s; stage 4 0.86 vs 0.78), so the second core runs the decoder
# stage beside the base stage, and the stages of 6 and 7 as a second rank.
set -euo pipefail

BIN=${BIN:-build/bin/lcpdiff}
WORK=${1:-runs/toyworld}
THREADS=${THREADS:-1}
mkdir -p "$WORK"

step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)" >&2; }
last_checkpoint() { # last_checkpoint OUT: a stage's checkpoint with the most steps
	ls -d "$1"/checkpoints/step-* | sort | tail -n 1
}

if [ ! -f "$WORK/data/train.jsonl" ]; then
	step "toy world"
	"$BIN" data toyworld --out "$WORK/data" --clips 800 --images 400 --seed 0 --recolour "${RECOLOUR:-0}"
fi
if [ ! -f "$WORK/model/model_index.json" ]; then
	step "fresh model"
	rm -rf "$WORK/model.tmp"
	"$BIN" model init --config configs/toyworld-model.yaml --out "$WORK/model.tmp" --seed 0
	step "VAE"
	"$BIN" --threads "$THREADS" model train-vae -m "$WORK/model.tmp" \
		--data "$WORK/data/train.jsonl" --eval "$WORK/data/test.jsonl" \
		--steps 1400 --batch-size 8 --lr 2e-3 --warmup 50 --seed 0
	mv "$WORK/model.tmp" "$WORK/model"
fi

# The decoder stage changes only the decoder, which no UNet stage uses (the
# trainer encodes; the base stage's sample sheets decode with the VAE it
# loaded), so it runs beside the base stage, and the model folders below
# are copied once it is done.
decoder=
if [ ! -f "$WORK/vae-decoder.done" ]; then
	step "VAE decoder, beside stage 1"
	"$BIN" --threads "$THREADS" model train-vae -m "$WORK/model" --decoder-only \
		--data "$WORK/data/train.jsonl" --eval "$WORK/data/test.jsonl" \
		--steps 3000 --batch-size 8 --lr 1e-3 --warmup 50 --subject-weight 20 --seed 1 -q &
	decoder=$!
	trap 'kill "$decoder" 2>/dev/null || true' EXIT # should stage 1 fail
fi

step "stage 1: base UNet and grounding"
"$BIN" --threads "$THREADS" --config configs/toyworld-base.yaml train \
	-m "$WORK/model" --data "$WORK/data/train.jsonl" --out "$WORK/base" --resume latest
base=$(last_checkpoint "$WORK/base")
if [ -n "$decoder" ]; then
	step "waiting for the VAE decoder"
	wait "$decoder"
	trap - EXIT
	touch "$WORK/vae-decoder.done"
fi

# Each stage starts from the last one's UNet: a checkpoint's
# unet.safetensors is a diffusers UNet weights file, so a copy of the model
# folder with it in place is that stage's model.
with_unet() { # with_unet FROM CHECKPOINT TO
	[ -f "$3/model_index.json" ] && return
	rm -rf "$3.tmp"
	cp -r "$1" "$3.tmp"
	cp "$2/unet.safetensors" "$3.tmp/unet/diffusion_pytorch_model.safetensors"
	mv "$3.tmp" "$3"
}
with_unet "$WORK/model" "$base" "$WORK/model-base"

step "stage 2: LCP adapter"
"$BIN" --threads "$THREADS" --config configs/toyworld-lcp.yaml train \
	-m "$WORK/model-base" --adapter "$base/adapter.safetensors" \
	--data "$WORK/data/train.jsonl" --out "$WORK/lcp" --resume latest
lcp=$(last_checkpoint "$WORK/lcp")

with_unet "$WORK/model-base" "$lcp" "$WORK/model-lcp"

two_ranks() { # two_ranks CONFIG MODEL ADAPTER OUT [DATA]: a data-parallel stage on 127.0.0.1
	local pids=()
	for rank in 0 1; do
		RANK=$rank LOCAL_RANK=$rank WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=${MASTER_PORT:-29511} \
			"$BIN" --threads "$THREADS" --config "$1" train -m "$2" --adapter "$3" \
			--data "${5:-$WORK/data/train.jsonl}" --out "$4" --resume latest &
		pids+=($!)
	done
	for pid in "${pids[@]}"; do wait "$pid"; done
}

step "stage 3: both further, two ranks"
two_ranks configs/toyworld-polish.yaml "$WORK/model-lcp" "$lcp/adapter.safetensors" "$WORK/polish"
polish=$(last_checkpoint "$WORK/polish")

with_unet "$WORK/model-lcp" "$polish" "$WORK/model-polish"

step "stage 4: once more, a fresh cosine"
two_ranks configs/toyworld-polish2.yaml "$WORK/model-polish" "$polish/adapter.safetensors" "$WORK/polish2"
polish2=$(last_checkpoint "$WORK/polish2")

with_unet "$WORK/model-polish" "$polish2" "$WORK/model-polish2"

step "stage 5: once more, the zero image for dropped samples"
two_ranks configs/toyworld-polish3.yaml "$WORK/model-polish2" "$polish2/adapter.safetensors" "$WORK/polish3"
polish3=$(last_checkpoint "$WORK/polish3")

# Stages 6 and 7 start from stage 5's export in half precision, as they
# were first run: from the built-in model of then, the one this export
# writes. Its weights rounded to fp16 are not stage 5's fp32 ones, and only
# the rounded start is the one measured.
if [ ! -f "$WORK/model-polish3/model_index.json" ]; then
	step "stage 5's result, in half precision"
	"$BIN" model export -m "$WORK/model-polish2" --checkpoint "$polish3" --dtype fp16 --out "$WORK/model-polish3"
fi

# The same world drawn again with that share of its training subjects in
# random palettes (seed 0: the same test clips).
for share in 75 50; do
	if [ ! -f "$WORK/data-rc$share/train.jsonl" ]; then
		step "toy world, $share% of its training subjects recoloured"
		"$BIN" data toyworld --out "$WORK/data-rc$share" --clips 800 --images 400 --seed 0 --recolour "0.$share"
	fi
done

step "stage 6: three quarters of the subjects recoloured"
two_ranks configs/toyworld-polish4.yaml "$WORK/model-polish3" "$WORK/model-polish3/adapter.safetensors" \
	"$WORK/polish4" "$WORK/data-rc75/train.jsonl"
polish4=$(last_checkpoint "$WORK/polish4")

with_unet "$WORK/model-polish3" "$polish4" "$WORK/model-polish4"

step "stage 7: half of them"
two_ranks configs/toyworld-polish5.yaml "$WORK/model-polish4" "$polish4/adapter.safetensors" \
	"$WORK/polish5" "$WORK/data-rc50/train.jsonl"
polish5=$(last_checkpoint "$WORK/polish5")

# Stage 8 starts from stage 7's export in half precision, as it was first
# run: from the built-in model of then, which this export was.
if [ ! -f "$WORK/model-polish5/model_index.json" ]; then
	step "stage 7's result, in half precision"
	"$BIN" model export -m "$WORK/model-polish3" --checkpoint "$polish5" --dtype fp16 --out "$WORK/model-polish5"
fi

# The half-recoloured world again, with the held-out identities' shapes and
# textures drawn in training too, in palettes not their own (seed 0: the
# same test clips).
if [ ! -f "$WORK/data-hp50/train.jsonl" ]; then
	step "toy world, the held-out shapes and textures in other palettes"
	"$BIN" data toyworld --out "$WORK/data-hp50" --clips 800 --images 400 --seed 0 --recolour 0.5 --hold-out palette
fi

step "stage 8: the held-out identities' shapes and textures seen"
two_ranks configs/toyworld-polish6.yaml "$WORK/model-polish5" "$WORK/model-polish5/adapter.safetensors" \
	"$WORK/polish6" "$WORK/data-hp50/train.jsonl"
final=$(last_checkpoint "$WORK/polish6")

step "built-in model"
"$BIN" model export -m "$WORK/model-polish5" --checkpoint "$final" --dtype fp16 --out internal/builtin/toyworld
