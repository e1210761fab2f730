// Package sd reads Stable Diffusion checkpoints that hold the whole model in
// one file, presenting them under diffusers' names so that the unet, vae and
// clip modules load them unchanged.
package sd

import (
	"fmt"
	"sort"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/nn"
	"github.com/lcpdiff/lcpdiff/internal/model/unet"
	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// An original checkpoint stores its three models under these prefixes.
// Everything else in it (alphas_cumprod and the other schedule buffers,
// model_ema.*) is training state that inference never reads.
const (
	unetPrefix = "model.diffusion_model."
	vaePrefix  = "first_stage_model."
	textPrefix = "cond_stage_model.transformer."
)

// positionIDs is a buffer, not a weight: transformers before 4.31 saved it
// with CLIP, so the real SD 1.5 file has it and the CLIP module recomputes it.
const positionIDs = "text_model.embeddings.position_ids"

// SingleFile is an original (CompVis/LDM layout) single-file checkpoint,
// such as v1-5-pruned-emaonly.safetensors, opened as three sources keyed by
// diffusers' names: UNet as unet/diffusion_pytorch_model.safetensors, VAE as
// vae/diffusion_pytorch_model.safetensors, Text as text_encoder/model.safetensors.
type SingleFile struct {
	Path            string
	UNet, VAE, Text nn.Source
	files           *nn.Files
}

// OpenSingleFile maps the checkpoint at path. Which diffusers key each
// stored key becomes depends on the layout (the levels and layers per block
// of the UNet and the VAE, and which UNet levels carry attention), so the
// caller passes the models' configuration: InferUNetConfig and
// InferVAELayout read it from the file itself. A tensor of the three models
// that the layout leaves unnamed is an error, as silently dropping a weight
// would load a wrong model.
func OpenSingleFile(path string, u unet.Config, vaeLevels, vaeLayersPerBlock int) (*SingleFile, error) {
	files, err := nn.OpenFiles(path)
	if err != nil {
		return nil, err // names path already
	}
	unetNames, unknownUNet := diffusersNames(files.Keys(), unetPrefix, unetModules(u))
	vaeNames, unknownVAE := diffusersNames(files.Keys(), vaePrefix, vaeModules(vaeLevels, vaeLayersPerBlock))
	textNames, unknownText := textEncoderNames(files.Keys())
	unknown := append(append(unknownUNet, unknownVAE...), unknownText...)
	switch {
	case len(unetNames) == 0:
		err = fmt.Errorf("no %s* tensors: not an original Stable Diffusion checkpoint", unetPrefix)
	case len(unknown) > 0:
		err = fmt.Errorf("%d tensors do not fit the configured layout (%s)", len(unknown), firstFew(unknown, 3))
	}
	if err != nil {
		files.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &SingleFile{
		Path:  path,
		UNet:  nn.Rename(files, unetNames),
		VAE:   linearFromConv{nn.Rename(files, vaeNames), vaeAttentionLinears()},
		Text:  nn.Rename(files, textNames),
		files: files,
	}, nil
}

// Close drops the file's own references; loaded tensors stay valid.
func (s *SingleFile) Close() { s.files.Close() }

// module is one diffusers module and the prefix the original layout stores
// it under.
type module struct {
	diffusers, ldm string
	// params maps the diffusers names of the module's parameters (before
	// .weight or .bias) to the original ones; nil when the two agree, as for
	// a plain convolution or norm and for the whole spatial transformer.
	params map[string]string
}

// How parameters are named inside the modules whose names differ,
// diffusers -> original.
var (
	// openaimodel's ResBlock keeps its layers in Sequentials.
	unetResnet = map[string]string{
		"norm1":         "in_layers.0",
		"conv1":         "in_layers.2",
		"time_emb_proj": "emb_layers.1",
		"norm2":         "out_layers.0",
		"conv2":         "out_layers.3",
		"conv_shortcut": "skip_connection",
	}
	// The autoencoder's ResnetBlock differs only in its shortcut.
	vaeResnet = map[string]string{
		"norm1":         "norm1",
		"conv1":         "conv1",
		"norm2":         "norm2",
		"conv2":         "conv2",
		"conv_shortcut": "nin_shortcut",
	}
	// AttnBlock; its projections are 1x1 convolutions (see linearFromConv).
	vaeAttention = map[string]string{
		"group_norm": "norm",
		"to_q":       "q",
		"to_k":       "k",
		"to_v":       "v",
		"to_out.0":   "proj_out",
	}
)

// unetModules lays out the UNet as diffusers v0.27.2's
// convert_diffusers_to_original_stable_diffusion.py does, for any number of
// levels n and layers per block L. openaimodel numbers its blocks in one
// sequence per direction where diffusers groups them by level: a down level
// is L input blocks (a resnet, then its transformer where the level has
// attention) and a downsampler in a block of its own; an up level is L+1
// output blocks, the last of which also holds the upsampler.
func unetModules(c unet.Config) []module {
	n, L := len(c.BlockOutChannels), c.LayersPerBlock
	ms := []module{
		{"time_embedding.linear_1", "time_embed.0", nil},
		{"time_embedding.linear_2", "time_embed.2", nil},
		{"conv_in", "input_blocks.0.0", nil},
		{"mid_block.resnets.0", "middle_block.0", unetResnet},
		{"mid_block.attentions.0", "middle_block.1", nil},
		{"mid_block.resnets.1", "middle_block.2", unetResnet},
		{"conv_norm_out", "out.0", nil},
		{"conv_out", "out.2", nil},
	}
	for i := range n {
		down := fmt.Sprintf("down_blocks.%d", i)
		for j := range L {
			block := i*(L+1) + j + 1 // after conv_in, input_blocks.0
			ms = append(ms, module{fmt.Sprintf("%s.resnets.%d", down, j), fmt.Sprintf("input_blocks.%d.0", block), unetResnet})
			if hasAttention(c.DownBlockTypes[i]) {
				ms = append(ms, module{fmt.Sprintf("%s.attentions.%d", down, j), fmt.Sprintf("input_blocks.%d.1", block), nil})
			}
		}
		if i < n-1 {
			ms = append(ms, module{down + ".downsamplers.0.conv", fmt.Sprintf("input_blocks.%d.0.op", (i+1)*(L+1)), nil})
		}

		up := fmt.Sprintf("up_blocks.%d", i)
		cross := hasAttention(c.UpBlockTypes[i])
		for j := range L + 1 {
			block := i*(L+1) + j
			ms = append(ms, module{fmt.Sprintf("%s.resnets.%d", up, j), fmt.Sprintf("output_blocks.%d.0", block), unetResnet})
			if cross {
				ms = append(ms, module{fmt.Sprintf("%s.attentions.%d", up, j), fmt.Sprintf("output_blocks.%d.1", block), nil})
			}
		}
		if i < n-1 {
			slot := 1 // after the resnet, or after its transformer too
			if cross {
				slot = 2
			}
			ms = append(ms, module{up + ".upsamplers.0.conv", fmt.Sprintf("output_blocks.%d.%d.conv", i*(L+1)+L, slot), nil})
		}
	}
	return ms
}

func hasAttention(blockType string) bool { return strings.HasPrefix(blockType, "CrossAttn") }

// vaeModules lays out the autoencoder for n levels and L layers per block
// (the decoder has L+1). The original decoder numbers its levels from the
// deepest, as the encoder does, where diffusers numbers them in the order
// they run: up_blocks.i is up.(n-1-i).
func vaeModules(n, L int) []module {
	ms := []module{
		{"quant_conv", "quant_conv", nil},
		{"post_quant_conv", "post_quant_conv", nil},
	}
	for _, half := range []string{"encoder", "decoder"} {
		ms = append(ms,
			module{half + ".conv_in", half + ".conv_in", nil},
			module{half + ".mid_block.resnets.0", half + ".mid.block_1", vaeResnet},
			module{half + ".mid_block.attentions.0", half + ".mid.attn_1", vaeAttention},
			module{half + ".mid_block.resnets.1", half + ".mid.block_2", vaeResnet},
			module{half + ".conv_norm_out", half + ".norm_out", nil},
			module{half + ".conv_out", half + ".conv_out", nil},
		)
	}
	for i := range n {
		for j := range L {
			ms = append(ms, module{fmt.Sprintf("encoder.down_blocks.%d.resnets.%d", i, j), fmt.Sprintf("encoder.down.%d.block.%d", i, j), vaeResnet})
		}
		if i < n-1 {
			ms = append(ms, module{fmt.Sprintf("encoder.down_blocks.%d.downsamplers.0.conv", i), fmt.Sprintf("encoder.down.%d.downsample.conv", i), nil})
		}
		level := n - 1 - i
		for j := range L + 1 {
			ms = append(ms, module{fmt.Sprintf("decoder.up_blocks.%d.resnets.%d", i, j), fmt.Sprintf("decoder.up.%d.block.%d", level, j), vaeResnet})
		}
		if i < n-1 {
			ms = append(ms, module{fmt.Sprintf("decoder.up_blocks.%d.upsamplers.0.conv", i), fmt.Sprintf("decoder.up.%d.upsample.conv", level), nil})
		}
	}
	return ms
}

// diffusersNames maps the diffusers key of every stored tensor under prefix
// that modules name to its stored key; unknown lists the tensors under
// prefix that no module holds.
func diffusersNames(stored []string, prefix string, modules []module) (names map[string]string, unknown []string) {
	byLDM := make(map[string]module, len(modules))
	for _, m := range modules {
		byLDM[m.ldm] = m
	}
	names = map[string]string{}
	for _, key := range stored {
		rest, ok := strings.CutPrefix(key, prefix)
		if !ok {
			continue
		}
		if name, ok := diffusersName(byLDM, rest); ok {
			names[name] = key
		} else {
			unknown = append(unknown, key)
		}
	}
	return names, unknown
}

// diffusersName renames one key (without the model's prefix): the longest
// module prefix of the key is its module, the rest a parameter in it.
func diffusersName(byLDM map[string]module, key string) (string, bool) {
	for end := strings.LastIndexByte(key, '.'); end > 0; end = strings.LastIndexByte(key[:end], '.') {
		m, ok := byLDM[key[:end]]
		if !ok {
			continue
		}
		param := key[end+1:]
		if m.params == nil {
			return m.diffusers + "." + param, true
		}
		dot := strings.LastIndexByte(param, '.') // before weight or bias
		if dot < 0 {
			return "", false
		}
		for name, ldm := range m.params {
			if ldm == param[:dot] {
				return m.diffusers + "." + name + param[dot:], true
			}
		}
		return "", false
	}
	return "", false
}

// textEncoderNames maps the CLIP text model's keys, which the original file
// stores with transformers' own names under textPrefix.
func textEncoderNames(stored []string) (names map[string]string, unknown []string) {
	names = map[string]string{}
	for _, key := range stored {
		if rest, ok := strings.CutPrefix(key, textPrefix); ok && rest != positionIDs {
			names[rest] = key
		}
	}
	// Anything else under cond_stage_model is another text encoder (SD 2's
	// OpenCLIP, for one), which the CLIP module cannot load.
	for _, key := range stored {
		if strings.HasPrefix(key, "cond_stage_model.") && !strings.HasPrefix(key, textPrefix) {
			unknown = append(unknown, key)
		}
	}
	return names, unknown
}

// vaeAttentionLinears are the diffusers keys of the VAE's mid-block
// attention projections.
func vaeAttentionLinears() map[string]bool {
	keys := map[string]bool{}
	for _, half := range []string{"encoder", "decoder"} {
		for _, proj := range []string{"to_q", "to_k", "to_v", "to_out.0"} {
			keys[half+".mid_block.attentions.0."+proj+".weight"] = true
		}
	}
	return keys
}

// linearFromConv presents the 1x1-convolution kernels [out, in, 1, 1] stored
// under keys as the Linear weights [out, in] diffusers' modules ask for: the
// original VAE attention projects with convolutions. A key stored as [out,
// in] already (some converted files) passes unchanged.
type linearFromConv struct {
	nn.Source
	keys map[string]bool
}

func (s linearFromConv) Shape(key string) ([]int64, bool) {
	shape, ok := s.Source.Shape(key)
	if ok && s.keys[key] && is1x1(shape) {
		return shape[:2], true
	}
	return shape, ok
}

func (s linearFromConv) Tensor(key string) (*torch.Tensor, error) {
	t, err := s.Source.Tensor(key)
	if err != nil || !s.keys[key] {
		return t, err
	}
	shape := t.Shape()
	if !is1x1(shape) {
		return t, nil
	}
	defer t.Free() // the view keeps the storage alive
	var linear *torch.Tensor
	if err := torch.Try(func() { linear = t.View(shape[0], shape[1]) }); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return linear, nil
}

func is1x1(shape []int64) bool { return len(shape) == 4 && shape[2] == 1 && shape[3] == 1 }

func firstFew(keys []string, n int) string {
	sort.Strings(keys)
	if len(keys) <= n {
		return strings.Join(keys, ", ")
	}
	return strings.Join(keys[:n], ", ") + ", ..."
}
