package sd

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
)

// InferUNetConfig derives the SD 1.x UNet configuration of an original
// single-file checkpoint (src is the file as stored, such as nn.OpenFiles
// gives) from its tensor shapes: the levels and layers per block from how
// the blocks are numbered, the widths from the resnets, which levels carry
// attention from which blocks have transformers, the cross-attention width
// from attn2.to_k.
//
// The original inference yaml says the rest, which shapes cannot: heads is
// its num_heads (8 for every SD 1.x), used at every level; sample_size is
// SD 1.x's 64 latents (512 pixels); the norms use 32 groups.
func InferUNetConfig(src nn.Source, heads int64) (unet.Config, error) {
	u := nn.WithPrefix(src, unetPrefix)
	shape := func(key string) []int64 { s, _ := u.Shape(key); return s }
	has := func(key string) bool { _, ok := u.Shape(key); return ok }

	convIn, convOut := shape("input_blocks.0.0.weight"), shape("out.2.weight")
	context := shape("middle_block.1.transformer_blocks.0.attn2.to_k.weight")
	projIn := shape("middle_block.1.proj_in.weight")
	if len(convIn) != 4 || len(convOut) != 4 || len(context) != 2 || len(projIn) == 0 {
		return unet.Config{}, fmt.Errorf("no SD 1.x UNet under %s (conv_in, conv_out or mid-block transformer missing)", unetPrefix)
	}

	// Each level but the last ends in a downsampler of its own; there are
	// n*(L+1) input blocks, counting conv_in.
	inputs := blockCount(u.Keys(), "input_blocks.")
	n := 1
	for b := range inputs {
		if has(fmt.Sprintf("input_blocks.%d.0.op.weight", b)) {
			n++
		}
	}
	L := inputs/n - 1
	if L < 1 || inputs != n*(L+1) || blockCount(u.Keys(), "output_blocks.") != inputs {
		return unet.Config{}, fmt.Errorf("%d input blocks do not make %d levels of equal depth", inputs, n)
	}

	c := unet.Config{
		SampleSize:           64,
		InChannels:           convIn[1],
		OutChannels:          convOut[0],
		ConvInKernel:         convIn[2],
		ConvOutKernel:        convOut[2],
		FlipSinToCos:         true,
		LayersPerBlock:       L,
		DownsamplePadding:    1,
		MidBlockScaleFactor:  1,
		MidBlockType:         "UNetMidBlock2DCrossAttn",
		ActFn:                "silu",
		NormNumGroups:        32,
		NormEps:              1e-5,
		CrossAttentionDim:    context[1],
		UseLinearProjection:  len(projIn) == 2,
		ResnetTimeScaleShift: "default",
		TimeEmbeddingType:    "positional",
		AttentionType:        "default", // an original SD file has no GLIGEN layers
		// Numbers as encoding/json gives them, which Check expects.
		AttentionHeadDim:          float64(heads),
		TransformerLayersPerBlock: float64(blockCount(u.Keys(), "middle_block.1.transformer_blocks.")),
	}
	for i := range n {
		first := i*(L+1) + 1 // the level's first resnet
		width := shape(fmt.Sprintf("input_blocks.%d.0.out_layers.3.weight", first))
		if len(width) == 0 {
			return unet.Config{}, fmt.Errorf("level %d: no resnet at input_blocks.%d", i, first)
		}
		c.BlockOutChannels = append(c.BlockOutChannels, width[0])
		down, up := "DownBlock2D", "UpBlock2D"
		if has(fmt.Sprintf("input_blocks.%d.1.proj_in.weight", first)) {
			down = "CrossAttnDownBlock2D"
		}
		if has(fmt.Sprintf("output_blocks.%d.1.proj_in.weight", i*(L+1))) {
			up = "CrossAttnUpBlock2D"
		}
		c.DownBlockTypes = append(c.DownBlockTypes, down)
		c.UpBlockTypes = append(c.UpBlockTypes, up)
	}
	if err := c.Check(); err != nil {
		return unet.Config{}, fmt.Errorf("inferred unet config: %w", err)
	}
	return c, nil
}

// InferVAELayout reads the autoencoder's levels and layers per block from
// how the encoder's blocks are numbered (src is the file as stored).
func InferVAELayout(src nn.Source) (levels, layersPerBlock int, err error) {
	keys := nn.WithPrefix(src, vaePrefix).Keys()
	levels = blockCount(keys, "encoder.down.")
	layersPerBlock = blockCount(keys, "encoder.down.0.block.")
	if levels == 0 || layersPerBlock == 0 {
		return 0, 0, fmt.Errorf("no autoencoder under %s (encoder.down.0.block.0 missing)", vaePrefix)
	}
	return levels, layersPerBlock, nil
}

// blockCount is one more than the largest index N of the keys prefix+"N.*":
// the length of the module list at prefix.
func blockCount(keys []string, prefix string) int {
	count := 0
	for _, k := range keys {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		index, _, _ := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(index); err == nil && i+1 > count {
			count = i + 1
		}
	}
	return count
}
