package toymodel

import (
	"encoding/json"
	"fmt"
	"maps"
)

// The library versions whose file layouts the folder follows (those of
// the golden reference models).
const (
	diffusersVersion    = "0.27.2"
	transformersVersion = "4.39.0.dev0"
)

// withKeys is v's JSON fields as a map, with extra keys added: a
// config.json as save_pretrained writes it, every key present, from the
// project's config type plus the keys that type does not read.
func withKeys(v any, extra map[string]any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	maps.Copy(m, extra)
	return m, nil
}

// modelIndex is model_index.json: a StableDiffusionPipeline with an image
// encoder (diffusers loads it for IP-Adapter) and no safety checker.
func modelIndex() map[string]any {
	none := []any{nil, nil}
	return map[string]any{
		"_class_name":             "StableDiffusionPipeline",
		"_diffusers_version":      diffusersVersion,
		"feature_extractor":       none,
		"image_encoder":           []string{"transformers", "CLIPVisionModelWithProjection"},
		"requires_safety_checker": false,
		"safety_checker":          none,
		"scheduler":               []string{"diffusers", "DDIMScheduler"},
		"text_encoder":            []string{"transformers", "CLIPTextModel"},
		"tokenizer":               []string{"transformers", "CLIPTokenizer"},
		"unet":                    []string{"diffusers", "UNet2DConditionModel"},
		"vae":                     []string{"diffusers", "AutoencoderKL"},
	}
}

// schedulerConfig is scheduler/scheduler_config.json of a DDIMScheduler.
func (s Spec) schedulerConfig() (map[string]any, error) {
	return withKeys(s.Scheduler, map[string]any{
		"_class_name": "DDIMScheduler", "_diffusers_version": diffusersVersion,
		"dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0,
	})
}

// unetConfig is unet/config.json: the keys unet.Config reads, and the
// diffusers keys for features this model does not use, at their defaults.
func (s Spec) unetConfig() (map[string]any, error) {
	return withKeys(s.UNet, map[string]any{
		"_class_name": "UNet2DConditionModel", "_diffusers_version": diffusersVersion,
		"addition_embed_type_num_heads": 64, "addition_time_embed_dim": nil,
		"class_embeddings_concat": false, "cross_attention_norm": nil, "dropout": 0.0,
		"encoder_hid_dim_type": nil, "mid_block_only_cross_attention": nil, "num_class_embeds": nil,
		"projection_class_embeddings_input_dim": nil, "resnet_out_scale_factor": 1.0,
		"resnet_skip_time_act": false, "reverse_transformer_layers_per_block": nil,
		"time_embedding_act_fn": nil, "time_embedding_dim": nil, "timestep_post_act": nil,
	})
}

// vaeConfig is vae/config.json.
func (s Spec) vaeConfig() (map[string]any, error) {
	return withKeys(s.VAE, map[string]any{
		"_class_name": "AutoencoderKL", "_diffusers_version": diffusersVersion,
		"latents_mean": nil, "latents_std": nil,
	})
}

// textEncoderConfig is text_encoder/config.json of a CLIPTextModel whose
// vocabulary is v.
func (s Spec) textEncoderConfig(v *Vocabulary) (map[string]any, error) {
	c := s.TextEncoder.TextConfig
	c.VocabSize, c.EOSTokenID = int64(len(v.Tokens)), v.EOS()
	return withKeys(c, map[string]any{
		"architectures": []string{"CLIPTextModel"}, "model_type": "clip_text_model",
		"projection_dim": s.TextEncoder.ProjectionDim,
		"bos_token_id":   v.BOS(), "pad_token_id": v.EOS(), // CLIP pads with its end token
		"attention_dropout": 0.0, "dropout": 0.0,
		"initializer_factor": clipInitializerFactor, "initializer_range": clipInitializerRange,
		"torch_dtype": "float32", "transformers_version": transformersVersion,
	})
}

// imageEncoderConfig is image_encoder/config.json of a
// CLIPVisionModelWithProjection.
func (s Spec) imageEncoderConfig() (map[string]any, error) {
	return withKeys(s.ImageEncoder, map[string]any{
		"architectures": []string{"CLIPVisionModelWithProjection"}, "model_type": "clip_vision_model",
		"attention_dropout": 0.0, "dropout": 0.0,
		"initializer_factor": clipInitializerFactor, "initializer_range": clipInitializerRange,
		"torch_dtype": "float32", "transformers_version": transformersVersion,
	})
}

// preprocessorConfig is image_encoder/preprocessor_config.json: a
// CLIPImageProcessor that makes the encoder's input size (bicubic resize
// of the shortest side, centre crop, OpenAI CLIP's mean and std).
func (s Spec) preprocessorConfig() map[string]any {
	side := s.ImageEncoder.ImageSize
	return map[string]any{
		"crop_size":      map[string]any{"height": side, "width": side},
		"do_center_crop": true, "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
		"image_mean":           []float64{0.48145466, 0.4578275, 0.40821073},
		"image_std":            []float64{0.26862954, 0.26130258, 0.27577711},
		"image_processor_type": "CLIPImageProcessor",
		"resample":             3, // bicubic
		"rescale_factor":       1.0 / 255,
		"size":                 map[string]any{"shortest_edge": side},
	}
}

// mustJSON is marshalJSON for values made here, which always encode.
func mustJSON(v any) []byte {
	b, err := marshalJSON(v)
	if err != nil {
		panic(fmt.Sprintf("toymodel: %v", err))
	}
	return b
}
