package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

var modelExportFlags = []flagSpec{
	{"model", "m", "", "diffusers model folder the checkpoint was trained on"},
	{"checkpoint", "", "", "training checkpoint folder (adapter.safetensors, and unet.safetensors if the UNet trained)"},
	{"dtype", "", "fp16", "weights' precision in the export: fp16 (half the size) or fp32"},
	{"out", "o", "", "folder to write: the model with the checkpoint's UNet, plus adapter.safetensors (replaced if it exists)"},
}

func newModelExportCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write a trained model as one folder: the diffusers model with a checkpoint's UNet and adapter",
		Long: `Write a trained model as one folder: every part of the diffusers model
folder, the UNet's weights taken from the checkpoint when it trained them,
and the checkpoint's adapter as adapter.safetensors, every weight converted
to --dtype (metadata kept). generate reads such a folder with -m DIR
--adapter DIR/adapter.safetensors --image-encoder DIR/image_encoder; the
built-in toy-world model is one (scripts/train-toyworld.sh).`,
		Example: "  lcpdiff model export -m runs/toyworld/model-base --checkpoint runs/toyworld/lcp/checkpoints/step-00006000 --out toymodel",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return modelExport(v, cmd.OutOrStdout())
		},
	}
	addFlags(cmd, false, modelExportFlags)
	return cmd
}

func modelExport(v *viper.Viper, stdout io.Writer) error {
	model, ckpt, out := v.GetString("model"), v.GetString("checkpoint"), v.GetString("out")
	switch {
	case model == "":
		return errors.New("-m/--model: give the model folder the checkpoint was trained on")
	case ckpt == "":
		return errors.New("--checkpoint: give the training checkpoint folder")
	case out == "":
		return errors.New("--out: give the folder to write")
	}
	dtype := map[string]torch.DType{"fp16": torch.Float16, "fp32": torch.Float32}[v.GetString("dtype")]
	if v.GetString("dtype") != "fp16" && v.GetString("dtype") != "fp32" {
		return fmt.Errorf("--dtype %q: want fp16 or fp32", v.GetString("dtype"))
	}
	for _, p := range []string{filepath.Join(model, "model_index.json"), filepath.Join(ckpt, "adapter.safetensors")} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w", p, unwrapPathError(err))
		}
	}
	out = filepath.Clean(out)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	unetWeights := filepath.Join(ckpt, "unet.safetensors")
	if _, err := os.Stat(unetWeights); err != nil {
		unetWeights = "" // the UNet did not train: the model's own
	}
	err = filepath.WalkDir(model, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(model, path)
		dst := filepath.Join(tmp, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case filepath.Dir(rel) == "." && rel != "model_index.json":
			return nil // a training run's notes beside the parts (logs, sheets)
		case rel == filepath.Join("unet", "diffusion_pytorch_model.safetensors") && unetWeights != "":
			return convertSafetensors(unetWeights, dst, dtype)
		case strings.HasSuffix(path, ".safetensors"):
			return convertSafetensors(path, dst, dtype)
		default:
			return copyFile(path, dst)
		}
	})
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := convertSafetensors(filepath.Join(ckpt, "adapter.safetensors"), filepath.Join(tmp, "adapter.safetensors"), dtype); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	// Swap the new folder in; the old one goes only once the new is there.
	old := tmp + ".old"
	if err := os.Rename(out, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("export: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Rename(old, out)
		return fmt.Errorf("export: %w", err)
	}
	os.RemoveAll(old)
	fmt.Fprintf(stdout, "wrote %s\n", out)
	return nil
}

// convertSafetensors writes src's tensors as dtype (floating ones only)
// with its metadata to dst.
func convertSafetensors(src, dst string, dtype torch.DType) (err error) {
	f, err := torch.OpenSafetensors(src)
	if err != nil {
		return err
	}
	defer f.Close()
	s := torch.NewScope()
	defer s.Close()
	defer torch.Recover(&err)
	tensors := map[string]*torch.Tensor{}
	for _, info := range f.Header.Tensors {
		t, err := f.Tensor(info.Name)
		if err != nil {
			return err
		}
		if t.DType().IsFloat() {
			t = t.To(dtype)
		}
		tensors[info.Name] = t
	}
	return torch.SaveSafetensors(dst, tensors, f.Header.Metadata)
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
