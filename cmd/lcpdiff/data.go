package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/data"
)

func newDataCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Make training data",
	}
	cmd.AddCommand(newToyWorldCommand(v))
	return cmd
}

var toyDefaults = data.DefaultToyWorldConfig()

var toyWorldFlags = []flagSpec{
	{"out", "o", "", "folder to write into (must be empty or not exist)"},
	{"seed", "s", 0, "random seed: the same seed writes the same files, byte for byte"},
	{"clips", "", toyDefaults.Clips, "training clips; the test set gets a quarter as many more"},
	{"images", "", toyDefaults.Images, "training images; the test set gets a quarter as many more"},
	{"size", "", toyDefaults.Size, "frame side in pixels"},
	{"frames", "", toyDefaults.Frames, "frames per clip"},
	{"recolour", "", toyDefaults.Recolour, "share of training subjects drawn in a random two-colour palette, so that every colour is seen in both roles (test subjects keep their identity's)"},
	{"hold-out", "", toyDefaults.HoldOut, "what the held-out (zero-shot) identities keep out of training: pair (their shape-and-texture pairs never appear) or palette (those pairs appear, always in other palettes; the test set is the same)"},
}

func newToyWorldCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "toyworld",
		Short: "Write a synthetic dataset of textured shapes in the training manifest format",
		Long: `Write a synthetic dataset of textured shapes in the training manifest format:
clips in which 1-3 subjects move, turn and change size, and still images, on
grounds the captions name, with exact masks (PNG) and boxes. Some identities
and layouts are held out of train.jsonl and make up test.jsonl;
identities.json lists every identity.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return toyWorld(v, cmd.OutOrStdout())
		},
	}
	addFlags(cmd, false, toyWorldFlags)
	return cmd
}

func toyWorld(v *viper.Viper, out io.Writer) error {
	dir := v.GetString("out")
	if dir == "" {
		return errors.New("--out: give the folder to write into")
	}
	seed := v.GetInt64("seed")
	if seed < 0 {
		return fmt.Errorf("--seed %d: must be 0 or more", seed)
	}
	cfg := data.ToyWorldConfig{
		Seed:     uint64(seed),
		Clips:    v.GetInt("clips"),
		Images:   v.GetInt("images"),
		Size:     v.GetInt("size"),
		Frames:   v.GetInt("frames"),
		Recolour: v.GetFloat64("recolour"),
		HoldOut:  v.GetString("hold-out"),
	}
	start := time.Now()
	sum, err := data.WriteToyWorld(dir, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %d training and %d test records (%d identities, %d held out) in %.1fs:\n",
		sum.Train, sum.Test, sum.Identities, sum.HeldOut, time.Since(start).Seconds())
	for _, name := range []string{"train.jsonl", "test.jsonl", "identities.json"} {
		fmt.Fprintf(out, "  %s\n", filepath.Join(dir, name))
	}
	return nil
}
